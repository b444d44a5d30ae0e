"""A subscription: which events one client asked for, and how many (``limit``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from copperline.host.ports.caps import ALLOW_ALL, CapEntry

if TYPE_CHECKING:
    from copperline.host.ports.connection import Connection


@dataclass
class Subscription:
    sid: int
    conn: "Connection"
    kinds: frozenset | None           # None = all
    tags: frozenset | None = None
    progs: frozenset | None = None
    regs: frozenset | None = None
    cap: CapEntry = ALLOW_ALL
    req_id: Any = None
    prefix: bytes = b""
    limit: int | None = None          # end after this many matching events
    count: int = 0                    # matching events so far

    def matches(self, ev: dict, kind: str) -> bool:
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.tags is not None and kind == "irq" and ev.get("tag") not in self.tags:
            return False
        if self.progs is not None and "prog" in ev and ev["prog"] not in self.progs:
            return False
        if kind == "reg":
            if self.regs is not None and ev.get("reg") not in self.regs:
                return False
            if self.cap.regs is not None and not self.cap.allows_reg(ev.get("reg", "")):
                return False
        return True
