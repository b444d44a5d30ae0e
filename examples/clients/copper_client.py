#!/usr/bin/env python3
"""Load a Copper program into copperd, run it, print its IRQ events, stop and unload it.

    python examples/clients/copper_client.py [--socket PATH] [--events N] [PROGRAM.json]

Uses copperline.host.client.PortsClient; the program file is passed to the daemon as a
file descriptor (SCM_RIGHTS), so copperd never needs to read your files by path.
"""

import argparse
import sys
from pathlib import Path

from copperline.host.client import PortsClient, PortsConnectionError, PortsError

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("program", nargs="?", default=str(HERE.parent / "tick.json"))
    ap.add_argument("--socket", help="copperd socket (default: $COPPERD_SOCKET or the standard paths)")
    ap.add_argument("--events", type=int, default=5, help="IRQ events to print before stopping")
    args = ap.parse_args(argv)
    try:
        with PortsClient(args.socket, timeout=5.0) as c:
            info = c.ping()
            print(f"connected to {info['name']} {info['version']} (protocol {info['protocol']}, "
                  f"{info.get('backend', '?')} backend)")
            prog = c.load_file(args.program)
            print(f"loaded {args.program} as program {prog}")
            c.subscribe("irq", "state", prog=prog)
            c.request("start", id=prog)
            irqs = 0
            for ev in c.events(timeout=5.0):
                print(f"  {ev['event']:5} {ev.get('tag') or ev.get('state')}  t={ev.get('time_us')} us")
                if ev["event"] == "irq":
                    irqs += 1
                if irqs >= args.events or ev.get("state") in ("done", "faulted"):
                    break
            status = c.request("status", id=prog)
            print(f"program {prog}: {status['state']} at pc {status['pc']}")
            c.request("stop", id=prog)
            c.request("unload", id=prog)
            return 0 if irqs else 1
    except PortsConnectionError as exc:
        print(f"copper_client: {exc}", file=sys.stderr)
        return 3
    except PortsError as exc:
        print(f"copper_client: {exc.code}: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
