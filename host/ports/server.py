"""The ports server: copperd's commands over a listening Unix socket, on an asyncio loop.

Design (why it looks like this):

- Each client is a non-blocking socket driven by ``loop.add_reader``/``add_writer`` and
  ``recvmsg``: asyncio streams cannot receive SCM_RIGHTS file descriptors, and doing the
  framing ourselves lets the reader stay strictly bounded (a line over 64 KiB is refused
  without buffering the rest).
- One outgoing queue per client, bounded by entry count and bytes. Responses are never
  dropped: when a client stops reading, the server stops reading *its* requests
  (backpressure on the request side). Events beyond the bound are dropped and counted;
  one ``{"event":"dropped","reason":"backpressure","count":N}`` follows once the queue
  drains. Writes are batched (one ``send`` per client per batch of messages).
- Backend events arrive from the backend's thread into one inbox; a single
  ``call_soon_threadsafe`` wakes the loop per batch. Each event is JSON-encoded once and
  the bytes are shared by every subscriber (only the ``"sub":N,`` prefix differs).
"""

from __future__ import annotations

import array
import asyncio
import collections
import json
import logging
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from copperline import __version__
from copperline.host.backend import Backend, BackendError, ProgramState
from copperline.host.ports import protocol as P
from copperline.host.ports.caps import ALLOW_ALL, CapEntry, CapTable
from copperline.host.ports.protocol import PortsError

log = logging.getLogger(__name__)

_RECV_SIZE = 64 * 1024
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_SEND_BATCH = 256 * 1024
TERMINAL_STATES = ("done", "stopped", "faulted")


@dataclass
class ServerConfig:
    """Limits and switches of one server."""
    name: str = "copperd"
    version: str = __version__
    max_clients: int = 64
    max_line: int = P.MAX_LINE
    #: per-client outgoing queue bound: entries and bytes (events beyond it are dropped)
    queue_max_msgs: int = 4096
    queue_max_bytes: int = 1 << 20
    max_subs_per_client: int = 16
    max_fds_per_request: int = 4
    max_file_bytes: int = 1 << 20        # a program/image passed by fd
    max_waits_per_client: int = 64
    inbox_max: int = 32_768              # backend events waiting for the loop (~12 MiB worst case)
    caps: CapTable | None = None
    test_hooks: bool = False


@dataclass
class Subscription:
    sid: int
    conn: "Connection"
    kinds: frozenset | None           # None = all
    tags: frozenset | None = None
    progs: frozenset | None = None
    regs: frozenset | None = None
    cap: CapEntry = ALLOW_ALL
    req_id: Any = None
    prefix: bytes = b""

    def matches(self, ev: dict, kind: str) -> bool:
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.tags is not None and kind == "irq" and ev.get("tag") not in self.tags:
            return False
        if self.progs is not None and "prog" in ev and ev["prog"] not in self.progs:
            return False
        if kind == "reg":
            if self.regs is not None and ev.get("reg") not in self.regs:
                return False
            if self.cap.regs is not None and not self.cap.allows_reg(ev.get("reg", "")):
                return False
        return True


