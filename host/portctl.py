"""portctl: send one ports-protocol request (or a subscription) from the shell.

    portctl /run/copperline/copperd.sock '{"cmd":"ping"}'
    portctl @copperline/copperd '{"cmd":"subscribe","events":["irq"]}' --count 3
    portctl @copperline/copperd '{"cmd":"subscribe","events":["irq"]}' --timeout 5
    portctl SOCK '{"cmd":"load","args":{"fd_index":0}}' --fd prog.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time

EXIT_OK = 0
EXIT_ERROR_RESPONSE = 1
EXIT_USAGE = 2
EXIT_NO_CONNECT = 3
EXIT_TIMEOUT = 4
EXIT_CLOSED = 5
EXIT_INTERRUPTED = 130

EXIT_HELP = f"""exit status:
  {EXIT_OK}    ok: the response had "ok":true (with --stream: also after the timeout, EOF or Ctrl-C;
       with --count N: after N events)
  {EXIT_ERROR_RESPONSE}    the response had "ok":false (it is printed on stdout)
  {EXIT_USAGE}    usage error: bad options, JSON that is not an object, unreadable --fd file
  {EXIT_NO_CONNECT}    cannot connect: no socket there, or connection refused
  {EXIT_TIMEOUT}    no response within --timeout (with --count N: not N events within it)
  {EXIT_CLOSED}    the daemon closed the connection before responding (with --count N: before
       the N-th event)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C) while waiting for the response"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="portctl", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Send one request to a ports-protocol service and print the response "
                    "(and, with --stream, the events that follow) as JSON lines.",
        epilog=EXIT_HELP + "\n\nA 'subscribe' request implies --stream. SOCKET '@name' is an "
                           "abstract socket. See docs/ports.md.")
    p.add_argument("socket", metavar="SOCKET", help="socket path, or @name for an abstract socket")
    p.add_argument("request", metavar="JSON", help="the request: one JSON object")
    p.add_argument("--stream", action="store_true",
                   help="keep printing events until --timeout, EOF or Ctrl-C")
    p.add_argument("--no-stream", action="store_true", help="do not stream after subscribe")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="stop after N events (implies --stream); exit 0")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds to wait for the response (default 10); with --stream, how long "
                        "to stream in total (default: until EOF or Ctrl-C)")
    p.add_argument("--fd", action="append", default=[], metavar="FILE",
                   help="pass FILE's descriptor with the request (SCM_RIGHTS); fd_index 0, 1, ...")
    p.add_argument("--caps", metavar="TOKEN", help="add this capability token to the request")
    p.add_argument("--pretty", action="store_true", help="indent the JSON output")
    return p


def _emit(line: bytes, pretty: bool) -> None:
    if pretty:
        try:
            sys.stdout.write(json.dumps(json.loads(line), indent=2, ensure_ascii=False) + "\n")
        except json.JSONDecodeError:
            sys.stdout.write(line.decode("utf-8", "replace") + "\n")
    else:
        sys.stdout.write(line.decode("utf-8", "replace") + "\n")
    sys.stdout.flush()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    from copperline.host.client import send_with_fds
    from copperline.host.ports.sockets import to_address

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        req = json.loads(args.request)
    except json.JSONDecodeError as exc:
        print(f"portctl: JSON argument is not valid JSON: {exc.msg} at column {exc.colno}",
              file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(req, dict):
        print("portctl: JSON argument must be an object like '{\"cmd\":\"ping\"}'", file=sys.stderr)
        return EXIT_USAGE
    if args.timeout is not None and args.timeout <= 0:
        print("portctl: --timeout must be > 0", file=sys.stderr)
        return EXIT_USAGE
    if args.count is not None and (args.count < 1 or args.no_stream):
        print("portctl: --count needs N >= 1 and a stream (not --no-stream)", file=sys.stderr)
        return EXIT_USAGE
    if args.caps:
        req["caps"] = args.caps
    # --count is counted here, not sent as subscribe's "limit": a daemon that predates
    # "limit" refuses unknown arguments, and counting here works with every daemon.
    stream = args.stream or args.count is not None or \
        (req.get("cmd") == "subscribe" and not args.no_stream)
    timeout = args.timeout if args.timeout is not None else (None if stream else 10.0)

    fds = []
    try:
        for path in args.fd:
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        print(f"portctl: --fd {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout if timeout is not None else 10.0)
    try:
        sock.connect(to_address(args.socket))
    except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
        hint = " (is copperd running?)" if not isinstance(exc, PermissionError) else \
            " (are you in the socket's group?)"
        print(f"portctl: {args.socket}: {exc.strerror}{hint}", file=sys.stderr)
        return EXIT_NO_CONNECT
    except OSError as exc:
        print(f"portctl: {args.socket}: cannot connect: {exc}", file=sys.stderr)
        return EXIT_NO_CONNECT

    deadline = None if timeout is None else time.monotonic() + timeout
    got_response = False
    events = 0          # events printed (--count)
    buf = bytearray()
    # SIGTERM ends a stream like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    data = json.dumps(req, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    try:
        send_with_fds(sock, data, fds)
    except OSError as exc:
        print(f"portctl: {args.socket}: sending the request failed: {exc}", file=sys.stderr)
        return EXIT_CLOSED
    finally:
        for fd in fds:
            os.close(fd)
    try:
        while True:
            nl = buf.find(b"\n")
            if nl >= 0:
                line = bytes(buf[:nl])
                del buf[:nl + 1]
                if not line.strip():
                    continue
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    msg = {}
                is_event = isinstance(msg, dict) and "event" in msg and "ok" not in msg
                if is_event and not stream:
                    continue   # events of an earlier subscription on this connection: not asked for
                _emit(line, args.pretty)
                if is_event:
                    events += 1
                    if args.count is not None and events >= args.count:
                        return EXIT_OK
                if not is_event and not got_response:
                    got_response = True
                    if msg.get("ok") is not True:
                        return EXIT_ERROR_RESPONSE
                    if not stream:
                        return EXIT_OK
                continue
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                sock.settimeout(left)
            else:
                sock.settimeout(None)
            chunk = sock.recv(65536)
            if not chunk:
                if got_response and args.count is not None:
                    print(f"portctl: the daemon closed the connection after {events} of "
                          f"{args.count} events", file=sys.stderr)
                    return EXIT_CLOSED
                if got_response:
                    return EXIT_OK
                print("portctl: the daemon closed the connection without responding", file=sys.stderr)
                return EXIT_CLOSED
            buf += chunk
    except socket.timeout:
        if got_response and args.count is not None:
            print(f"portctl: {events} of {args.count} events within {timeout:g} s",
                  file=sys.stderr)
            return EXIT_TIMEOUT
        if got_response:
            return EXIT_OK
        print(f"portctl: no response within {timeout:g} s", file=sys.stderr)
        return EXIT_TIMEOUT
    except KeyboardInterrupt:
        return EXIT_OK if got_response else EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed (e.g. `| head -1`): not an error.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except (ConnectionResetError, OSError) as exc:
        if got_response:
            return EXIT_OK
        print(f"portctl: {args.socket}: {exc}", file=sys.stderr)
        return EXIT_CLOSED
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
