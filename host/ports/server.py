"""The ports server: accepting clients, fanning backend events out to subscriptions, and
keeping every resource a client can make it hold bounded, on an asyncio loop.

The client side (reader, writer) is :mod:`.connection`, the commands :mod:`.commands`.

Design (why it looks like this):

- Each client is a non-blocking socket driven by ``loop.add_reader``/``add_writer`` and
  ``recvmsg`` (see :mod:`.connection`).
- One outgoing queue per client, bounded by entry count and bytes. Responses are never
  dropped: when a client stops reading, the server stops reading *its* requests
  (backpressure on the request side). Events beyond the bound are dropped and counted;
  one ``{"event":"dropped","reason":"backpressure","count":N}`` follows once the queue
  drains. Writes are batched (one ``send`` per client per batch of messages).
- Backend events arrive from the backend's thread into one inbox; a single
  ``call_soon_threadsafe`` wakes the loop per batch. Each event is JSON-encoded once and
  the bytes are shared by every subscriber (only the ``"sub":N,`` prefix differs).
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
from copperline.host.backend import Backend, BackendError, ProgramState
from copperline.host.ports import protocol as P
from copperline.host.ports.caps import ALLOW_ALL, CapEntry, CapTable
from copperline.host.ports.commands import Commands
from copperline.host.ports.connection import Connection
from copperline.host.ports.protocol import PortsError
from copperline.host.ports.subscription import Subscription

log = logging.getLogger(__name__)

#: The kernel passes at most SCM_MAX_FD (253) fds per message: room for all of them, so a
#: message with too many is answered BAD_ARG instead of being truncated (MSG_CTRUNC).
_SCM_MAX_FD = 253
#: Kinds of event a full queue keeps rather than drops (rare; they say how a program ended).
_KEEP_KINDS = frozenset({"state", "error"})


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
    test_hooks: bool = False


class PortsServer(Commands):
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
        self._inbox_warned = 0.0
        self._sink_closed = False
        self._dirty: set[Connection] = set()
        self._waiters: dict[int, list[tuple[frozenset, asyncio.Future]]] = {}
        self._listeners: list[socket.socket] = []
        self._stopped: asyncio.Event | None = None
        self._executor = None
        self.anc_size = socket.CMSG_SPACE(_SCM_MAX_FD * 4)
        self.stats = collections.Counter()
        self.started = time.monotonic()
        self._refused: dict[int, socket.socket] = {}   # BUSY clients lingering
        self._accept_paused = False
        self._lateness: collections.deque = collections.deque(maxlen=4096)  # us, recent events
        self._timelines: set[str] = set()
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
        if self.config.test_hooks:
            self.handlers["debug.emit"] = self.cmd_debug_emit
            self.handlers["debug.stats"] = self.cmd_debug_stats

    # -- lifecycle ----------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._stopped = asyncio.Event()
        self.backend.set_event_sink(self.sink)
        # Lets a backend that is behind real time slow its event production while the
        # loop is saturated (see RealTimeExecutor); a float in [0, 1].
        self.backend.event_backlog = lambda: len(self._inbox) / self.config.inbox_max
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
        for sock in list(self._refused.values()):
            self._end_refused(sock)
        try:
            for st in self.backend.programs():
                if st.state == ProgramState.RUNNING:
                    self.backend.stop(st.id)
        except Exception as exc:   # the backend is closed next anyway
            log.warning("stopping programs: %s", exc)
        self.backend.set_event_sink(None)
        self._sink_closed = True
        # The events still in the inbox go out now: all of them for up to 10 ms, then
        # only the kinds that say how programs ended (the final state events are last),
        # so that a full inbox cannot hold up the exit.
        inbox = self._inbox
        deadline = time.monotonic() + 0.01
        while inbox and time.monotonic() < deadline:
            for _ in range(min(256, len(inbox))):
                self._dispatch(inbox.popleft())
        skipped = 0
        while inbox:
            ev = inbox.popleft()
            if ev.get("event") in _KEEP_KINDS:
                self._dispatch(ev)
            else:
                skipped += 1
        if skipped:
            self._inbox_dropped += skipped
        self._drain_inbox()
        for conn in list(self.conns.values()):
            conn.flush()

    def _shutdown_finish(self) -> None:
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
        if len(self._refused) >= self.config.busy_linger_max or self.config.busy_linger <= 0:
            sock.close()
            return
        fd = sock.fileno()
        self._refused[fd] = sock

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
        if fd < 0 or self._refused.get(fd) is not sock:
            return
        del self._refused[fd]
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

    def _submit(self, fn, *args) -> asyncio.Future:
        """Start a backend call without blocking the loop; a Future of its result.

        A backend with ``submit(name, *args)`` (soft: queued straight to its timing
        thread) is called through it; any other runs in a worker thread. Each layer of
        coroutines and worker threads costs loop turns and GIL hand-overs, which under
        load were most of a ``status``'s latency."""
        loop = self.loop
        out = loop.create_future()
        submit = getattr(self.backend, "submit", None)
        if submit is not None:
            cf = submit(fn.__name__, *args)
        else:
            if self._executor is None:
                from concurrent.futures import ThreadPoolExecutor
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="backend")
            cf = self._executor.submit(fn, *args)

        def settle(cf):
            if out.done():
                return
            if cf.cancelled():
                out.cancel()
            elif cf.exception() is not None:
                out.set_exception(cf.exception())
            else:
                out.set_result(cf.result())

        def on_done(cf):
            try:
                loop.call_soon_threadsafe(settle, cf)
            except RuntimeError:     # the loop is closed (shutdown)
                pass
        cf.add_done_callback(on_done)
        timeout = getattr(self.backend, "command_timeout", None)
        if timeout:
            def expire():
                if not out.done():
                    out.set_exception(BackendError("TIMEOUT", f"the {self.backend.name} backend "
                                                   f"did not answer within {timeout:g} s"))
            handle = loop.call_later(timeout, expire)
            out.add_done_callback(lambda _: handle.cancel())
        return out

    async def _backend_call(self, fn, *args):
        if not self.blocking_backend:
            return fn(*args)
        return await self._submit(fn, *args)

    def _call(self, fn, *args):
        """Run a backend call: inline (returns the value) or started (returns a Future)."""
        try:
            if not self.blocking_backend:
                return fn(*args)
        except BackendError as exc:
            raise PortsError(exc.code, exc.message) from None
        return self._submit(fn, *args)

    async def _wrap(self, fn, *args):
        try:
            return await self._backend_call(fn, *args)
        except BackendError as exc:
            raise PortsError(exc.code, exc.message) from None

    def _then(self, value, fn):
        """Apply ``fn`` to a _call result, whether a value or a Future; for a Future, a
        Future of ``fn``'s result (BackendError becomes PortsError). ``fn`` runs even when
        the request was cancelled meanwhile (its client went away): the call it sent was
        made, and its bookkeeping (e.g. a loaded program's registers) must follow."""
        if not isinstance(value, asyncio.Future):
            return fn(value)
        out = self.loop.create_future()

        def step(f):
            if f.cancelled():
                out.cancel()
                return
            exc = f.exception()
            if exc is None:
                try:
                    result, exc = fn(f.result()), None
                except BaseException as e:       # noqa: BLE001 - handed to the request
                    exc = e
            if isinstance(exc, BackendError):
                exc = PortsError(exc.code, exc.message)
            if out.done():
                return
            if exc is None:
                out.set_result(result)
            else:
                out.set_exception(exc)
        value.add_done_callback(step)
        return out

    # -- events -------------------------------------------------------------------------------
    def sink(self, event: dict) -> None:
        """The backend's event sink: any thread. Never blocks."""
        if self._sink_closed:
            return
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
        # Bounded by time, not only by count: with many subscribers one event can cost
        # tens of microseconds, and requests (stop, status, ping) wait for this turn.
        deadline = time.perf_counter_ns() + self.config.drain_budget_us * 1000
        dispatch = self._dispatch
        while inbox:
            for _ in range(min(64, len(inbox))):
                dispatch(inbox.popleft())
            if time.perf_counter_ns() > deadline:
                break
        if inbox and not self._inbox_scheduled:
            self._inbox_scheduled = True
            self.loop.call_soon(self._drain_inbox)   # let clients' I/O run in between
        if self._inbox_dropped:
            # The loop fell behind the backend: every subscriber missed these events.
            n, self._inbox_dropped = self._inbox_dropped, 0
            self.stats["inbox_dropped"] += n
            now = time.monotonic()
            if now - self._inbox_warned > 10.0:    # rate-limited: this can happen per turn
                self._inbox_warned = now
                log.warning("event inbox full: events dropped (%d so far; see stats)",
                            self.stats["inbox_dropped"])
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
        self.stats["events"] += 1
        if kind == "state":
            ev = dict(ev)
            ev.setdefault("id", ev.get("prog"))   # the seed's {"event":"state","id":42,...}
            self._wake_waiters(ev.get("prog"), ev.get("state"))
        elif kind == "vsync" and "usec" not in ev and "time_us" in ev:
            ev = dict(ev)
            ev["usec"] = int(ev["time_us"])       # the seed's {"event":"vsync","usec":...}
        wall = ev.get("wall_us")
        if wall is not None:
            try:
                self._lateness.append(wall - ev["time_us"])
            except (KeyError, TypeError):
                pass
        if not self.subs:
            return
        body = None
        keep = kind in _KEEP_KINDS
        ended = None
        for sub in self.subs.values():
            if sub.matches(ev, kind):
                if keep or not sub.conn.drop_if_full():
                    if body is None:
                        body = P.encode(ev)
                        tail = body[1:]
                    if sub.conn.send_event(sub.prefix + tail, keep):
                        self._dirty.add(sub.conn)
                if sub.limit is not None:
                    sub.count += 1
                    if sub.count >= sub.limit:
                        ended = (ended or []) + [sub]
        for sub in ended or ():
            self.end_subscription(sub, "limit")

    def end_subscription(self, sub: Subscription, reason: str) -> None:
        """End ``sub`` by the server's decision and tell its client with a final
        ``{"sub":N,"event":"end","reason":...,"count":...}`` (never dropped)."""
        self.remove_subscription(sub)
        conn = sub.conn
        conn.send_event(sub.prefix + P.encode({"event": "end", "reason": reason,
                                               "count": sub.count})[1:], keep=True)
        self._dirty.add(conn)
        conn._close_if_done()      # a half-closed client (socat) is done once nothing is left

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

