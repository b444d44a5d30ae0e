"""When the link retransmits, and how big its frames are: adapted to the line it runs on.

A fixed timeout must allow for the slowest line and host, so on a noisy line every lost
frame stalls the link for that long; a fixed frame size that suits a clean line almost
never gets through a noisy one (at a byte-error rate ``e`` a frame of ``n`` bytes gets
through with probability ``(1 - e) ** n``: 0.6 % for 510 bytes at ``e = 1e-2``).

:class:`RetransmitPolicy` keeps both in step with what the link measures:

* **timeout** — each attempt's timeout is its bytes' time on the line (both ways, at
  the baud rate) plus the *turnaround* the link has measured (the round trip less the
  line time: the board's answer time, a USB adapter's latency timer, the host's
  scheduling), estimated as in RFC 6298: ``srtt + 4 * rttvar``, at least
  ``min_slack_s``. Only first attempts are sampled (Karn's rule). A timeout in which no
  corrupted frame came back doubles the timeout (backoff, up to ``MAX_BACKOFF`` times and
  ``max_s``) and the backoff stays until an answer comes as fast as the estimate says, so
  a path slower than the estimate (a USB latency timer, a TCP hop that batches small
  packets) is learnt instead of retransmitted into; a corrupted frame, or a
  retransmission answered that fast, shows the lost attempts were noise, which needs no
  backoff. Before the first sample the timeout is ``max_s``.
* **frame size** — the share of attempts that got no valid answer and the bytes an
  attempt puts on the line (decaying averages) estimate the byte-error rate ``e``
  (``1 - (1 - share) ** (1 / bytes)``); :attr:`~RetransmitPolicy.words` is then the READ/WRITE frame size (a power of
  two up to the board's limit) with the most words delivered per second, counting the
  line time, the turnaround and the timeouts of the attempts that fail. On a clean line
  that is the largest frame; at ``e = 1e-2`` a few words.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetransmitPolicy", "frame_bytes", "MAX_BACKOFF"]

#: The most the timeout is multiplied by while answers come late.
MAX_BACKOFF = 8


def frame_bytes(words: int) -> int:
    """Bytes on the line, both ways, of a READ or WRITE of ``words`` words (request and
    response with their type, seq, address, count, status, CRC and delimiters)."""
    return 4 * words + 17


@dataclass
class RetransmitPolicy:
    """Per-link retransmission timeout and frame size (see the module docstring).

    Parameters
    ----------
    baud : int
        The line rate (10 bit times per byte).
    max_s : float
        The longest timeout of one attempt (and the timeout before any measurement).
    min_slack_s : float
        The least turnaround allowed on top of the line time.
    max_words, min_words : int
        The frame size's bounds (words of a READ or WRITE frame).
    memory : float
        Weight of the past in the error estimate, per attempt.
    """
    baud: int
    max_s: float
    min_slack_s: float = 0.005
    max_words: int = 126
    min_words: int = 2
    memory: float = 0.9
    srtt: float | None = None
    rttvar: float = 0.0
    backoff: int = 1
    failed: float = 0.0               # decaying share of attempts without a valid answer
    size: float = 0.0                 # decaying average of an attempt's bytes

    def line_s(self, nbytes: int) -> float:
        """Seconds ``nbytes`` take on the line (start, 8 data and stop bit each)."""
        return nbytes * 10 / self.baud

    def timeout(self, line_s: float) -> float:
        """The timeout of the next attempt of a request whose bytes take ``line_s`` on
        the line both ways."""
        if self.srtt is None:
            return self.max_s
        return min(self.max_s, self._base(line_s) * self.backoff)

    def _base(self, line_s: float) -> float:
        return line_s + max(self.min_slack_s, (self.srtt or 0.0) + 4 * self.rttvar)

    def _attempt(self, nbytes: int, ok: bool) -> None:
        k = self.memory
        self.failed = k * self.failed + (1 - k) * (0.0 if ok else 1.0)
        self.size = (k * self.size + (1 - k) * nbytes) if self.size else float(nbytes)

    def answered(self, rtt_s: float, line_s: float, attempt: int) -> None:
        """A request was answered ``rtt_s`` after its last attempt was sent."""
        self._attempt(round(line_s * self.baud / 10), True)
        if attempt:                       # whose answer was it? (Karn): no sample
            if rtt_s <= self._base(line_s):
                self.backoff = 1          # as fast as ever: the lost attempts were noise
            return
        self.backoff = 1
        turn = max(0.0, rtt_s - line_s)
        if self.srtt is None:
            self.srtt, self.rttvar = turn, turn / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - turn)
            self.srtt = 0.875 * self.srtt + 0.125 * turn

    def timed_out(self, line_s: float, corrupted: bool = False) -> None:
        """An attempt whose bytes take ``line_s`` got no valid answer in time;
        ``corrupted``: a damaged frame came back meanwhile (noise, not a slow path)."""
        self._attempt(round(line_s * self.baud / 10), False)
        if not corrupted:
            self.backoff = min(self.backoff * 2, MAX_BACKOFF)

    @property
    def byte_error_rate(self) -> float:
        """The estimated chance that a byte on the line is lost or corrupted."""
        if not self.size:
            return 0.0
        return 1.0 - (1.0 - min(self.failed, 0.99)) ** (1.0 / self.size)

    @property
    def words(self) -> int:
        """The READ/WRITE frame size with the best expected throughput now."""
        e = self.byte_error_rate
        turn = self.min_slack_s if self.srtt is None else self.srtt
        wait = max(self.min_slack_s, turn + 4 * self.rttvar)
        best, best_rate = self.max_words, -1.0
        w = self.max_words
        while True:
            line = self.line_s(frame_bytes(w))
            ok = (1.0 - e) ** frame_bytes(w)
            # an attempt costs its line time and the turnaround, a failed one its timeout
            cost = line + turn + (1.0 - ok) * (line + wait)
            rate = w * ok / cost
            if rate > best_rate:
                best, best_rate = w, rate
            if w <= self.min_words:
                return best
            w = max(self.min_words, w // 2)

    def to_json(self) -> dict:
        return {"srtt_ms": None if self.srtt is None else round(self.srtt * 1e3, 3),
                "rttvar_ms": round(self.rttvar * 1e3, 3),
                "byte_error_rate": round(self.byte_error_rate, 6), "frame_words": self.words}
