"""Clients for the ports protocol v0: :class:`PortsClient` (blocking) and
:class:`AsyncPortsClient` (asyncio).

::

    from copperline.host.client import PortsClient
    with PortsClient("/run/copperline/copperd.sock") as c:
        prog = c.request("load", program={"version": 1, "program": [...]})["id"]
        c.request("start", id=prog)
        c.subscribe("irq", prog=prog)
        for ev in c.events(count=3, timeout=2.0):    # at most 3 events, at most 2 s
            print(ev)

    async with AsyncPortsClient(path) as c:
        print(await c.request("ping"))
        async for ev in c.events(count=3): ...

Requests use the args form with auto-generated integer ids, so the request id and a
program id never mix. ``request`` returns the response's ``result`` and raises
:class:`PortsError` (``code``, ``message``) on ``{"ok":false}``.
"""

from __future__ import annotations

import array
import asyncio
import collections
import itertools
import json
import os
import socket
import time
from typing import Any, AsyncIterator, Iterator, Sequence

from copperline.host.ports.protocol import PortsError
from copperline.host.ports.sockets import client_socket_path, to_address

__all__ = ["PortsClient", "AsyncPortsClient", "PortsError", "PortsConnectionError"]

_READ_LIMIT = 16 * 1024 * 1024


class PortsConnectionError(ConnectionError):
    """The daemon cannot be reached, or closed the connection."""


def _raise_for(resp: dict) -> dict:
    if resp.get("ok") is True:
        return resp.get("result", {})
    err = resp.get("error") or {}
    e = PortsError(err.get("code", "INTERNAL"), err.get("message", "error response without message"),
                   field=err.get("field"), req_id=resp.get("id"))
    e.response = resp
    raise e


