"""One ports client: a bounded reader (lines, passed fds), in-order dispatch of its
requests, and a bounded, batched writer.

Why by hand and not asyncio streams: streams cannot receive SCM_RIGHTS file descriptors,
and doing the framing here keeps every buffer strictly bounded (a line over 64 KiB is
refused without buffering the rest; passed fds are held only up to a per-line limit).
"""

from __future__ import annotations

import array
import asyncio
import collections
import fcntl
import logging
import os
import select
import socket
import struct
import termios
import time
from typing import TYPE_CHECKING, Any

from copperline.host.ports import protocol as P
from copperline.host.ports.caps import ALLOW_ALL
from copperline.host.ports.protocol import PortsError

if TYPE_CHECKING:
    from copperline.host.ports.server import PortsServer
    from copperline.host.ports.subscription import Subscription

log = logging.getLogger("copperline.host.ports.server")

_RECV_SIZE = 64 * 1024
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_SEND_BATCH = 256 * 1024


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
        self.fds_held = 0                  # fds in fd_marks (bounded by max_fds_per_request)
        self.fds_refused = 0               # fds closed unread: the pending line gets BAD_ARG
        self.paused_out = False            # lines wait in rbuf until the queue drains
        now = time.monotonic()
        self.last_rx = now                 # last bytes from the client (idle timeout)
        self.last_tx = now                 # last bytes the client took (stall timeout)
        self.delivered = 0                 # events queued for the client
        self.dropped_total = 0             # events dropped for backpressure
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
        if not data and not fds and not flags & _MSG_CTRUNC:
            self._on_eof()
            return
        self.last_rx = time.monotonic()
        limit = srv.config.max_fds_per_request
        if flags & _MSG_CTRUNC or self.fds_held + len(fds) > limit:
            # More fds than one request may carry, possibly over several messages of one
            # unfinished line: close them now (never hold more than the limit) and answer
            # the line with BAD_ARG when its newline arrives.
            refused = len(fds) + (1 if flags & _MSG_CTRUNC else 0)
            _close_fds(fds)
            fds = []
            self.fds_refused += refused
            srv.stats["fds_refused"] += refused
        if (not self.rbuf and not fds and not self.fd_marks and not self.fds_refused
                and data.find(b"\n") == len(data) - 1
                and len(data) <= srv.config.max_line + 1):
            # Fast path: exactly one complete line and nothing buffered.
            if len(data) > 1:
                self._handle_line(data[:-1], fds)
        else:
            if fds:
                self.fd_marks.append((len(self.rbuf), fds))
                self.fds_held += len(fds)
            self.rbuf += data
            self._process()
        self.flush()

    def _on_eof(self) -> None:
        """The client shut down its sending side. Half-close is honoured: while it has
        subscriptions or pending requests it keeps receiving (``printf ... | socat -t 5``).
        A peer that is gone altogether (closed, killed) is forgotten at once."""
        self.eof = True
        self._update_reading()
        if self.peer_gone():
            log.debug("client %d: peer closed", self.cid)
            self.server.stats["closed_dead_peer"] += 1
            self.close()
            return
        if self.rbuf.strip():
            log.debug("client %d: %d bytes of an unterminated line at EOF", self.cid, len(self.rbuf))
        self._close_if_done()

    def _close_if_done(self) -> None:
        """After the client's EOF: end the connection once nothing is left for it."""
        if self.eof and not self.subs and not self.waits and self.blocked is None \
                and not self.closing:
            self.closing = True
            self.flush()

    def peer_gone(self) -> bool:
        """True when the peer has closed both directions (exited, killed): POLLHUP.

        A half-close (``shutdown(SHUT_WR)``) only shows POLLRDHUP, so the two are told
        apart without waiting for a write to fail."""
        if self.closed:
            return True
        p = select.poll()
        p.register(self.fd, select.POLLIN | select.POLLRDHUP)
        try:
            return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
                       for _, ev in p.poll(0))
        except OSError:
            return True

    def _process(self) -> None:
        """Handle every complete line in the buffer (stop when a request must finish first)."""
        buf = self.rbuf
        max_line = self.server.config.max_line
        start = 0
        out_bound = 2 * self.server.config.queue_max_bytes
        while self.blocked is None and not self.closed and not self.closing:
            if self.out_bytes >= out_bound:
                # The client is not reading its replies: leave the rest of its lines in
                # the buffer until the queue drains (replies stay bounded too).
                self.paused_out = True
                break
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
            refused, self.fds_refused = self.fds_refused, 0
            start = nl + 1
            self.scan = start
            if line.strip():
                self._handle_line(line, fds, refused)
            else:
                _close_fds(fds)
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
        out = [fd for _, fds in taken for fd in fds]
        self.fds_held -= len(out)
        return out

    def _fatal(self, message: str) -> None:
        """Refuse with one error response and close without reading further."""
        self.send(P.encode(P.error_response(None, PortsError("BAD_CMD", message))))
        self.rbuf.clear()
        self.closing = True
        self._update_reading()
        self.flush()

    # -- requests ---------------------------------------------------------------------------
    def _handle_line(self, line: bytes, fds: list[int], refused_fds: int = 0) -> None:
        req_id = None
        stats = self.server.stats
        stats["requests"] += 1
        try:
            req = P.parse_request(line)
            req_id = req.req_id
            handler = self.server.handlers.get(req.cmd)
            if handler is None:
                raise PortsError("BAD_CMD", f"unknown command '{req.cmd}' "
                                 f"(known: {', '.join(self.server.handlers)})", field="cmd")
            stats["cmd." + req.cmd] += 1
            # ping is always allowed, whatever the token (service discovery).
            cap = (ALLOW_ALL if self.server.config.caps is None or req.cmd == "ping"
                   else self.server.cap_for(req))
            n_fds = len(fds) + refused_fds
            if n_fds > self.server.config.max_fds_per_request:
                raise PortsError("BAD_ARG", f"{n_fds} file descriptors passed with one request; "
                                 f"at most {self.server.config.max_fds_per_request}", field="fd_index")
            result = handler(self, req, cap, fds)
        except PortsError as err:
            _close_fds(fds)
            stats["error." + err.code] += 1
            self.send(P.encode(P.error_response(err.req_id if req_id is None else req_id, err)))
            return
        except Exception as exc:   # a bug must not take the daemon or the connection down
            _close_fds(fds)
            stats["error.INTERNAL"] += 1
            log.exception("client %d: internal error handling %r", self.cid, line[:200])
            self.send(P.encode(P.error_response(req_id, PortsError("INTERNAL", f"internal error: {exc}"))))
            return
        if isinstance(result, asyncio.Future) or asyncio.iscoroutine(result):
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
        task = coro if isinstance(coro, asyncio.Future) else self.loop.create_task(coro)
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
                err = PortsError("CANCELLED", "request cancelled")
            elif isinstance(t.exception(), PortsError):
                err = t.exception()
            elif t.exception() is not None:
                log.error("client %d: internal error in %s", self.cid, req.cmd,
                          exc_info=t.exception())
                err = PortsError("INTERNAL", f"internal error: {t.exception()}")
            else:
                err = None
            if err is None:
                msg = P.ok_response(req.req_id, t.result())
            else:
                self.server.stats["error." + err.code] += 1
                msg = P.error_response(req.req_id, err)
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
        if not self.out:
            self.last_tx = time.monotonic()     # the stall clock starts with a queue
        self.out.append(data)
        self.out_bytes += len(data)

    def send_event(self, data: bytes, keep: bool = False) -> bool:
        """Queue an event unless the queue is full (then count it as dropped).

        ``keep``: queue it even then (``state`` events and a subscription's end: rare,
        and a client must learn how a program ended)."""
        if self.closed or self.closing:
            return False
        if not self.out:
            self.last_tx = time.monotonic()
        cfg = self.server.config
        # Kept messages may overrun the event bound, up to a hard bound of their own.
        if keep and self.out_bytes < 4 * cfg.queue_max_bytes:
            self.out.append(data)
            self.out_bytes += len(data)
            self.delivered += 1
            return True
        if len(self.out) >= cfg.queue_max_msgs or self.out_bytes + len(data) > cfg.queue_max_bytes:
            # Full as far as we know: hand what the socket takes to the kernel first, so
            # that a burst larger than the queue reaches a client that keeps up.
            if not self.writing:
                self.flush(in_dispatch=True)
            if self.closed or len(self.out) >= cfg.queue_max_msgs or \
                    self.out_bytes + len(data) > cfg.queue_max_bytes:
                self.dropped += 1
                self.dropped_total += 1
                return False
        self.out.append(data)
        self.out_bytes += len(data)
        self.delivered += 1
        return True

    def unread_bytes(self) -> int:
        """Bytes sent but not yet read by the client (SIOCOUTQ); 0 where unknown."""
        try:
            return struct.unpack("i", fcntl.ioctl(self.fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return 0

    def drop_if_full(self) -> bool:
        """Count an event as dropped, without building it, when the queue is full (after
        handing the kernel what it takes). Lets a stalled subscriber cost next to nothing
        per event: no encoding for a queue that cannot take it."""
        if self.closed or self.closing:
            return True
        cfg = self.server.config
        if len(self.out) < cfg.queue_max_msgs and self.out_bytes < cfg.queue_max_bytes:
            return False
        if not self.writing:
            self.flush(in_dispatch=True)
        if self.closed or len(self.out) >= cfg.queue_max_msgs or \
                self.out_bytes >= cfg.queue_max_bytes:
            self.dropped += 1
            self.dropped_total += 1
            return True
        return False

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
            if n:
                self.last_tx = time.monotonic()
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
        if self.paused_out and self.out_bytes < 2 * self.server.config.queue_max_bytes:
            self.paused_out = False
            self.loop.call_soon(self._resume)
        self._update_reading()

    def _resume(self) -> None:
        """The queue drained: handle the lines left buffered, then read again."""
        if self.closed:
            return
        self._process()
        self.flush()

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
            self.server.fanout.remove_subscription(sub)
        for task in list(self.waits.values()):
            task.cancel()
        if self.blocked is not None:
            self.blocked.cancel()
        for _, fds in self.fd_marks:
            _close_fds(fds)
        self.fd_marks.clear()
        self.fds_held = 0
        self.server.stats["delivered_closed"] += self.delivered
        self.server.stats["dropped_closed"] += self.dropped_total
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

