"""Ports protocol v0: envelopes, the request-id rule, error codes, argument checks.

One UTF-8 JSON object per line. A request is either in the **args form**::

    {"id": "r1", "cmd": "start", "args": {"id": 42}, "caps": "tok"}

where the top-level ``id`` is always the *request* id and every argument sits in
``args``, or in the seed's **flat form** (no ``args`` member)::

    {"cmd": "start", "id": 42, "req": "r1"}

where every top-level member other than ``cmd``, ``caps`` and ``req`` is an argument.
In the flat form ``id`` is an *argument* for the commands in :data:`TARGET_ID_COMMANDS`
(``start stop unload status wait cancel``: the program, or for ``cancel`` the request,
the command is about) and the request id for every other command; ``req`` always carries
the request id. The rule depends only on the form and the command name, never on the
value's type. See docs/ports.md ("Request ids").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from copperline.firmware.trace import KNOWN_KINDS

PROTOCOL_VERSION = 0
#: Longest request line accepted, in bytes, not counting the newline.
MAX_LINE = 64 * 1024
#: Longest request id string.
MAX_ID_LEN = 256

ERROR_CODES = ("BAD_CMD", "BAD_ARG", "NOT_FOUND", "DENIED", "BUSY", "TIMEOUT", "INTERNAL",
               # copperd's domain codes
               "BAD_FORMAT", "CANCELLED",
               # the fpga backend: no board found, or the board was lost
               "NO_BOARD")

#: Every command copperd understands (``debug.*`` only with --test-hooks).
COMMANDS = ("ping", "load", "start", "stop", "unload", "status", "list", "subscribe",
            "unsubscribe", "cancel", "wait", "fence", "regs", "stats", "debug.emit", "debug.stats")

#: Flat form: for these commands a top-level ``id`` is an argument, not the request id.
TARGET_ID_COMMANDS = frozenset({"start", "stop", "unload", "status", "wait", "cancel"})

#: Event kinds a subscription can ask for ("all" = every kind).
EVENT_KINDS = KNOWN_KINDS + ("error",)

_ENVELOPE_KEYS = frozenset({"id", "cmd", "args", "caps"})
_FLAT_ENVELOPE = frozenset({"id", "cmd", "caps", "req"})


class PortsError(Exception):
    """A protocol-level failure: becomes ``{"ok":false,"error":{"code","message"}}``.

    ``field`` names the offending argument (BAD_ARG); ``req_id`` is the request id to
    echo when it is known (None otherwise).
    """

    def __init__(self, code: str, message: str, *, field: str | None = None,
                 req_id: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
        self.req_id = req_id

    def to_json(self) -> dict:
        err = {"code": self.code, "message": self.message}
        if self.field is not None:
            err["field"] = self.field
        return err


@dataclass
class Request:
    """A parsed request: ``req_id`` is None when the request carried none."""
    cmd: str
    args: dict = field(default_factory=dict)
    req_id: Any = None
    caps: str | None = None
    form: str = "flat"   # "args" or "flat"


def _check_req_id(value: Any, where: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PortsError("BAD_CMD", f"{where} must be a string or an integer, "
                         f"not {type(value).__name__}", field=where)
    if isinstance(value, str) and len(value) > MAX_ID_LEN:
        raise PortsError("BAD_CMD", f"{where} is longer than {MAX_ID_LEN} characters", field=where)
    return value


def parse_request(line: bytes | str) -> Request:
    """Parse one request line (without its newline); raises :class:`PortsError`.

    The error's ``req_id`` is set when the request id could be determined, so that the
    error response still echoes it.
    """
    if not isinstance(line, str):
        try:
            text = (line if type(line) is bytes else bytes(line)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PortsError("BAD_CMD", f"request is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = line
    obj = loads_checked(text, "request", "BAD_CMD")
    if type(obj) is not dict:
        raise PortsError("BAD_CMD", f"request must be a JSON object, not {type(obj).__name__}")

    cmd = obj.get("cmd")
    caps = obj.get("caps")
    if "args" in obj:
        # args form: id is the request id; arguments only in args.
        req_id = _check_req_id(obj.get("id"), "id")
        args = obj["args"]
        if not isinstance(args, dict):
            raise PortsError("BAD_CMD", "args must be a JSON object", field="args", req_id=req_id)
        extra = sorted(set(obj) - _ENVELOPE_KEYS)
        if extra:
            raise PortsError("BAD_CMD", f"unexpected top-level member(s) {', '.join(extra)} "
                             "(with 'args', every argument goes inside args)",
                             field=extra[0], req_id=req_id)
        form = "args"
    else:
        form = "flat"
        args = {k: v for k, v in obj.items() if k not in _FLAT_ENVELOPE} if len(obj) > 1 else {}
        req_id = _check_req_id(obj["req"], "req") if "req" in obj else None
        if "id" in obj:
            if isinstance(cmd, str) and cmd in TARGET_ID_COMMANDS:
                args["id"] = obj["id"]
            elif "req" in obj:
                raise PortsError("BAD_CMD", f"both 'id' and 'req' given, and '{cmd}' takes no "
                                 "id argument: send the request id once", field="id",
                                 req_id=req_id)
            else:
                req_id = _check_req_id(obj["id"], "id")
    if not isinstance(cmd, str) or not cmd:
        raise PortsError("BAD_CMD", "missing 'cmd' (a command name string)", field="cmd",
                         req_id=req_id)
    if caps is not None and not isinstance(caps, str):
        raise PortsError("BAD_CMD", "caps must be a string token", field="caps", req_id=req_id)
    return Request(cmd=cmd, args=args, req_id=req_id, caps=caps, form=form)


# -- responses ---------------------------------------------------------------------------

_RESERVED = frozenset({"ok", "id", "result", "error"})


def ok_response(req_id: Any, result: dict) -> dict:
    """The success response: ``result`` plus its members mirrored at the top level.

    The top-level ``id`` is the request id; when the request had none it is
    ``result["id"]`` if the result has one (``load`` -> the program id, as in the seed's
    ``{"ok":true,"id":42}``), else null.
    """
    resp: dict = {"ok": True, "id": req_id if req_id is not None else result.get("id")}
    for k, v in result.items():
        if k not in _RESERVED:
            resp[k] = v
    resp["result"] = result
    return resp


def error_response(req_id: Any, err: PortsError) -> dict:
    return {"ok": False, "id": req_id, "error": err.to_json()}


# One encoder for everything: json.dumps() with options builds a new encoder per call.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.JSONDecoder().decode


_dumps_ascii = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
# A surrogate escape (\\ud800-\\udfff): JSON allows a lone one, UTF-8 cannot carry it.
_SURROGATE_ESCAPE = re.compile(r"\\[uU][dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_path(obj, path: str) -> str | None:
    """Where in ``obj`` a string holds a lone surrogate (``args.program.program[1].tag``)."""
    stack = [(obj, path)]
    while stack:               # iterative: the depth is bounded by the parser anyway
        o, p = stack.pop()
        if isinstance(o, str):
            if _SURROGATE.search(o):
                return p
        elif isinstance(o, dict):
            for k, v in o.items():
                if _SURROGATE.search(k):
                    return f"{p}.{k!a}" if p else ascii(k)
                stack.append((v, f"{p}.{k}" if p else k))
        elif isinstance(o, list):
            stack.extend((v, f"{p}[{i}]") for i, v in enumerate(o))
    return None


def loads_checked(text: str, what: str, code: str = "BAD_CMD", field: str | None = None):
    """Parse JSON text from a client; every way it can be bad is a :class:`PortsError`.

    Beyond syntax: nesting deeper than the recursion limit, integers over Python's
    4300-digit conversion limit, and strings holding lone surrogates (``"\\udfff"`` is
    valid JSON but not Unicode: such a string could never be encoded into a reply, a
    trace or an image).
    """
    try:
        obj = _loads(text)
    except json.JSONDecodeError as exc:
        raise PortsError(code, f"{what} is not valid JSON: {exc.msg} at column {exc.colno}",
                         field=field) from None
    except RecursionError:
        raise PortsError(code, f"{what} is not valid JSON: nested too deeply", field=field) from None
    except ValueError as exc:     # "Exceeds the limit (4300 digits) for integer string conversion"
        detail = ("a number has more digits than the 4300 accepted" if "digits" in str(exc)
                  else str(exc))
        raise PortsError(code, f"{what} is not acceptable JSON: {detail}", field=field) from None
    if "\\" in text and _SURROGATE_ESCAPE.search(text):
        where = _surrogate_path(obj, "")
        if where is not None:
            raise PortsError(code, f"{what}: the string at {where or 'top level'} holds a lone "
                             "UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode",
                             field=(where or None) if field is None else field)
    return obj


def dumps(msg) -> str:
    """Compact JSON text of ``msg``."""
    return _dumps(msg)


def encode(msg: dict) -> bytes:
    """One message as a compact NDJSON line (UTF-8, newline-terminated).

    Never raises for text: a string that UTF-8 cannot carry (a lone surrogate) makes the
    line ASCII with ``\\u`` escapes instead, so a reply always goes out."""
    text = _dumps(msg)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (_dumps_ascii(msg) + "\n").encode("ascii")


# -- argument helpers ----------------------------------------------------------------------

def arg_int(args: dict, name: str, *, required: bool = True, default: int | None = None,
            minimum: int | None = None, maximum: int | None = None) -> int | None:
    """An integer argument; BAD_ARG naming ``name`` when missing or wrong."""
    if name not in args:
        if required:
            raise PortsError("BAD_ARG", f"missing argument '{name}' (an integer)", field=name)
        return default
    v = args[name]
    if isinstance(v, bool) or not isinstance(v, int):
        raise PortsError("BAD_ARG", f"'{name}' must be an integer, not {json.dumps(v)[:40]}",
                         field=name)
    if minimum is not None and v < minimum:
        raise PortsError("BAD_ARG", f"'{name}' must be >= {minimum} (got {v})", field=name)
    if maximum is not None and v > maximum:
        raise PortsError("BAD_ARG", f"'{name}' must be <= {maximum} (got {v})", field=name)
    return v


def arg_number(args: dict, name: str, *, default: float, minimum: float, maximum: float) -> float:
    if name not in args:
        return default
    v = args[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not minimum <= v <= maximum:
        raise PortsError("BAD_ARG", f"'{name}' must be a number in [{minimum}, {maximum}] "
                         f"(got {json.dumps(v)[:40]})", field=name)
    return float(v)


def arg_str(args: dict, name: str, *, required: bool = True, max_len: int = 256) -> str | None:
    if name not in args:
        if required:
            raise PortsError("BAD_ARG", f"missing argument '{name}' (a string)", field=name)
        return None
    v = args[name]
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise PortsError("BAD_ARG", f"'{name}' must be a non-empty string of at most {max_len} "
                         f"characters (got {json.dumps(v)[:40]})", field=name)
    return v


def arg_list(args: dict, name: str, item_type: type, *, required: bool = False,
             max_items: int = 64) -> list | None:
    """A list argument; a single value is accepted as a one-item list."""
    if name not in args:
        if required:
            raise PortsError("BAD_ARG", f"missing argument '{name}'", field=name)
        return None
    v = args[name]
    items = v if isinstance(v, list) else [v]
    tname = item_type.__name__.replace("str", "string").replace("int", "integer")
    if not items or len(items) > max_items:
        raise PortsError("BAD_ARG", f"'{name}' must hold 1..{max_items} items", field=name)
    for it in items:
        if isinstance(it, bool) or not isinstance(it, item_type):
            raise PortsError("BAD_ARG", f"'{name}' must be a {tname} or a list of them "
                             f"(got {json.dumps(it)[:40]})", field=name)
    return items


def check_no_extra(args: dict, allowed: tuple[str, ...], cmd: str) -> None:
    extra = sorted(set(args) - set(allowed))
    if extra:
        hint = f" (accepted: {', '.join(allowed)})" if allowed else " (it takes no arguments)"
        raise PortsError("BAD_ARG", f"{cmd}: unknown argument '{extra[0]}'{hint}", field=extra[0])
