"""Fan-out: backend events to the clients' subscriptions, and program-state waiters.

Backend events arrive from the backend's thread into one inbox (:meth:`Fanout.sink`); a
single ``call_soon_threadsafe`` wakes the loop per batch. Each event is JSON-encoded once
and the bytes are shared by every subscriber (only the ``"sub":N,`` prefix differs).
Connections that were handed events are flushed once per batch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING

from copperline.host.ports import protocol as P
from copperline.host.ports.protocol import PortsError
from copperline.host.ports.subscription import Subscription

if TYPE_CHECKING:
    from copperline.host.ports.connection import Connection
    from copperline.host.ports.server import ServerConfig

log = logging.getLogger("copperline.host.ports.server")

#: Kinds of event a full queue keeps rather than drops (rare; they say how a program ended).
KEEP_KINDS = frozenset({"state", "error"})


class Fanout:
    """The subscriptions and waiters of one server, and the inbox that feeds them.

    ``stats`` is the server's counter set (``events``, ``inbox_dropped``).
    """

    def __init__(self, config: "ServerConfig", stats: collections.Counter) -> None:
        self.config = config
        self.stats = stats
        self.loop: asyncio.AbstractEventLoop | None = None
        self.subs: dict[int, Subscription] = {}
        self._next_sid = 1
        #: program id -> [(states, future)] of pending ``wait`` commands
        self.waiters: dict[int, list[tuple[frozenset, asyncio.Future]]] = {}
        #: wall-clock lateness of recent events, us
        self.lateness: collections.deque = collections.deque(maxlen=4096)
        self.inbox: collections.deque = collections.deque()
        self._inbox_scheduled = False
        self._inbox_dropped = 0
        self._inbox_warned = 0.0
        self._closed = False
        self._dirty: set[Connection] = set()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def backlog(self) -> float:
        """How full the inbox is, in [0, 1]."""
        return len(self.inbox) / self.config.inbox_max

    # -- the inbox ----------------------------------------------------------------------------
    def sink(self, event: dict) -> None:
        """The backend's event sink: any thread. Never blocks."""
        if self._closed:
            return
        if len(self.inbox) >= self.config.inbox_max:
            self._inbox_dropped += 1
            return
        self.inbox.append(event)
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain_inbox)
            except RuntimeError:   # loop closed during shutdown
                pass

    def close(self) -> None:
        """Take no more events; hand out what the inbox holds and flush the clients."""
        self._closed = True
        # The events still in the inbox go out now: all of them for up to 10 ms, then
        # only the kinds that say how programs ended (the final state events are last),
        # so that a full inbox cannot hold up the exit.
        inbox = self.inbox
        deadline = time.monotonic() + 0.01
        while inbox and time.monotonic() < deadline:
            for _ in range(min(256, len(inbox))):
                self.dispatch(inbox.popleft())
        skipped = 0
        while inbox:
            ev = inbox.popleft()
            if ev.get("event") in KEEP_KINDS:
                self.dispatch(ev)
            else:
                skipped += 1
        if skipped:
            self._inbox_dropped += skipped
        self._drain_inbox()

    def _drain_inbox(self) -> None:
        self._inbox_scheduled = False   # before popping: a racing append schedules again
        inbox = self.inbox
        # Bounded by time, not only by count: with many subscribers one event can cost
        # tens of microseconds, and requests (stop, status, ping) wait for this turn.
        deadline = time.perf_counter_ns() + self.config.drain_budget_us * 1000
        dispatch = self.dispatch
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

    def forget(self, conn: "Connection") -> None:
        """``conn`` is closed: nothing more is flushed to it."""
        self._dirty.discard(conn)

    # -- one event ----------------------------------------------------------------------------
    def dispatch(self, ev: dict) -> None:
        """Hand ``ev`` to every matching subscription and wake the waiters it concerns."""
        kind = ev.get("event")
        self.stats["events"] += 1
        if kind == "state":
            ev = dict(ev)
            ev.setdefault("id", ev.get("prog"))   # the seed's {"event":"state","id":42,...}
            self.wake_waiters(ev.get("prog"), ev.get("state"))
        elif kind == "vsync" and "usec" not in ev and "time_us" in ev:
            ev = dict(ev)
            ev["usec"] = int(ev["time_us"])       # the seed's {"event":"vsync","usec":...}
        wall = ev.get("wall_us")
        if wall is not None:
            try:
                self.lateness.append(wall - ev["time_us"])
            except (KeyError, TypeError):
                pass
        if not self.subs:
            return
        body = None
        keep = kind in KEEP_KINDS
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

    # -- subscriptions ------------------------------------------------------------------------
    def subscribe(self, conn: "Connection", kinds: frozenset | None, **filters) -> Subscription:
        """A new subscription of ``conn`` to ``kinds`` (None: all), with ``filters`` (the
        other :class:`Subscription` fields)."""
        sid = self._next_sid
        self._next_sid += 1
        sub = Subscription(sid, conn, kinds, prefix=b'{"sub":%d,' % sid, **filters)
        self.subs[sid] = sub
        conn.subs[sid] = sub
        return sub

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

    # -- waiters ------------------------------------------------------------------------------
    def add_waiter(self, prog: int, states: frozenset) -> asyncio.Future:
        """A future set to the state once program ``prog`` is in one of ``states``."""
        fut = self.loop.create_future()
        self.waiters.setdefault(prog, []).append((states, fut))
        return fut

    def drop_waiter(self, prog, fut) -> None:
        left = [w for w in self.waiters.get(prog, ()) if w[1] is not fut]
        if left:
            self.waiters[prog] = left
        else:
            self.waiters.pop(prog, None)

    def wake_waiters(self, prog, state) -> None:
        """Program ``prog`` is now in ``state`` (``"unloaded"``: gone)."""
        waiters = self.waiters.get(prog)
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
            self.waiters[prog] = keep
        else:
            del self.waiters[prog]