class Connection:
    """One client: bounded reader, request dispatch, bounded batched writer."""

    def __init__(self, server: "PortsServer", sock: socket.socket, cid: int) -> None:
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.cid = cid
        self.rbuf = bytearray()
        self.scan = 0                      # rbuf[:scan] holds no newline
        self.fd_marks: list[tuple[int, list[int]]] = []   # (rbuf offset, fds arrived there)
        self.out: collections.deque[bytes] = collections.deque()
        self.out_bytes = 0
        self.dropped = 0
        self.subs: dict[int, Subscription] = {}
        self.waits: dict[Any, asyncio.Task] = {}      # deferred requests, by request id
        self.blocked: asyncio.Task | None = None       # an in-order request still running
        self.reading = False
        self.writing = False
        self.closed = False
        self.closing = False                          # close once the queue is flushed
        self.eof = False                              # the client half-closed

    # -- reading ----------------------------------------------------------------------------
    def start(self) -> None:
        self._update_reading()

    def _want_read(self) -> bool:
        # Events alone fill the queue up to queue_max_bytes; responses may add as much
        # again before we stop reading this client's requests.
        return (not self.closed and not self.closing and not self.eof and self.blocked is None
                and self.out_bytes < 2 * self.server.config.queue_max_bytes)

    def _update_reading(self) -> None:
        want = self._want_read()
        if want and not self.reading:
            self.loop.add_reader(self.fd, self._on_readable)
            self.reading = True
        elif not want and self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def _on_readable(self) -> None:
        srv = self.server
        try:
            data, anc, flags, _ = self.sock.recvmsg(_RECV_SIZE, srv.anc_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("client %d: read error: %s", self.cid, exc)
            self.close()
            return
        fds = _fds_from(anc) if anc else []
        if flags & _MSG_CTRUNC:
            _close_fds(fds)
            self._fatal("too many file descriptors in one message "
                        f"(at most {srv.config.max_fds_per_request} per request)")
            return
        if not data and not fds:
            self._on_eof()
            return
        if (not self.rbuf and not fds and not self.fd_marks and data.find(b"\n") == len(data) - 1
                and len(data) <= srv.config.max_line + 1):
            # Fast path: exactly one complete line and nothing buffered.
            if len(data) > 1:
                self._handle_line(data[:-1], fds)
        else:
            if fds:
                self.fd_marks.append((len(self.rbuf), fds))
            self.rbuf += data
            self._process()
        self.flush()

    def _on_eof(self) -> None:
        """The client shut down its sending side. Half-close is honoured: while it has
        subscriptions or pending requests it keeps receiving (``printf ... | socat -t 5``)."""
        self.eof = True
        self._update_reading()
        if self.rbuf.strip():
            log.debug("client %d: %d bytes of an unterminated line at EOF", self.cid, len(self.rbuf))
        if not self.subs and not self.waits and self.blocked is None:
            self.closing = True
            self.flush()

    def _process(self) -> None:
        """Handle every complete line in the buffer (stop when a request must finish first)."""
        buf = self.rbuf
        max_line = self.server.config.max_line
        start = 0
        while self.blocked is None and not self.closed and not self.closing:
            nl = buf.find(b"\n", max(start, self.scan))
            if nl < 0:
                self.scan = len(buf)
                if len(buf) - start > max_line:
                    self._fatal(f"request line exceeds {max_line} bytes; closing the connection")
                    return
                break
            if nl - start > max_line:
                self._fatal(f"request line exceeds {max_line} bytes; closing the connection")
                return
            line = bytes(buf[start:nl])
            fds = self._take_fds(start, nl)
            start = nl + 1
            self.scan = start
            if line.strip():
                self._handle_line(line, fds)
            else:
                for fd in fds:
                    os.close(fd)
        if start:
            del buf[:start]
            self.scan = max(0, self.scan - start)
            self.fd_marks = [(off - start, fds) for off, fds in self.fd_marks]

    def _take_fds(self, start: int, end: int) -> list[int]:
        if not self.fd_marks:
            return []
        taken, keep = [], []
        for off, fds in self.fd_marks:
            (taken if off <= end else keep).append((off, fds))
        self.fd_marks = keep
        return [fd for _, fds in taken for fd in fds]

    def _fatal(self, message: str) -> None:
        """Refuse with one error response and close without reading further."""
        self.send(P.encode(P.error_response(None, PortsError("BAD_CMD", message))))
        self.rbuf.clear()
        self.closing = True
        self._update_reading()
        self.flush()

    # -- requests ---------------------------------------------------------------------------
    def _handle_line(self, line: bytes, fds: list[int]) -> None:
        req_id = None
        try:
            req = P.parse_request(line)
            req_id = req.req_id
            handler = self.server.handlers.get(req.cmd)
            if handler is None:
                raise PortsError("BAD_CMD", f"unknown command '{req.cmd}' "
                                 f"(known: {', '.join(self.server.handlers)})", field="cmd")
            cap = ALLOW_ALL if self.server.config.caps is None else self.server.cap_for(req)
            if len(fds) > self.server.config.max_fds_per_request:
                raise PortsError("BAD_ARG", f"{len(fds)} file descriptors passed; at most "
                                 f"{self.server.config.max_fds_per_request} per request", field="fd_index")
            result = handler(self, req, cap, fds)
        except PortsError as err:
            _close_fds(fds)
            self.send(P.encode(P.error_response(err.req_id if req_id is None else req_id, err)))
            return
        except Exception as exc:   # a bug must not take the daemon or the connection down
            _close_fds(fds)
            log.exception("client %d: internal error handling %r", self.cid, line[:200])
            self.send(P.encode(P.error_response(req_id, PortsError("INTERNAL", f"internal error: {exc}"))))
            return
        if asyncio.iscoroutine(result):
            self._run_async(req, result, fds)
            return
        if fds:
            _close_fds(fds)
        if req_id is None and result is self.server.ping_result:
            self.send(self.server.ping_line)        # constant: encoded once
        else:
            self.send(P.encode(P.ok_response(req_id, result)))

    def _run_async(self, req: P.Request, coro, fds: list[int]) -> None:
        deferred = req.cmd == "wait"
        task = self.loop.create_task(coro)
        if deferred:
            self.waits[req.req_id] = task
        else:
            self.blocked = task
            self._update_reading()

        def done(t: asyncio.Task) -> None:
            _close_fds(fds)
            if deferred:
                if self.waits.get(req.req_id) is t:
                    del self.waits[req.req_id]
            elif self.blocked is t:
                self.blocked = None
            if self.closed:
                return
            if t.cancelled():
                msg = P.error_response(req.req_id, PortsError("CANCELLED", "request cancelled"))
            elif isinstance(t.exception(), PortsError):
                msg = P.error_response(req.req_id, t.exception())
            elif t.exception() is not None:
                log.error("client %d: internal error in %s", self.cid, req.cmd,
                          exc_info=t.exception())
                msg = P.error_response(req.req_id, PortsError("INTERNAL", f"internal error: {t.exception()}"))
            else:
                msg = P.ok_response(req.req_id, t.result())
            self.send(P.encode(msg))
            if not deferred:
                self._process()
                self._update_reading()
            if self.eof and not self.subs and not self.waits and self.blocked is None:
                self.closing = True
            self.flush()
        task.add_done_callback(done)

    # -- writing ----------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue a response (never dropped; reading pauses while the queue is over its bound)."""
        if self.closed:
            return
        self.out.append(data)
        self.out_bytes += len(data)

    def send_event(self, data: bytes) -> bool:
        """Queue an event unless the queue is full (then count it as dropped)."""
        if self.closed or self.closing:
            return False
        cfg = self.server.config
        if len(self.out) >= cfg.queue_max_msgs or self.out_bytes + len(data) > cfg.queue_max_bytes:
            # Full as far as we know: hand what the socket takes to the kernel first, so
            # that a burst larger than the queue reaches a client that keeps up.
            if not self.writing:
                self.flush(in_dispatch=True)
            if self.closed or len(self.out) >= cfg.queue_max_msgs or \
                    self.out_bytes + len(data) > cfg.queue_max_bytes:
                self.dropped += 1
                return False
        self.out.append(data)
        self.out_bytes += len(data)
        return True

    def flush(self, in_dispatch: bool = False) -> None:
        """Write as much of the queue as the socket takes now; the rest when writable.

        ``in_dispatch``: called while the server iterates subscriptions, so a write error
        closes the connection on the next loop turn instead of now.
        """
        if self.closed:
            return
        out = self.out
        while True:
            if not out:
                if not self.dropped or self.closing:
                    break
                # The queue drained: tell the client once how much it missed.
                notice = P.encode({"event": "dropped", "reason": "backpressure", "count": self.dropped})
                self.dropped = 0
                out.append(notice)
                self.out_bytes += len(notice)
            if len(out) == 1:
                data = out.popleft()
            else:
                parts, size = [], 0
                while out and size < _SEND_BATCH:
                    b = out.popleft()
                    parts.append(b)
                    size += len(b)
                data = b"".join(parts)
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                log.debug("client %d: write error: %s", self.cid, exc)
                out.clear()
                self.out_bytes = 0
                self.closing = True
                if in_dispatch:
                    self.loop.call_soon(self.close)
                else:
                    self.close()
                return
            self.out_bytes -= n
            if n < len(data):
                out.appendleft(data[n:] if n else data)
                break
        if out and not self.writing:
            self.loop.add_writer(self.fd, self.flush)
            self.writing = True
        elif not out and self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False
        if not out and self.closing:
            if in_dispatch:
                self.loop.call_soon(self.close)
            else:
                self.close()
            return
        self._update_reading()

    # -- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        """Forget the client: subscriptions, pending requests, fds. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.reading:
            self.loop.remove_reader(self.fd)
        if self.writing:
            self.loop.remove_writer(self.fd)
        self.reading = self.writing = False
        for sub in list(self.subs.values()):
            self.server.remove_subscription(sub)
        for task in list(self.waits.values()):
            task.cancel()
        if self.blocked is not None:
            self.blocked.cancel()
        for _, fds in self.fd_marks:
            _close_fds(fds)
        self.fd_marks.clear()
        self.out.clear()
        self.out_bytes = 0
        self.rbuf = bytearray()
        try:
            self.sock.close()
        except OSError:
            pass
        self.server.forget(self)
        log.debug("client %d: closed", self.cid)


def _fds_from(anc) -> list[int]:
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[:len(data) - len(data) % a.itemsize])
            fds.extend(a)
    for fd in fds:
        os.set_inheritable(fd, False)
    return fds


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class PortsServer:
    """copperd's command set over the ports protocol, for one :class:`Backend`.

    ``blocking_backend``: run backend calls in a worker thread (for backends that wait on
    a device); otherwise they are called inline on the loop (fast, for the soft VM).
    """

    def __init__(self, backend: Backend, config: ServerConfig | None = None, *,
                 blocking_backend: bool = False) -> None:
        self.backend = backend
        self.config = config or ServerConfig()
        self.blocking_backend = blocking_backend
        self.loop: asyncio.AbstractEventLoop | None = None
        self.conns: dict[int, Connection] = {}
        self._next_cid = 1
        self._next_sid = 1
        self.subs: dict[int, Subscription] = {}
        self._inbox: collections.deque = collections.deque()
        self._inbox_scheduled = False
        self._inbox_dropped = 0
        self._dirty: set[Connection] = set()
        self._waiters: dict[int, list[tuple[frozenset, asyncio.Future]]] = {}
        self._listeners: list[socket.socket] = []
        self._stopped: asyncio.Event | None = None
        self._executor = None
        self.anc_size = socket.CMSG_SPACE(self.config.max_fds_per_request * 4)
        self.stats = collections.Counter()
        self.ping_result = {"name": self.config.name, "version": self.config.version,
                            "protocol": P.PROTOCOL_VERSION, "backend": backend.name}
        self.ping_line = P.encode(P.ok_response(None, self.ping_result))
        self.handlers: dict[str, Callable] = {
            "ping": self.cmd_ping, "load": self.cmd_load, "start": self.cmd_start,
            "stop": self.cmd_stop, "unload": self.cmd_unload, "status": self.cmd_status,
            "list": self.cmd_list, "subscribe": self.cmd_subscribe,
            "unsubscribe": self.cmd_unsubscribe, "cancel": self.cmd_cancel, "wait": self.cmd_wait,
            "fence": self.cmd_fence, "regs": self.cmd_regs,
        }
        if self.config.test_hooks:
            self.handlers["debug.emit"] = self.cmd_debug_emit
            self.handlers["debug.stats"] = self.cmd_debug_stats

    # -- lifecycle ----------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._stopped = asyncio.Event()
        self.backend.set_event_sink(self.sink)

    def add_listener(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._listeners.append(sock)
        self.loop.add_reader(sock.fileno(), self._on_accept, sock)

    async def serve_forever(self) -> None:
        await self._stopped.wait()

    def request_stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop accepting, stop every running program (subscribers still get the
        ``state`` events), then drop every client."""
        for sock in self._listeners:
            try:
                self.loop.remove_reader(sock.fileno())
            except (ValueError, OSError):
                pass
        self._listeners.clear()
        try:
            for st in self.backend.programs():
                if st.state == ProgramState.RUNNING:
                    self.backend.stop(st.id)
        except Exception as exc:   # the backend is closed next anyway
            log.warning("stopping programs: %s", exc)
        self.backend.set_event_sink(None)
        self._drain_inbox()          # best effort: the last events, without blocking
        for conn in list(self.conns.values()):
            conn.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def _on_accept(self, lsock: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # EMFILE and friends: log, keep serving
                log.warning("accept failed: %s", exc)
                return
            sock.setblocking(False)
            if len(self.conns) >= self.config.max_clients:
                self.stats["busy"] += 1
                try:
                    sock.send(P.encode(P.error_response(None, PortsError(
                        "BUSY", f"too many clients ({self.config.max_clients}); try again later"))))
                except OSError:
                    pass
                sock.close()
                continue
            conn = Connection(self, sock, self._next_cid)
            self._next_cid += 1
            self.conns[conn.cid] = conn
            log.debug("client %d: connected", conn.cid)
            conn.start()

    def forget(self, conn: Connection) -> None:
        self.conns.pop(conn.cid, None)
        self._dirty.discard(conn)

    def cap_for(self, req: P.Request) -> CapEntry:
        caps = self.config.caps
        if caps is None:
            return ALLOW_ALL
        entry = caps.lookup(req.caps)
        if not entry.allows_cmd(req.cmd):
            raise PortsError("DENIED", f"command '{req.cmd}' is not allowed for this "
                             f"{'token' if req.caps else 'client (no caps token)'}", field="cmd")
        return entry

    async def _backend_call(self, fn, *args):
        if not self.blocking_backend:
            return fn(*args)
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="backend")
        return await self.loop.run_in_executor(self._executor, fn, *args)

    def _call(self, fn, *args):
        """Run a backend call: inline (returns the value) or as a coroutine in the worker."""
        try:
            if not self.blocking_backend:
                return fn(*args)
        except BackendError as exc:
            raise PortsError(exc.code, exc.message) from None
        return self._wrap(fn, *args)

    async def _wrap(self, fn, *args):
        try:
            return await self._backend_call(fn, *args)
        except BackendError as exc:
            raise PortsError(exc.code, exc.message) from None

    def _then(self, value, fn):
        """Apply ``fn`` to a _call result, whether a value or a coroutine."""
        if asyncio.iscoroutine(value):
            async def chain():
                return fn(await value)
            return chain()
        return fn(value)

    # -- events -------------------------------------------------------------------------------
    def sink(self, event: dict) -> None:
        """The backend's event sink: any thread. Never blocks."""
        if len(self._inbox) >= self.config.inbox_max:
            self._inbox_dropped += 1
            return
        self._inbox.append(event)
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:   # loop closed during shutdown
                pass

    def _drain_inbox(self) -> None:
        self._inbox_scheduled = False   # before popping: a racing append schedules again
        inbox = self._inbox
        budget = 20000
        while inbox and budget:
            self._dispatch(inbox.popleft())
            budget -= 1
        if inbox and not self._inbox_scheduled:
            self._inbox_scheduled = True
            self.loop.call_soon(self._drain_inbox)   # let clients' I/O run in between
        if self._inbox_dropped:
            # The loop fell behind the backend: every subscriber missed these events.
            n, self._inbox_dropped = self._inbox_dropped, 0
            log.warning("event inbox full: %d events dropped", n)
            for conn in {sub.conn for sub in self.subs.values()}:
                conn.dropped += n
                self._dirty.add(conn)
        self._flush_dirty()

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for conn in dirty:
            conn.flush()

    def _dispatch(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "state":
            ev = dict(ev)
            ev.setdefault("id", ev.get("prog"))   # the seed's {"event":"state","id":42,...}
            self._wake_waiters(ev.get("prog"), ev.get("state"))
        elif kind == "vsync" and "usec" not in ev and "time_us" in ev:
            ev = dict(ev)
            ev["usec"] = int(ev["time_us"])       # the seed's {"event":"vsync","usec":...}
        if not self.subs:
            return
        body = None
        for sub in self.subs.values():
            if sub.matches(ev, kind):
                if body is None:
                    body = P.encode(ev)
                    tail = body[1:]
                if sub.conn.send_event(sub.prefix + tail):
                    self._dirty.add(sub.conn)

    def remove_subscription(self, sub: Subscription) -> None:
        self.subs.pop(sub.sid, None)
        sub.conn.subs.pop(sub.sid, None)

    def _wake_waiters(self, prog, state) -> None:
        waiters = self._waiters.get(prog)
        if not waiters:
            return
        keep = []
        for states, fut in waiters:
            if fut.done():
                continue
            if state in states:
                fut.set_result(state)
            elif state == "unloaded":
                fut.set_exception(PortsError("NOT_FOUND", f"program {prog} was unloaded"))
            else:
                keep.append((states, fut))
        if keep:
            self._waiters[prog] = keep
        else:
            del self._waiters[prog]

    def _drop_waiter(self, prog, fut) -> None:
        left = [w for w in self._waiters.get(prog, ()) if w[1] is not fut]
        if left:
            self._waiters[prog] = left
        else:
            self._waiters.pop(prog, None)

    def _poke(self, prog_id: int) -> None:
        """After the host changed a program's state: wake waiters even when the backend
        emits no state event for host-initiated transitions."""
        if prog_id not in self._waiters:
            return

        def wake(st):
            self._wake_waiters(prog_id, st.state.value if st is not None else "unloaded")

        if self.blocking_backend:
            async def later():
                try:
                    wake(await self._backend_call(self.backend.status, prog_id))
                except BackendError:
                    wake(None)
            self.loop.create_task(later())
            return
        try:
            wake(self.backend.status(prog_id))
        except BackendError:
            wake(None)

    # -- commands -----------------------------------------------------------------------------
    def cmd_ping(self, conn, req, cap, fds):
        if req.args:
            P.check_no_extra(req.args, (), "ping")
        return self.ping_result

    def cmd_load(self, conn, req, cap, fds):
        a = req.args
        P.check_no_extra(a, ("program", "image", "fd_index", "source"), "load")
        given = [k for k in ("program", "image", "fd_index") if k in a]
        if len(given) != 1:
            raise PortsError("BAD_ARG", "load needs exactly one of 'program' (program JSON), "
                             "'image' (base64 .cop) or 'fd_index' (a file passed by SCM_RIGHTS)"
                             + (f"; got {', '.join(given)}" if given else ""),
                             field=given[1] if len(given) > 1 else "program")
        source = P.arg_str(a, "source", required=False) or (
            f"<load request {req.req_id}>" if req.req_id is not None else "<load request>")
        if "program" in a:
            if not isinstance(a["program"], dict):
                raise PortsError("BAD_ARG", "'program' must be a program JSON object", field="program")
            image = _compile(a["program"], source)
        elif "image" in a:
            if not isinstance(a["image"], str):
                raise PortsError("BAD_ARG", "'image' must be a base64 string", field="image")
            import base64
            import binascii
            try:
                data = base64.b64decode(a["image"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise PortsError("BAD_ARG", f"'image' is not valid base64: {exc}", field="image") from None
            image = _parse_image(data, source)
        else:
            idx = P.arg_int(a, "fd_index", minimum=0)
            if idx >= len(fds):
                raise PortsError("BAD_ARG", f"fd_index {idx}: the request carried {len(fds)} file "
                                 "descriptor(s) (send them with the request line, SCM_RIGHTS)",
                                 field="fd_index")
            data = _read_fd(fds[idx], self.config.max_file_bytes)
            if "source" not in a:
                source = f"<fd {idx} of request {req.req_id}>"
            if data[:4] == b"COPR":
                image = _parse_image(data, source)
            else:
                try:
                    doc = json.loads(data.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise PortsError("BAD_FORMAT", f"{source}: neither a Copper image nor program "
                                     f"JSON: {exc}") from None
                image = _compile(doc, source)
        if cap.regs is not None:
            for _, name in image.regmap:
                if not cap.allows_reg(name):
                    raise PortsError("DENIED", f"the program writes register {name}, which this "
                                     "token may not write", field="program")
        return self._then(self._call(self.backend.load, image),
                          lambda pid: {"id": pid, "program": image.sha256(), "words": len(image.code)})

    def _prog_cmd(self, req, name, fn):
        P.check_no_extra(req.args, ("id",), name)
        pid = P.arg_int(req.args, "id", minimum=0)

        def done(_):
            self._poke(pid)
            return {"id": pid}
        return self._then(self._call(fn, pid), done)

    def cmd_start(self, conn, req, cap, fds):
        return self._prog_cmd(req, "start", self.backend.start)

    def cmd_stop(self, conn, req, cap, fds):
        return self._prog_cmd(req, "stop", self.backend.stop)

    def cmd_unload(self, conn, req, cap, fds):
        return self._prog_cmd(req, "unload", self.backend.unload)

    def cmd_status(self, conn, req, cap, fds):
        P.check_no_extra(req.args, ("id",), "status")
        pid = P.arg_int(req.args, "id", minimum=0)
        return self._then(self._call(self.backend.status, pid), lambda st: st.to_json())

    def cmd_list(self, conn, req, cap, fds):
        P.check_no_extra(req.args, (), "list")
        return self._then(self._call(self.backend.programs),
                          lambda progs: {"programs": [p.to_json() for p in progs]})

    def cmd_fence(self, conn, req, cap, fds):
        P.check_no_extra(req.args, ("timeline", "value"), "fence")
        tl = P.arg_str(req.args, "timeline", max_len=64)
        value = P.arg_int(req.args, "value", minimum=0)
        return self._then(self._call(self.backend.fence, tl, value),
                          lambda _: {"timeline": tl, "value": value})

    def cmd_regs(self, conn, req, cap, fds):
        P.check_no_extra(req.args, ("regs",), "regs")
        names = P.arg_list(req.args, "regs", str, max_items=256)
        if names:
            for n in names:
                if not cap.allows_reg(n):
                    raise PortsError("DENIED", f"register {n} is not readable with this token",
                                     field="regs")

        def pick(regs: dict):
            if names:
                missing = [n for n in names if n not in regs]
                if missing:
                    raise PortsError("BAD_ARG", f"unknown register '{missing[0]}' "
                                     "(expected layer[N].x|y|alpha|z|visible)", field="regs")
                return {"regs": {n: regs[n] for n in names}}
            return {"regs": {k: v for k, v in regs.items() if cap.allows_reg(k)}}
        return self._then(self._call(self.backend.regs), pick)

    def cmd_subscribe(self, conn, req, cap, fds):
        a = req.args
        P.check_no_extra(a, ("events", "tag", "prog", "reg"), "subscribe")
        kinds = P.arg_list(a, "events", str) or ["all"]
        for k in kinds:
            if k != "all" and k not in P.EVENT_KINDS:
                raise PortsError("BAD_ARG", f"unknown event kind '{k}' (known: all, "
                                 f"{', '.join(P.EVENT_KINDS)})", field="events")
        if len(conn.subs) >= self.config.max_subs_per_client:
            raise PortsError("BUSY", f"at most {self.config.max_subs_per_client} subscriptions "
                             "per connection")
        tags = P.arg_list(a, "tag", str)
        progs = P.arg_list(a, "prog", int)
        regs = P.arg_list(a, "reg", str)
        if regs and cap.regs is not None:
            for r in regs:
                if not cap.allows_reg(r):
                    raise PortsError("DENIED", f"register {r} is not readable with this token",
                                     field="reg")
        sid = self._next_sid
        self._next_sid += 1
        sub = Subscription(
            sid, conn, None if "all" in kinds else frozenset(kinds),
            tags=frozenset(tags) if tags else None, progs=frozenset(progs) if progs else None,
            regs=frozenset(regs) if regs else None, cap=cap, req_id=req.req_id,
            prefix=b'{"sub":%d,' % sid)
        self.subs[sid] = sub
        conn.subs[sid] = sub
        out = {"sub": sid, "events": sorted(set(kinds))}
        for k, v in (("tag", tags), ("prog", progs), ("reg", regs)):
            if v:
                out[k] = v
        return out

    def cmd_unsubscribe(self, conn, req, cap, fds):
        P.check_no_extra(req.args, ("sub",), "unsubscribe")
        sid = P.arg_int(req.args, "sub", minimum=0)
        sub = conn.subs.get(sid)
        if sub is None:
            raise PortsError("NOT_FOUND", f"no subscription {sid} on this connection", field="sub")
        self.remove_subscription(sub)
        return {"sub": sid}

    def cmd_cancel(self, conn, req, cap, fds):
        """Cancel this connection's pending request ``id`` (a ``wait``) or end the
        subscription made by request ``id``. Idempotent: nothing pending -> cancelled false."""
        P.check_no_extra(req.args, ("id",), "cancel")
        if "id" not in req.args:
            raise PortsError("BAD_ARG", "missing argument 'id' (the request id to cancel)", field="id")
        target = P._check_req_id(req.args["id"], "id")
        task = conn.waits.get(target)
        if task is not None and not task.done():
            task.cancel()
            return {"cancelled": True, "target": target}
        for sub in list(conn.subs.values()):
            if sub.req_id is not None and sub.req_id == target:
                self.remove_subscription(sub)
                return {"cancelled": True, "target": target, "sub": sub.sid}
        return {"cancelled": False, "target": target}

    def cmd_wait(self, conn, req, cap, fds):
        """Answer once program ``id`` is in one of ``state`` (default: done/stopped/faulted)."""
        a = req.args
        P.check_no_extra(a, ("id", "state", "timeout"), "wait")
        pid = P.arg_int(a, "id", minimum=0)
        states = P.arg_list(a, "state", str) or list(TERMINAL_STATES)
        valid = {s.value for s in ProgramState} | {"unloaded"}
        for s in states:
            if s not in valid:
                raise PortsError("BAD_ARG", f"unknown state '{s}' (known: {', '.join(sorted(valid))})",
                                 field="state")
        timeout = P.arg_number(a, "timeout", default=30.0, minimum=0.0, maximum=3600.0)
        if req.req_id is None:
            raise PortsError("BAD_ARG", "wait needs a request id (so that it can be cancelled)",
                             field="id" if req.form == "args" else "req")
        if req.req_id in conn.waits:
            raise PortsError("BAD_ARG", f"a wait with request id {req.req_id!r} is already pending",
                             field="id")
        if len(conn.waits) >= self.config.max_waits_per_client:
            raise PortsError("BUSY", f"at most {self.config.max_waits_per_client} pending waits")
        return self._wait(pid, frozenset(states), timeout)

    async def _wait(self, pid, states, timeout):
        # Register before asking for the current state: no transition can slip between.
        fut = self.loop.create_future()
        self._waiters.setdefault(pid, []).append((states, fut))
        try:
            current = (await self._wrap(self.backend.status, pid)).state.value
        except BaseException:
            fut.cancel()
            self._drop_waiter(pid, fut)
            raise
        if current in states:
            fut.cancel()
            self._drop_waiter(pid, fut)
        else:
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise PortsError("TIMEOUT", f"program {pid} did not reach "
                                 f"{'/'.join(sorted(states))} within {timeout:g} s") from None
            finally:
                if not fut.done():
                    fut.cancel()
                self._drop_waiter(pid, fut)
        try:
            return (await self._backend_call(self.backend.status, pid)).to_json()
        except BackendError:
            return {"id": pid, "state": "unloaded"}

    def cmd_debug_stats(self, conn, req, cap, fds):
        """Test hook (--test-hooks): what the daemon holds (to prove nothing leaks)."""
        P.check_no_extra(req.args, (), "debug.stats")
        return {"clients": len(self.conns), "subscriptions": len(self.subs),
                "waits": sum(len(c.waits) for c in self.conns.values()),
                "waiters": sum(len(w) for w in self._waiters.values()),
                "inbox": len(self._inbox), "queued_bytes": sum(c.out_bytes for c in self.conns.values()),
                "busy_refusals": self.stats["busy"]}

    def cmd_debug_emit(self, conn, req, cap, fds):
        """Test hook (--test-hooks): push ``count`` copies of ``event`` through the backend
        event path from a thread, at ``rate`` events/s (0 = as fast as possible)."""
        a = req.args
        P.check_no_extra(a, ("event", "count", "rate"), "debug.emit")
        ev = a.get("event")
        if not isinstance(ev, dict) or not isinstance(ev.get("event"), str):
            raise PortsError("BAD_ARG", "'event' must be an event object with an 'event' kind",
                             field="event")
        count = P.arg_int(a, "count", minimum=1, maximum=100_000_000)
        rate = P.arg_number(a, "rate", default=0.0, minimum=0.0, maximum=1e7)

        def run():
            sink = self.sink
            t0 = time.perf_counter()
            for i in range(count):
                e = dict(ev)
                e["seq"] = i
                sink(e)
                if rate and i % 256 == 255:
                    ahead = (i + 1) / rate - (time.perf_counter() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        threading.Thread(target=run, name="debug-emit", daemon=True).start()
        return {"emitting": count, "rate": rate}


def _compile(doc: dict, source: str):
    try:
        from copperline.firmware.compiler import compile_program
        from copperline.firmware.program import ProgramError
    except ImportError as exc:
        raise PortsError("INTERNAL", f"the program compiler is not available ({exc}); load a "
                         "compiled image with 'image' instead") from None
    try:
        result = compile_program(doc, source=source)
    except ProgramError as exc:
        raise PortsError("BAD_FORMAT", str(exc), field="program") from None
    return getattr(result, "image", result)


def _parse_image(data: bytes, source: str):
    from copperline.firmware.image import Image, ImageError
    try:
        return Image.from_bytes(data, source)
    except ImageError as exc:
        raise PortsError("BAD_FORMAT", str(exc), field="image") from None


def _read_fd(fd: int, limit: int) -> bytes:
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise PortsError("BAD_ARG", f"passed fd is unusable: {exc.strerror}", field="fd_index") from None
    if not stat.S_ISREG(st.st_mode):
        raise PortsError("BAD_ARG", "passed fd must be a regular file or memfd holding a "
                         "program or image", field="fd_index")
    if st.st_size > limit:
        raise PortsError("BAD_ARG", f"passed file is {st.st_size} bytes; at most {limit}",
                         field="fd_index")
    chunks, off = [], 0
    while off <= limit:
        b = os.pread(fd, 65536, off)
        if not b:
            break
        chunks.append(b)
        off += len(b)
    if off > limit:
        raise PortsError("BAD_ARG", f"passed file is larger than {limit} bytes", field="fd_index")
    return b"".join(chunks)
