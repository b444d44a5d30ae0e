"""Capability tokens: which commands and registers a bearer token allows.

A caps file is a JSON object mapping each token to what it allows::

    {
      "cap-viewer": {"commands": ["status", "list", "regs", "subscribe"], "regs": ["layer[1].*"]},
      "cap-admin":  {"commands": ["*"]},
      "":           {"commands": ["list"]}
    }

``commands`` lists command names (``"*"`` = all); ``regs`` lists register names or
patterns where ``*`` matches any run of characters (``"layer[1].*"``); a missing ``regs``
allows every register. The entry with the empty key applies to requests that carry no
``caps``; without it such requests may only ``ping``. ``ping`` is always allowed so that
clients can discover the service. Without any caps configuration everything is allowed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from copperline.host.ports.protocol import COMMANDS, PortsError


class CapsConfigError(ValueError):
    """A caps file or flag that cannot be used; the message names where."""


def _pattern(p: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in p) + r"\Z")


@dataclass(frozen=True)
class CapEntry:
    """What one token allows: ``commands``/``regs`` of None mean "everything"."""
    commands: frozenset | None
    regs: tuple[re.Pattern, ...] | None = None

    def allows_cmd(self, cmd: str) -> bool:
        return cmd == "ping" or self.commands is None or cmd in self.commands

    def allows_reg(self, name: str) -> bool:
        return self.regs is None or any(p.match(name) for p in self.regs)


ALLOW_ALL = CapEntry(None, None)
PING_ONLY = CapEntry(frozenset({"ping"}), ())


def _entry(obj, where: str) -> CapEntry:
    if not isinstance(obj, dict):
        raise CapsConfigError(f"{where}: must be an object with 'commands' (and optional 'regs')")
    extra = set(obj) - {"commands", "regs"}
    if extra:
        raise CapsConfigError(f"{where}: unknown member '{sorted(extra)[0]}' (expected commands, regs)")
    cmds = obj.get("commands", [])
    if not isinstance(cmds, list) or not all(isinstance(c, str) for c in cmds):
        raise CapsConfigError(f"{where}.commands: must be a list of command names")
    for c in cmds:
        if c != "*" and c not in COMMANDS:
            raise CapsConfigError(f"{where}.commands: unknown command '{c}' "
                                  f"(known: {', '.join(COMMANDS)}, or *)")
    regs = obj.get("regs")
    if regs is not None and (not isinstance(regs, list) or not all(isinstance(r, str) for r in regs)):
        raise CapsConfigError(f"{where}.regs: must be a list of register names/patterns")
    return CapEntry(None if "*" in cmds else frozenset(cmds),
                    None if regs is None or "*" in regs else tuple(_pattern(r) for r in regs))


class CapTable:
    """Token -> :class:`CapEntry`; :meth:`lookup` raises DENIED for an unknown token."""

    def __init__(self, entries: dict[str, CapEntry]) -> None:
        self.entries = dict(entries)

    @classmethod
    def from_json(cls, obj, source: str) -> "CapTable":
        if not isinstance(obj, dict):
            raise CapsConfigError(f"{source}: must be a JSON object mapping tokens to entries")
        return cls({tok: _entry(v, f"{source}: token {tok!r}") for tok, v in obj.items()})

    @classmethod
    def from_file(cls, path: str) -> "CapTable":
        try:
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
        except OSError as exc:
            raise CapsConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise CapsConfigError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
        return cls.from_json(obj, path)

    def add_flag(self, spec: str) -> None:
        """``TOKEN=CMD,CMD[:REG,REG]`` (the ``--cap`` flag)."""
        token, sep, rest = spec.partition("=")
        if not sep:
            raise CapsConfigError(f"--cap {spec!r}: expected TOKEN=COMMANDS[:REGS]")
        cmds, _, regs = rest.partition(":")
        obj = {"commands": [c for c in cmds.split(",") if c]}
        if regs:
            obj["regs"] = [r for r in regs.split(",") if r]
        self.entries[token] = _entry(obj, f"--cap {token!r}")

    def lookup(self, token: str | None) -> CapEntry:
        if token is None:
            return self.entries.get("", PING_ONLY)
        entry = self.entries.get(token) if token else None
        if entry is None:
            raise PortsError("DENIED", "unknown capability token", field="caps")
        return entry
