"""The ports server: accepting clients, its lifecycle, and keeping every resource a
client can make it hold bounded, on an asyncio loop.

The client side (reader, writer) is :mod:`.connection`, the commands :mod:`.commands`,
the fan-out of backend events to subscriptions :mod:`.fanout`, the backend calls
:mod:`.calls`.

Design (why it looks like this):

- Each client is a non-blocking socket driven by ``loop.add_reader``/``add_writer`` and
  ``recvmsg`` (see :mod:`.connection`).
- One outgoing queue per client, bounded by entry count and bytes. Responses are never
  dropped: when a client stops reading, the server stops reading *its* requests
  (backpressure on the request side). Events beyond the bound are dropped and counted;
  one ``{"event":"dropped","reason":"backpressure","count":N}`` follows once the queue
  drains. Writes are batched (one ``send`` per client per batch of messages).
- Backend events arrive from the backend's thread into one inbox, JSON-encoded once per
  event for all subscribers (see :mod:`.fanout`).
- A sweep every second closes what holds a slot for nothing: peers that are gone,
  connections idle past ``idle_timeout``, clients that have not read for ``stall_timeout``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from dataclasses import dataclass
from typing import Callable

from copperline import __version__
from copperline.host.backend import Backend, ProgramState
from copperline.host.ports import protocol as P
from copperline.host.ports.calls import BackendCalls
from copperline.host.ports.caps import ALLOW_ALL, CapEntry, CapTable
from copperline.host.ports.commands import Commands
from copperline.host.ports.connection import Connection
from copperline.host.ports.fanout import Fanout
from copperline.host.ports.protocol import PortsError

log = logging.getLogger(__name__)

#: The kernel passes at most SCM_MAX_FD (253) fds per message: room for all of them, so a
#: message with too many is answered BAD_ARG instead of being truncated (MSG_CTRUNC).
_SCM_MAX_FD = 253


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
    #: longest the loop spends handing events out before it serves requests again, us
    drain_budget_us: int = 1000
    #: distinct fence timelines the daemon keeps (each stays set for the daemon's life)
    max_timelines: int = 1024
    #: close a connection that holds nothing (no subscription, wait or request) and has
    #: sent nothing for this long, seconds (0 = never)
    idle_timeout: float = 600.0
    #: close a connection with queued output that has not read a byte for this long (0 = never)
    stall_timeout: float = 60.0
    sweep_interval: float = 1.0
    #: a refused (BUSY) client is kept this long, reading and discarding, so that it reads
    #: the BUSY message instead of EPIPE/ECONNRESET; at most busy_linger_max at a time
    busy_linger: float = 1.0
    busy_linger_max: int = 64
    #: on shutdown, how long clients that keep reading get to read what is queued for them
    #: (the final ``stopped`` events), seconds; a client that reads nothing for 50 ms is
    #: not waited for
    shutdown_grace: float = 2.0
    caps: CapTable | None = None


class PortsServer(Commands):
    """copperd's command set over the ports protocol, for one :class:`Backend`.

    ``blocking_backend``: run backend calls in a worker thread (for backends that wait on
    a device); otherwise they are called inline on the loop (fast, for the soft VM).
    """

    def __init__(self, backend: Backend, config: ServerConfig | None = None, *,
                 blocking_backend: bool = False) -> None:
        self.backend = backend
        self.config = config or ServerConfig()
        self.calls = BackendCalls(backend, blocking_backend)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.conns: dict[int, Connection] = {}
        self._next_cid = 1
        self.stats = collections.Counter()
        self.fanout = Fanout(self.config, self.stats)
        self._listeners: list[socket.socket] = []
        self._stopped: asyncio.Event | None = None
        self.anc_size = socket.CMSG_SPACE(_SCM_MAX_FD * 4)
        self.started = time.monotonic()
        self.refused: dict[int, socket.socket] = {}   # BUSY clients lingering
        self._accept_paused = False
        self.timelines: set[str] = set()
        self._prog_regs: dict[int, frozenset] = {}       # program id -> registers it writes
        self._sweeper: asyncio.TimerHandle | None = None
        self.ping_result = {"name": self.config.name, "version": self.config.version,
                            "protocol": P.PROTOCOL_VERSION, "backend": backend.name}
        self.ping_line = P.encode(P.ok_response(None, self.ping_result))
        self.handlers: dict[str, Callable] = {
            "ping": self.cmd_ping, "load": self.cmd_load, "start": self.cmd_start,
            "stop": self.cmd_stop, "unload": self.cmd_unload, "status": self.cmd_status,
            "list": self.cmd_list, "subscribe": self.cmd_subscribe,
            "unsubscribe": self.cmd_unsubscribe, "cancel": self.cmd_cancel, "wait": self.cmd_wait,
            "fence": self.cmd_fence, "regs": self.cmd_regs, "stats": self.cmd_stats,
        }

    # -- lifecycle ----------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._stopped = asyncio.Event()
        self.calls.attach(loop)
        self.fanout.attach(loop)
        self.backend.set_event_sink(self.fanout.sink)
        # Lets a backend that is behind real time slow its event production while the
        # loop is saturated (see RealTimeExecutor); a float in [0, 1].
        self.backend.event_backlog = self.fanout.backlog
        if self.config.sweep_interval > 0:
            self._sweeper = loop.call_later(self.config.sweep_interval, self._sweep)

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
        self._shutdown_start()
        self._shutdown_finish()

    async def shutdown_gracefully(self) -> None:
        """:meth:`shutdown`, giving clients that are reading up to ``shutdown_grace``
        seconds to read what is queued for them (the final ``stopped`` events) before
        they are dropped. A client that reads nothing for 50 ms, or had let nothing be
        written to it for a second before, is not waited for."""
        self._shutdown_start()
        start = time.monotonic()
        deadline = start + self.config.shutdown_grace
        # Clients that had not let us write for a second already are stalled: not waited for.
        live = [c for c in self.conns.values() if start - c.last_tx < 1.0]
        seen: dict[Connection, tuple[int, float]] = {}   # conn -> (unread bytes, since)
        while True:
            now = time.monotonic()
            waiting = False
            for c in live:
                if c.closed or not c.out:
                    continue
                # Progress is the client reading: our queue or the bytes it has not yet
                # read from the socket (SIOCOUTQ) going down.
                unread = c.out_bytes + c.unread_bytes()
                last, since = seen.get(c, (None, start))
                if last is None or unread < last:
                    since = now
                seen[c] = (unread, since)
                if now - since < 0.05:
                    waiting = True
            if not waiting or now >= deadline:
                break
            await asyncio.sleep(0.005)
        self._shutdown_finish()

    def _shutdown_start(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for sock in self._listeners:
            try:
                self.loop.remove_reader(sock.fileno())
            except (ValueError, OSError):
                pass
        self._listeners.clear()
        for sock in list(self.refused.values()):
            self._end_refused(sock)
        try:
            for st in self.backend.programs():
                if st.state == ProgramState.RUNNING:
                    self.backend.stop(st.id)
        except Exception as exc:   # the backend is closed next anyway
            log.warning("stopping programs: %s", exc)
        self.backend.set_event_sink(None)
        self.fanout.close()
        for conn in list(self.conns.values()):
            conn.flush()

    def _shutdown_finish(self) -> None:
        for conn in list(self.conns.values()):
            conn.close()
        self.calls.shutdown()

    def _on_accept(self, lsock: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EMFILE and friends: the pending connection stays in the backlog, so the
                # listener would be readable again at once (a 100 % CPU loop, a log flood).
                # Pause accepting for a moment instead; one warning per pause.
                self.stats["accept_errors"] += 1
                log.warning("accept failed: %s; not accepting for 0.1 s", exc)
                self._pause_accept(lsock, 0.1)
                return
            sock.setblocking(False)
            self.stats["connections"] += 1
            if len(self.conns) >= self.config.max_clients:
                self._refuse(sock)
                continue
            conn = Connection(self, sock, self._next_cid)
            self._next_cid += 1
            self.conns[conn.cid] = conn
            log.debug("client %d: connected", conn.cid)
            conn.start()

    def _pause_accept(self, lsock: socket.socket, seconds: float) -> None:
        if self._accept_paused:
            return
        self._accept_paused = True
        self.loop.remove_reader(lsock.fileno())

        def resume():
            self._accept_paused = False
            if lsock in self._listeners:
                self.loop.add_reader(lsock.fileno(), self._on_accept, lsock)
        self.loop.call_later(seconds, resume)

    def _refuse(self, sock: socket.socket) -> None:
        """Answer BUSY and close. The socket lingers (reading and discarding what the
        client sends) so that the client reads BUSY rather than EPIPE or ECONNRESET;
        closing with its request unread would reset the connection."""
        self.stats["busy"] += 1
        try:
            sock.send(P.encode(P.error_response(None, PortsError(
                "BUSY", f"too many clients ({self.config.max_clients}); try again later"))))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if len(self.refused) >= self.config.busy_linger_max or self.config.busy_linger <= 0:
            sock.close()
            return
        fd = sock.fileno()
        self.refused[fd] = sock

        def readable():
            try:
                if sock.recv(65536):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                pass
            self._end_refused(sock)
        self.loop.add_reader(fd, readable)
        self.loop.call_later(self.config.busy_linger, self._end_refused, sock)

    def _end_refused(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd < 0 or self.refused.get(fd) is not sock:
            return
        del self.refused[fd]
        self.loop.remove_reader(fd)
        sock.close()

    def _sweep(self) -> None:
        """Once a second: forget peers that are gone, idle and stalled connections."""
        cfg = self.config
        now = time.monotonic()
        try:
            for conn in list(self.conns.values()):
                if conn.closed:
                    continue
                # A reading connection sees its peer's EOF by itself; one whose reading
                # is paused (replies unread) or that is half-closed needs the check.
                if (conn.eof or not conn.reading) and conn.peer_gone():
                    self.stats["closed_dead_peer"] += 1
                    log.info("client %d: peer gone; closing", conn.cid)
                    conn.close()
                elif (cfg.stall_timeout and conn.out
                      and now - conn.last_tx > cfg.stall_timeout):
                    self.stats["closed_stalled"] += 1
                    log.warning("client %d: has not read for %.0f s (%d bytes queued); closing",
                                conn.cid, now - conn.last_tx, conn.out_bytes)
                    conn.close()
                elif (cfg.idle_timeout and not conn.subs and not conn.waits
                      and conn.blocked is None and not conn.out
                      and now - conn.last_rx > cfg.idle_timeout):
                    self.stats["closed_idle"] += 1
                    log.info("client %d: idle for %.0f s; closing", conn.cid, now - conn.last_rx)
                    conn.close()
        finally:
            self._sweeper = self.loop.call_later(cfg.sweep_interval, self._sweep)

    def forget(self, conn: Connection) -> None:
        self.conns.pop(conn.cid, None)
        self.fanout.forget(conn)

    def cap_for(self, req: P.Request) -> CapEntry:
        caps = self.config.caps
        if caps is None:
            return ALLOW_ALL
        entry = caps.lookup(req.caps)
        if not entry.allows_cmd(req.cmd):
            raise PortsError("DENIED", f"command '{req.cmd}' is not allowed for this "
                             f"{'token' if req.caps else 'client (no caps token)'}", field="cmd")
        return entry
