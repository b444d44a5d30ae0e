"""The ports protocol v0: NDJSON requests, responses and events over a Unix socket.

- :mod:`copperline.host.ports.protocol` — envelope parsing, the request-id rule, error codes;
- :mod:`copperline.host.ports.server` — the asyncio server (accepting, limits, lifecycle);
- :mod:`copperline.host.ports.connection`, :mod:`~copperline.host.ports.fanout`,
  :mod:`~copperline.host.ports.commands` — one client, events to subscriptions, the commands;
- :mod:`copperline.host.ports.sockets` — socket paths, stale sockets, systemd activation/notify;
- :mod:`copperline.host.ports.caps` — capability tokens;
- :mod:`copperline.host.ports.testing` — run copperd as a subprocess (tests, benchmarks).

The specification is ``docs/ports.md``.
"""

from copperline.host.ports.protocol import (  # noqa: F401
    ERROR_CODES, MAX_LINE, PROTOCOL_VERSION, PortsError, Request, parse_request)
