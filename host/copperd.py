"""copperd: the Copper daemon — the ports protocol v0 over a Unix socket.

    copperd --backend soft                      # /run/copperline/copperd.sock (or $XDG_RUNTIME_DIR/...)
    copperd --backend soft --socket @copperline/copperd   # abstract socket
    COPPERD_SOCKET=/tmp/c.sock copperd          # path from the environment

SIGINT/SIGTERM stop every program, remove the socket and exit 0. Under systemd the
listening socket may be passed in (socket activation) and READY=1 is sent to
$NOTIFY_SOCKET. The protocol is specified in docs/ports.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import stat
import sys

from copperline import __version__

log = logging.getLogger("copperd")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="copperd",
        description="The Copper daemon: serves the ports protocol v0 (NDJSON over a Unix socket) "
                    "and runs Copper programs on a backend. See docs/ports.md.",
        epilog="Socket path: --socket, else $COPPERD_SOCKET, else /run/copperline/copperd.sock, "
               "else $XDG_RUNTIME_DIR/copperline/copperd.sock, else /tmp/copperline-$UID/copperd.sock. "
               "'@name' is an abstract socket. Exit: 0 after SIGINT/SIGTERM, 1 runtime error "
               "(e.g. a live daemon owns the socket), 2 usage/configuration error.")
    p.add_argument("--version", action="version", version=f"copperd {__version__}")
    p.add_argument("--backend", choices=("soft", "fpga"), default="soft",
                   help="what executes programs (default: soft, the Python VM)")
    p.add_argument("--socket", metavar="PATH", help="listen here ('@name' = abstract socket)")
    p.add_argument("--private", action="store_true", help="socket mode 0600 instead of 0660")
    p.add_argument("--group", metavar="NAME", help="chown the socket to this group")
    p.add_argument("--caps", metavar="FILE", help="capability tokens (JSON: token -> "
                   "{commands, regs}); enables DENIED for everything a token does not allow")
    p.add_argument("--cap", metavar="TOKEN=CMDS[:REGS]", action="append", default=[],
                   help="add one capability token, e.g. viewer=list,status,regs:layer[1].*")
    p.add_argument("--max-clients", type=int, default=64, metavar="N",
                   help="connections beyond this get BUSY (default 64)")
    p.add_argument("--queue-events", type=int, default=4096, metavar="N",
                   help="per-client outgoing queue bound, messages (default 4096)")
    p.add_argument("--queue-bytes", type=int, default=1 << 20, metavar="B",
                   help="per-client outgoing queue bound, bytes (default 1 MiB)")
    p.add_argument("--idle-timeout", type=float, default=600.0, metavar="S",
                   help="close a connection that holds nothing and sends nothing for S seconds "
                        "(default 600; 0 = never)")
    p.add_argument("--stall-timeout", type=float, default=60.0, metavar="S",
                   help="close a client that has not read its queued messages for S seconds "
                        "(default 60; 0 = never)")
    p.add_argument("--max-timelines", type=int, default=1024, metavar="N",
                   help="distinct fence timelines kept (default 1024)")
    p.add_argument("--gil-switch-us", type=int, default=250, metavar="US",
                   help="Python's thread switch interval (default 250 us; Python's own is "
                        "5000): bounds how long the event loop waits for the timing thread")
    p.add_argument("--clock-hz", type=int, default=None, help="soft: core clock (default 12 MHz)")
    p.add_argument("--vsync-hz", type=float, default=None, help="soft: vsync rate (default 60)")
    p.add_argument("--no-vsync-events", action="store_true",
                   help="soft: do not generate vsync events")
    p.add_argument("--port", metavar="URL", help="fpga: serial port or URL of the board link")
    p.add_argument("--board", metavar="NAME", help="fpga: board name")
    p.add_argument("--fallback", choices=("soft",),
                   help="fpga: when the board is lost, keep the programs running on the VM")
    p.add_argument("--test-hooks", action="store_true",
                   help="enable the debug.emit command (benchmarks and tests only)")
    p.add_argument("-q", "--quiet", action="store_true", help="no start-up banner")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv debug)")
    return p


class UsageError(Exception):
    pass


def make_backend(args):
    """The backend the command line asks for (not yet opened)."""
    if args.backend == "soft":
        from copperline.host.soft import SoftBackend
        kw = {"vsync_events": not args.no_vsync_events}
        if args.clock_hz is not None:
            kw["clock_hz"] = args.clock_hz
        if args.vsync_hz is not None:
            kw["vsync_hz"] = args.vsync_hz
        try:
            return SoftBackend(clock="monotonic", **kw)
        except ValueError as exc:
            raise UsageError(f"--backend soft: {exc}") from None
    from copperline.host.fpga import FpgaBackend
    # Without --port the backend finds the board by its USB id (clear error when none).
    board = FpgaBackend(port=args.port, board=args.board)
    if args.fallback == "soft":
        from copperline.host.fallback import FallbackBackend
        return FallbackBackend(board)
    return board


def _caps(args):
    from copperline.host.ports.caps import CapsConfigError, CapTable
    if not args.caps and not args.cap:
        return None
    try:
        table = CapTable.from_file(args.caps) if args.caps else CapTable({})
        for spec in args.cap:
            table.add_flag(spec)
    except CapsConfigError as exc:
        raise UsageError(str(exc)) from None
    return table


def socket_mode(path: str) -> str:
    """What the banner says about access: the socket file's actual mode (under socket
    activation systemd made it, not --private), or that it is abstract."""
    if path.startswith("@"):
        return "abstract socket"
    try:
        st = os.stat(path)
    except OSError:
        return "mode unknown"
    return f"mode {stat.S_IMODE(st.st_mode):04o} {stat.filemode(st.st_mode)}"


def _banner(path: str, args, backend) -> str:
    target = shlex.quote(path)
    mode = socket_mode(path)
    hz = getattr(backend, "clock_hz", None)
    clock = f", {hz / 1e6:g} MHz clock" if hz else ""
    return (f"copperd {__version__}: {backend.name} backend{clock}, listening on {path} ({mode})\n"
            f"  try:  portctl {target} '{{\"cmd\":\"ping\"}}'\n"
            f"        portctl {target} '{{\"cmd\":\"subscribe\",\"events\":[\"irq\",\"state\"]}}' --count 5\n"
            f"  stop with Ctrl-C (SIGINT) or SIGTERM")


async def _run(args, backend, listener, config) -> int:
    from copperline.host.ports import sockets
    from copperline.host.ports.server import PortsServer

    loop = asyncio.get_running_loop()
    # The timing thread spins holding the GIL before each deadline; with Python's default
    # 5 ms switch interval every system call of the loop (recv, send, epoll) could wait up
    # to 5 ms for the GIL back (ping p99 ~20 ms at 10 kHz of events). A short interval
    # bounds that wait, and the timing thread's when the loop holds the GIL.
    sys.setswitchinterval(args.gil_switch_us / 1e6)
    server = PortsServer(backend, config, blocking_backend=True)
    if args.test_hooks:
        from copperline.host.ports.debug import debug_commands
        server.handlers.update(debug_commands(server))
    server.attach(loop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_stop)
    server.add_listener(listener.sock)
    if not args.quiet:
        print(_banner(listener.path, args, backend), flush=True)
    log.info("serving %s on %s", backend.name, listener.path)
    sockets.sd_notify(f"READY=1\nSTATUS=serving on {listener.path}")
    try:
        await server.serve_forever()
    finally:
        # Already stopping: a second SIGINT/SIGTERM (e.g. from a supervisor that forwards
        # signals) must not hit the closed loop's wakeup fd during the cleanup.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        sockets.sd_notify("STOPPING=1")
        log.info("shutting down: stopping programs, closing clients")
        await server.shutdown_gracefully()
    return EXIT_OK


class _StopBeforeServing(BaseException):
    """SIGINT/SIGTERM arrived before the event loop took over the signals.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way
    (e.g. the one reporting a backend that cannot open) turns a stop into an error exit.
    """


def _stop_before_serving(signum, frame):
    raise _StopBeforeServing()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # The socket exists before the event loop installs its signal handlers: a SIGTERM in
    # between must still mean "clean up and exit 0", not death by signal.
    previous = {sig: signal.signal(sig, _stop_before_serving)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _main(args)
    except _StopBeforeServing:
        log.info("stopped before serving")
        return EXIT_OK
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(args) -> int:
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="copperd %(levelname)s %(name)s: %(message)s")
    from copperline.host.ports import sockets
    from copperline.host.ports.server import ServerConfig

    for name in ("max_clients", "queue_events", "queue_bytes", "max_timelines", "gil_switch_us"):
        if getattr(args, name) < 1:
            print(f"copperd: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return EXIT_USAGE
    for name in ("idle_timeout", "stall_timeout"):
        if getattr(args, name) < 0:
            print(f"copperd: --{name.replace('_', '-')} must be >= 0", file=sys.stderr)
            return EXIT_USAGE
    try:
        config = ServerConfig(max_clients=args.max_clients, queue_max_msgs=args.queue_events,
                              queue_max_bytes=args.queue_bytes, caps=_caps(args),
                              max_timelines=args.max_timelines, idle_timeout=args.idle_timeout,
                              stall_timeout=args.stall_timeout)
        backend = make_backend(args)
    except UsageError as exc:
        print(f"copperd: {exc}", file=sys.stderr)
        return EXIT_USAGE

    try:
        activated = sockets.listen_fds()
        if len(activated) > 1:
            log.warning("systemd passed %d sockets; serving the first", len(activated))
        if activated:
            listener = sockets.activated_listener(activated[0])
            for extra in activated[1:]:
                extra.close()
        else:
            path = sockets.server_socket_path(args.socket)
            listener = sockets.bind_listener(path, mode=0o600 if args.private else 0o660,
                                             group=args.group)
    except sockets.SocketError as exc:
        print(f"copperd: {exc}", file=sys.stderr)
        return EXIT_ERROR

    try:
        try:
            backend.open()
        except Exception as exc:
            print(f"copperd: cannot open the {args.backend} backend: {exc}", file=sys.stderr)
            return EXIT_ERROR
        try:
            return asyncio.run(_run(args, backend, listener, config))
        finally:
            try:
                backend.close()
            except Exception as exc:
                log.warning("closing the backend: %s", exc)
    finally:
        listener.close()


if __name__ == "__main__":
    sys.exit(main())
