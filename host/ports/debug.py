"""The test hooks (``copperd --test-hooks``): commands for tests and benchmarks only.

Not part of the server: copperd adds them to a server's command table when asked
(:func:`debug_commands`).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable

from copperline.host.ports import protocol as P
from copperline.host.ports.protocol import PortsError

if TYPE_CHECKING:
    from copperline.host.ports.server import PortsServer


def debug_commands(server: "PortsServer") -> dict[str, Callable]:
    """``debug.stats`` and ``debug.emit`` for ``server``, to add to its handlers."""

    def debug_stats(conn, req, cap, fds):
        """What the daemon holds (to prove nothing leaks)."""
        P.check_no_extra(req.args, (), "debug.stats")
        fanout = server.fanout
        return {"clients": len(server.conns), "subscriptions": len(fanout.subs),
                "waits": sum(len(c.waits) for c in server.conns.values()),
                "waiters": sum(len(w) for w in fanout.waiters.values()),
                "inbox": len(fanout.inbox),
                "queued_bytes": sum(c.out_bytes for c in server.conns.values()),
                "busy_refusals": server.stats["busy"],
                "fds_held": sum(c.fds_held for c in server.conns.values()),
                "refused_lingering": len(server.refused), "timelines": len(server.timelines)}

    def debug_emit(conn, req, cap, fds):
        """Push ``count`` copies of ``event`` through the backend event path from a
        thread, at ``rate`` events/s (0 = as fast as possible)."""
        a = req.args
        P.check_no_extra(a, ("event", "count", "rate"), "debug.emit")
        ev = a.get("event")
        if not isinstance(ev, dict) or not isinstance(ev.get("event"), str):
            raise PortsError("BAD_ARG", "'event' must be an event object with an 'event' kind",
                             field="event")
        count = P.arg_int(a, "count", minimum=1, maximum=100_000_000)
        rate = P.arg_number(a, "rate", default=0.0, minimum=0.0, maximum=1e7)

        def run():
            sink = server.fanout.sink
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

    return {"debug.emit": debug_emit, "debug.stats": debug_stats}