def _connect(path: str | None, timeout: float | None) -> socket.socket:
    path = path or client_socket_path()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        s.connect(to_address(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        s.close()
        raise PortsConnectionError(f"{path}: cannot connect ({exc.strerror}); is copperd running?") from None
    except OSError as exc:
        s.close()
        raise PortsConnectionError(f"{path}: cannot connect: {exc}") from None
    return s


def _surface_names(path: str) -> list[str]:
    """The surfaces a program file binds (none when it cannot be read: the daemon reports
    what is wrong with it)."""
    from copperline.firmware.image import Image, ImageError
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] == b"COPR":
            return list(Image.from_bytes(data, path).surfaces)
        doc = json.loads(data)
        return sorted({op["surface"] for op in doc.get("program", ())
                       if isinstance(op, dict) and op.get("op") == "BIND_LAYER"
                       and isinstance(op.get("surface"), str)})
    except (OSError, ValueError, ImageError, AttributeError):
        return []


def send_with_fds(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    """Send ``data`` with ``fds`` attached (SCM_RIGHTS) to its first byte."""
    if not fds:
        sock.sendall(data)
        return
    n = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    if n < len(data):
        sock.sendall(data[n:])


class PortsClient:
    """A blocking client. Not thread-safe: use one per thread.

    ``timeout`` bounds every wait for a response (seconds; None = forever). ``caps`` is
    sent with every request.
    """

    def __init__(self, path: str | None = None, *, timeout: float | None = 10.0,
                 caps: str | None = None) -> None:
        self.path = path or client_socket_path()
        self.timeout = timeout
        self.caps = caps
        self.sock = _connect(self.path, timeout)
        self._buf = bytearray()
        self._ids = itertools.count(1)
        self._events: collections.deque[dict] = collections.deque()
        self._responses: dict[Any, dict] = {}
        self._closed = False

    # -- plumbing ----------------------------------------------------------------------------
    def send(self, msg: dict, fds: Sequence[int] = ()) -> None:
        """Send one raw message (a dict) without waiting."""
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        try:
            send_with_fds(self.sock, data, fds)
        except OSError as exc:
            raise PortsConnectionError(f"{self.path}: send failed: {exc}") from None

    def _read_line(self, deadline: float | None) -> bytes:
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[:nl + 1]
                return line
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out waiting for the daemon")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                chunk = self.sock.recv(262144)
            except socket.timeout:
                raise TimeoutError("timed out waiting for the daemon") from None
            except OSError as exc:
                raise PortsConnectionError(f"{self.path}: receive failed: {exc}") from None
            if not chunk:
                raise PortsConnectionError(f"{self.path}: the daemon closed the connection")
            if len(self._buf) + len(chunk) > _READ_LIMIT:
                raise PortsConnectionError(f"{self.path}: message longer than {_READ_LIMIT} bytes")
            self._buf += chunk

    def read_message(self, timeout: float | None = None) -> dict:
        """The next message (response or event) from the socket."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return json.loads(self._read_line(deadline))

    def _stash(self, msg: dict) -> None:
        if "event" in msg and "ok" not in msg:
            self._events.append(msg)
        else:
            self._responses[msg.get("id")] = msg

    def call(self, msg: dict, fds: Sequence[int] = (), timeout: float | None = ...) -> dict:
        """Send ``msg`` (must carry a unique ``id``) and return its raw response dict."""
        timeout = self.timeout if timeout is ... else timeout
        rid = msg.get("id")
        self.send(msg, fds)
        deadline = None if timeout is None else time.monotonic() + timeout
        while rid not in self._responses:
            self._stash(json.loads(self._read_line(deadline)))
        return self._responses.pop(rid)

    # -- API ---------------------------------------------------------------------------------
    def request(self, cmd: str, *, fds: Sequence[int] = (), timeout: float | None = ...,
                **args) -> dict:
        """Run one command; returns its ``result``; raises :class:`PortsError`."""
        msg = {"id": next(self._ids), "cmd": cmd, "args": args}
        if self.caps is not None:
            msg["caps"] = self.caps
        return _raise_for(self.call(msg, fds, timeout))

    def ping(self) -> dict:
        return self.request("ping")

    def load_file(self, path: str) -> int:
        """Load a program JSON or ``.cop`` file by passing its descriptor (SCM_RIGHTS),
        with the descriptors of the surface files it binds that exist (relative paths from
        the program's directory): the daemon opens no path itself."""
        from copperline.host.surfaces import surface_path
        fds = [os.open(path, os.O_RDONLY | os.O_CLOEXEC)]
        try:
            surfaces = {}
            for name in _surface_names(path):
                try:
                    fds.append(os.open(surface_path(name, os.path.dirname(os.path.abspath(path))),
                                       os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK))
                except OSError:
                    continue            # (the daemon says so if its backend needs it)
                surfaces[name] = len(fds) - 1
            extra = {"surfaces": surfaces} if surfaces else {}
            return self.request("load", fds=fds, fd_index=0, source=os.path.basename(path),
                                **extra)["id"]
        finally:
            for fd in fds:
                os.close(fd)

    def subscribe(self, *events: str, **filters) -> int:
        """Subscribe (default: all events); returns the subscription id."""
        return self.request("subscribe", events=list(events) or ["all"], **filters)["sub"]

    def events(self, timeout: float | None = None, *, count: int | None = None,
               idle: float | None = None) -> Iterator[dict]:
        """Events as they arrive. Ends after ``count`` events, ``timeout`` seconds in total
        (from this call) or ``idle`` seconds without an event, whichever comes first; each
        None = no such limit. (A busy program is never idle: bound a stream with
        ``timeout`` or ``count``.)"""
        deadline = None if timeout is None else time.monotonic() + timeout
        n = 0
        while count is None or n < count:
            if self._events:
                n += 1
                yield self._events.popleft()
                continue
            wait = deadline
            if idle is not None:
                wait = min(time.monotonic() + idle, wait or float("inf"))
            try:
                msg = json.loads(self._read_line(wait))
            except TimeoutError:
                return
            self._stash(msg)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()

    def __enter__(self) -> "PortsClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncPortsClient:
    """An asyncio client: concurrent requests on one connection, events as an async iterator.

    Use ``async with AsyncPortsClient(path) as c`` or ``c = await AsyncPortsClient.open(path)``.
    """

    def __init__(self, path: str | None = None, *, timeout: float | None = 10.0,
                 caps: str | None = None) -> None:
        self.path = path or client_socket_path()
        self.timeout = timeout
        self.caps = caps
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future] = {}
        self._events: asyncio.Queue = asyncio.Queue()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._error: Exception | None = None

    @classmethod
    async def open(cls, path: str | None = None, **kw) -> "AsyncPortsClient":
        c = cls(path, **kw)
        await c.connect()
        return c

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(to_address(self.path), limit=_READ_LIMIT), self.timeout)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise PortsConnectionError(f"{self.path}: cannot connect ({exc.strerror}); "
                                       "is copperd running?") from None
        except OSError as exc:
            raise PortsConnectionError(f"{self.path}: cannot connect: {exc}") from None
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    raise PortsConnectionError(f"{self.path}: the daemon closed the connection")
                msg = json.loads(line)
                if "event" in msg and "ok" not in msg:
                    self._events.put_nowait(msg)
                else:
                    fut = self._pending.pop(msg.get("id"), None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except asyncio.CancelledError:
            self._error = PortsConnectionError(f"{self.path}: client closed")
        except Exception as exc:   # connection lost or garbage: fail everyone waiting
            self._error = exc if isinstance(exc, PortsConnectionError) else \
                PortsConnectionError(f"{self.path}: {exc}")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(self._error)
        self._pending.clear()
        self._events.put_nowait(None)

    async def call(self, msg: dict, timeout: float | None = ...) -> dict:
        """Send ``msg`` (with a unique ``id``) and await its raw response dict."""
        if self._error is not None:
            raise self._error
        timeout = self.timeout if timeout is ... else timeout
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg["id"]] = fut
        self._writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        try:
            await self._writer.drain()
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(msg["id"], None)

    async def request(self, cmd: str, *, timeout: float | None = ..., **args) -> dict:
        """Run one command; returns its ``result``; raises :class:`PortsError`."""
        msg = {"id": next(self._ids), "cmd": cmd, "args": args}
        if self.caps is not None:
            msg["caps"] = self.caps
        return _raise_for(await self.call(msg, timeout))

    async def subscribe(self, *events: str, **filters) -> int:
        return (await self.request("subscribe", events=list(events) or ["all"], **filters))["sub"]

    async def next_event(self, timeout: float | None = None) -> dict:
        """The next event; raises TimeoutError, or PortsConnectionError once closed."""
        ev = await asyncio.wait_for(self._events.get(), timeout)
        if ev is None:
            self._events.put_nowait(None)   # keep telling later callers
            raise self._error or PortsConnectionError("closed")
        return ev

    async def events(self, timeout: float | None = None, *,
                     count: int | None = None) -> AsyncIterator[dict]:
        """Events until ``count`` events, ``timeout`` seconds in total (from this call) or
        the connection closes, whichever comes first (None = no such limit)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        n = 0
        while count is None or n < count:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return
            try:
                ev = await self.next_event(left)
            except (PortsConnectionError, asyncio.TimeoutError, TimeoutError):
                return
            n += 1
            yield ev

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> "AsyncPortsClient":
        if self._writer is None:
            await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
