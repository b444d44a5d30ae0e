"""copperd's commands: argument checks, capability checks, and the backend calls.

A mixin of :class:`~copperline.host.ports.server.PortsServer`: each ``cmd_<name>`` takes
``(conn, req, cap, fds)`` and returns the result object, or a coroutine for the server to
await (backend calls in the worker thread).
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time

from copperline.host.backend import BackendError, ProgramState
from copperline.host.ports import protocol as P
from copperline.host.ports.protocol import PortsError

log = logging.getLogger("copperline.host.ports.server")

TERMINAL_STATES = ("done", "stopped", "faulted")


class Commands:
    """The command handlers (mixed into PortsServer)."""

    # -- commands -----------------------------------------------------------------------------
    def cmd_ping(self, conn, req, cap, fds):
        if req.args:
            P.check_no_extra(req.args, (), "ping")
        return self.ping_result

    def cmd_load(self, conn, req, cap, fds):
        a = req.args
        P.check_no_extra(a, ("program", "image", "fd_index", "source", "surfaces"), "load")
        given = [k for k in ("program", "image", "fd_index") if k in a]
        if len(given) != 1:
            raise PortsError("BAD_ARG", "load needs exactly one of 'program' (program JSON), "
                             "'image' (base64 .cop) or 'fd_index' (a file passed by SCM_RIGHTS)"
                             + (f"; got {', '.join(given)}" if given else ""),
                             field=given[1] if len(given) > 1 else "program")
        source = P.arg_str(a, "source", required=False) or (
            f"<load request {req.req_id}>" if req.req_id is not None else "<load request>")
        if "program" in a:
            if not isinstance(a["program"], dict):
                raise PortsError("BAD_ARG", "'program' must be a program JSON object", field="program")
            image = _compile(a["program"], source)
        elif "image" in a:
            if not isinstance(a["image"], str):
                raise PortsError("BAD_ARG", "'image' must be a base64 string", field="image")
            import base64
            import binascii
            try:
                data = base64.b64decode(a["image"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise PortsError("BAD_ARG", f"'image' is not valid base64: {exc}", field="image") from None
            image = _parse_image(data, source)
        else:
            idx = P.arg_int(a, "fd_index", minimum=0)
            if idx >= len(fds):
                raise PortsError("BAD_ARG", f"fd_index {idx}: the request carried {len(fds)} file "
                                 "descriptor(s) (send them with the request line, SCM_RIGHTS)",
                                 field="fd_index")
            data = _read_fd(fds[idx], self.config.max_file_bytes)
            if "source" not in a:
                source = f"<fd {idx} of request {req.req_id}>"
            if data[:4] == b"COPR":
                image = _parse_image(data, source)
            else:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise PortsError("BAD_FORMAT", f"{source}: neither a Copper image nor program "
                                     f"JSON: not UTF-8 (byte {exc.start})", field="fd_index") from None
                doc = P.loads_checked(text, f"{source}: neither a Copper image nor program JSON;",
                                      "BAD_FORMAT", field="fd_index")
                if not isinstance(doc, dict):
                    raise PortsError("BAD_FORMAT", f"{source}: a program file holds a JSON object, "
                                     f"not {type(doc).__name__}", field="fd_index")
                image = _compile(doc, source)
        try:
            # Everything that can fail on the image's contents fails here, before the
            # backend holds a slot for it (no "ghost" program behind an error).
            sha = image.sha256()
            written = _registers_written(image)
        except Exception as exc:
            raise PortsError("BAD_FORMAT", f"{source}: the image cannot be used: {exc}",
                             field="program") from None
        # Authorise what runs, not what the image's tables claim: the registers come
        # from the decoded MOVE/ADD ops.
        denied = sorted(r for r in written if not cap.allows_reg(r))
        if denied:
            raise PortsError("DENIED", f"the program writes register {denied[0]}, which this "
                             "token may not write", field="program")

        surfaces = _passed_surfaces(a.get("surfaces"), fds, image)

        def loaded(pid):
            self._prog_regs[pid] = written
            return {"id": pid, "program": sha, "words": len(image.code)}
        return self.calls.then(self.calls.call(self.backend.load, image, surfaces), loaded)

    def _prog_cmd(self, req, cap, name, fn):
        P.check_no_extra(req.args, ("id",), name)
        pid = P.arg_int(req.args, "id", minimum=0)
        if cap.regs is not None:
            # A register-restricted token may only control programs whose every written
            # register it may write (whoever loaded them).
            written = self._prog_regs.get(pid)
            if written is None:
                raise PortsError("NOT_FOUND", f"no program with id {pid}", field="id")
            denied = sorted(r for r in written if not cap.allows_reg(r))
            if denied:
                raise PortsError("DENIED", f"program {pid} writes register {denied[0]}, which "
                                 f"this token may not write; it may not {name} it", field="id")

        def done(_):
            self._poke(pid)
            if name == "unload":
                self._prog_regs.pop(pid, None)
            return {"id": pid}
        return self.calls.then(self.calls.call(fn, pid), done)

    def cmd_start(self, conn, req, cap, fds):
        return self._prog_cmd(req, cap, "start", self.backend.start)

    def cmd_stop(self, conn, req, cap, fds):
        return self._prog_cmd(req, cap, "stop", self.backend.stop)

    def cmd_unload(self, conn, req, cap, fds):
        return self._prog_cmd(req, cap, "unload", self.backend.unload)

    def cmd_status(self, conn, req, cap, fds):
        P.check_no_extra(req.args, ("id",), "status")
        pid = P.arg_int(req.args, "id", minimum=0)
        return self.calls.then(self.calls.call(self.backend.status, pid), lambda st: st.to_json())

    def cmd_list(self, conn, req, cap, fds):
        P.check_no_extra(req.args, (), "list")
        return self.calls.then(self.calls.call(self.backend.programs),
                          lambda progs: {"programs": [p.to_json() for p in progs]})

    def cmd_fence(self, conn, req, cap, fds):
        P.check_no_extra(req.args, ("timeline", "value"), "fence")
        tl = P.arg_str(req.args, "timeline", max_len=64)
        value = P.arg_int(req.args, "value", minimum=0)
        if tl not in self.timelines and len(self.timelines) >= self.config.max_timelines:
            # Each timeline's value must be kept (fences are monotonic): bound how many.
            raise PortsError("BUSY", f"at most {self.config.max_timelines} fence timelines; "
                             f"'{tl}' would be one more", field="timeline")

        def done(_):
            self.timelines.add(tl)
            return {"timeline": tl, "value": value}
        return self.calls.then(self.calls.call(self.backend.fence, tl, value), done)

    def cmd_regs(self, conn, req, cap, fds):
        P.check_no_extra(req.args, ("regs",), "regs")
        names = P.arg_list(req.args, "regs", str, max_items=256)
        if names:
            for n in names:
                if not cap.allows_reg(n):
                    raise PortsError("DENIED", f"register {n} is not readable with this token",
                                     field="regs")

        def pick(regs: dict):
            if names:
                missing = [n for n in names if n not in regs]
                if missing:
                    raise PortsError("BAD_ARG", f"unknown register '{missing[0]}' "
                                     "(expected layer[N].x|y|alpha|z|visible)", field="regs")
                return {"regs": {n: regs[n] for n in names}}
            return {"regs": {k: v for k, v in regs.items() if cap.allows_reg(k)}}
        return self.calls.then(self.calls.call(self.backend.regs), pick)

    def cmd_subscribe(self, conn, req, cap, fds):
        a = req.args
        P.check_no_extra(a, ("events", "tag", "prog", "reg", "limit"), "subscribe")
        limit = P.arg_int(a, "limit", required=False, minimum=1, maximum=2**53)
        kinds = P.arg_list(a, "events", str) or ["all"]
        for k in kinds:
            if k != "all" and k not in P.EVENT_KINDS:
                raise PortsError("BAD_ARG", f"unknown event kind '{k}' (known: all, "
                                 f"{', '.join(P.EVENT_KINDS)})", field="events")
        if len(conn.subs) >= self.config.max_subs_per_client:
            raise PortsError("BUSY", f"at most {self.config.max_subs_per_client} subscriptions "
                             "per connection")
        tags = P.arg_list(a, "tag", str)
        progs = P.arg_list(a, "prog", int)
        regs = P.arg_list(a, "reg", str)
        if regs and cap.regs is not None:
            for r in regs:
                if not cap.allows_reg(r):
                    raise PortsError("DENIED", f"register {r} is not readable with this token",
                                     field="reg")
        sub = self.fanout.subscribe(
            conn, None if "all" in kinds else frozenset(kinds),
            tags=frozenset(tags) if tags else None, progs=frozenset(progs) if progs else None,
            regs=frozenset(regs) if regs else None, cap=cap, req_id=req.req_id, limit=limit)
        out = {"sub": sub.sid, "events": sorted(set(kinds))}
        for k, v in (("tag", tags), ("prog", progs), ("reg", regs), ("limit", limit)):
            if v:
                out[k] = v
        return out

    def cmd_unsubscribe(self, conn, req, cap, fds):
        P.check_no_extra(req.args, ("sub",), "unsubscribe")
        sid = P.arg_int(req.args, "sub", minimum=0)
        sub = conn.subs.get(sid)
        if sub is None:
            raise PortsError("NOT_FOUND", f"no subscription {sid} on this connection", field="sub")
        self.fanout.remove_subscription(sub)
        return {"sub": sid}

    def cmd_cancel(self, conn, req, cap, fds):
        """Cancel this connection's pending request ``id`` (a ``wait``) or end the
        subscription made by request ``id``. Idempotent: nothing pending -> cancelled false."""
        P.check_no_extra(req.args, ("id",), "cancel")
        if "id" not in req.args:
            raise PortsError("BAD_ARG", "missing argument 'id' (the request id to cancel)", field="id")
        target = P._check_req_id(req.args["id"], "id")
        task = conn.waits.get(target)
        if task is not None and not task.done():
            task.cancel()
            return {"cancelled": True, "target": target}
        for sub in list(conn.subs.values()):
            if sub.req_id is not None and sub.req_id == target:
                self.fanout.remove_subscription(sub)
                return {"cancelled": True, "target": target, "sub": sub.sid}
        return {"cancelled": False, "target": target}

    def cmd_wait(self, conn, req, cap, fds):
        """Answer once program ``id`` is in one of ``state`` (default: done/stopped/faulted)."""
        a = req.args
        P.check_no_extra(a, ("id", "state", "timeout"), "wait")
        pid = P.arg_int(a, "id", minimum=0)
        states = P.arg_list(a, "state", str) or list(TERMINAL_STATES)
        valid = {s.value for s in ProgramState} | {"unloaded"}
        for s in states:
            if s not in valid:
                raise PortsError("BAD_ARG", f"unknown state '{s}' (known: {', '.join(sorted(valid))})",
                                 field="state")
        timeout = P.arg_number(a, "timeout", default=30.0, minimum=0.0, maximum=3600.0)
        if req.req_id is None:
            raise PortsError("BAD_ARG", "wait needs a request id (so that it can be cancelled)",
                             field="id" if req.form == "args" else "req")
        if req.req_id in conn.waits:
            raise PortsError("BAD_ARG", f"a wait with request id {req.req_id!r} is already pending",
                             field="id")
        if len(conn.waits) >= self.config.max_waits_per_client:
            raise PortsError("BUSY", f"at most {self.config.max_waits_per_client} pending waits")
        return self._wait(pid, frozenset(states), timeout)

    async def _wait(self, pid, states, timeout):
        # Register before asking for the current state: no transition can slip between.
        fut = self.fanout.add_waiter(pid, states)
        try:
            current = (await self.calls.wrap(self.backend.status, pid)).state.value
        except BaseException:
            fut.cancel()
            self.fanout.drop_waiter(pid, fut)
            raise
        if current in states:
            fut.cancel()
            self.fanout.drop_waiter(pid, fut)
        else:
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise PortsError("TIMEOUT", f"program {pid} did not reach "
                                 f"{'/'.join(sorted(states))} within {timeout:g} s") from None
            finally:
                if not fut.done():
                    fut.cancel()
                self.fanout.drop_waiter(pid, fut)
        try:
            return (await self.calls.raw(self.backend.status, pid)).to_json()
        except BackendError:
            return {"id": pid, "state": "unloaded"}

    def cmd_stats(self, conn, req, cap, fds):
        """Counters: connections, requests and errors by code, events delivered and dropped
        per client, VM lateness percentiles, and the backend's own (the link's) counters."""
        P.check_no_extra(req.args, (), "stats")
        st = self.stats
        clients = [{"client": c.cid, "subscriptions": len(c.subs), "waits": len(c.waits),
                    "queued_bytes": c.out_bytes, "delivered": c.delivered,
                    "dropped": c.dropped_total}
                   for c in self.conns.values()]
        lat = sorted(self.fanout.lateness)
        out = {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "connections": {"open": len(self.conns), "accepted": st["connections"],
                            "refused_busy": st["busy"], "accept_errors": st["accept_errors"],
                            "closed_idle": st["closed_idle"], "closed_stalled": st["closed_stalled"],
                            "closed_dead_peer": st["closed_dead_peer"]},
            "requests": {"total": st["requests"],
                         "by_cmd": {k[4:]: v for k, v in sorted(st.items()) if k.startswith("cmd.")}},
            "errors": {k[6:]: v for k, v in sorted(st.items()) if k.startswith("error.")},
            "events": {"from_backend": st["events"], "inbox_dropped": st["inbox_dropped"],
                       "delivered": st["delivered_closed"] + sum(c["delivered"] for c in clients),
                       "dropped": st["dropped_closed"] + sum(c["dropped"] for c in clients)},
            "clients": clients,
            "fds_refused": st["fds_refused"],
            "timelines": len(self.timelines),
            "lateness_us": ({"samples": len(lat), "p50": round(_pct(lat, 50), 1),
                             "p99": round(_pct(lat, 99), 1), "max": round(lat[-1], 1)}
                            if lat else {"samples": 0}),
        }
        backend_stats = getattr(self.backend, "stats", None)
        link_stats = getattr(self.backend, "link_stats", None)
        try:
            if callable(backend_stats):
                out["backend"] = backend_stats()
            if callable(link_stats):
                out["link"] = link_stats()
        except Exception as exc:     # counters must never fail the command
            log.warning("backend counters: %s", exc)
            out["backend_error"] = str(exc)
        return out

    def _poke(self, prog_id: int) -> None:
        """After the host changed a program's state: wake waiters even when the backend
        emits no state event for host-initiated transitions."""
        if prog_id not in self.fanout.waiters:
            return

        def wake(st):
            self.fanout.wake_waiters(prog_id, st.state.value if st is not None else "unloaded")

        if self.calls.blocking:
            async def later():
                try:
                    wake(await self.calls.raw(self.backend.status, prog_id))
                except BackendError:
                    wake(None)
            self.loop.create_task(later())
            return
        try:
            wake(self.backend.status(prog_id))
        except BackendError:
            wake(None)


def _pct(xs: list, p: float) -> float:
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def _registers_written(image) -> frozenset:
    """The registers the image's MOVE/ADD ops write, from the decoded code (not from the
    register map, which a forged image can leave empty)."""
    from copperline.firmware import isa
    out = set()
    for word in image.code:
        ins = isa.decode(word)
        out.update(isa.register_name(ins.fields[a.field]) for a in ins.op.args if a.kind == "reg")
    return frozenset(out)


def _compile(doc: dict, source: str):
    try:
        from copperline.firmware.compiler import compile_program
        from copperline.firmware.program import ProgramError
    except ImportError as exc:
        raise PortsError("INTERNAL", f"the program compiler is not available ({exc}); load a "
                         "compiled image with 'image' instead") from None
    try:
        result = compile_program(doc, source=source)
    except ProgramError as exc:
        raise PortsError("BAD_FORMAT", str(exc), field="program") from None
    except RecursionError:
        raise PortsError("BAD_FORMAT", f"{source}: the program is nested too deeply",
                         field="program") from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError) as exc:
        # The validator should have caught it; still bad input, not a daemon failure.
        log.warning("%s: compiler failed on input the validator passed: %r", source, exc)
        raise PortsError("BAD_FORMAT", f"{source}: cannot compile: {exc}", field="program") from None
    return getattr(result, "image", result)


def _parse_image(data: bytes, source: str):
    from copperline.firmware.image import Image, ImageError
    try:
        return Image.from_bytes(data, source)
    except ImageError as exc:
        raise PortsError("BAD_FORMAT", str(exc), field="image") from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError) as exc:
        log.warning("%s: image parser failed: %r", source, exc)
        raise PortsError("BAD_FORMAT", f"{source}: not a usable image: {exc}", field="image") from None


def _passed_surfaces(arg, fds, image):
    """The SurfaceSource of a load's ``surfaces`` (surface name -> index of a passed fd
    holding its PNG or raw RGBA): only passed files, never a path the client names."""
    from copperline.host.surfaces import (MAX_SURFACE_FILE_BYTES, SurfaceError, SurfaceSource,
                                          split_spec, surface_from_bytes)
    if arg is None:
        return SurfaceSource(paths=False)
    if not isinstance(arg, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in arg.values()):
        raise PortsError("BAD_ARG", "'surfaces' must map surface names to fd indices "
                         '(e.g. {"sprite.png": 1})', field="surfaces")
    given = {}
    for name, idx in arg.items():
        if name not in image.surfaces:
            raise PortsError("BAD_ARG", f"surfaces: the program binds no surface {name!r} "
                             f"(it binds {', '.join(map(repr, image.surfaces)) or 'none'})",
                             field="surfaces")
        if not 0 <= idx < len(fds):
            raise PortsError("BAD_ARG", f"surfaces: {name!r}: fd_index {idx}: the request "
                             f"carried {len(fds)} file descriptor(s)", field="surfaces")
        data = _read_fd(fds[idx], MAX_SURFACE_FILE_BYTES, "surfaces")
        try:
            given[name] = surface_from_bytes(data, name, split_spec(name)[1])
        except SurfaceError as exc:
            raise PortsError("BAD_FORMAT", str(exc), field="surfaces") from None
    return SurfaceSource(given, paths=False)


def _read_fd(fd: int, limit: int, field: str = "fd_index") -> bytes:
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise PortsError("BAD_ARG", f"passed fd is unusable: {exc.strerror}", field=field) from None
    if not stat.S_ISREG(st.st_mode):
        raise PortsError("BAD_ARG", "passed fd must be a regular file or memfd", field=field)
    if st.st_size > limit:
        raise PortsError("BAD_ARG", f"passed file is {st.st_size} bytes; at most {limit}",
                         field=field)
    chunks, off = [], 0
    while off <= limit:
        try:
            b = os.pread(fd, 65536, off)
        except OSError as exc:    # O_WRONLY, O_PATH, a file that fails to read
            raise PortsError("BAD_ARG", f"passed fd cannot be read ({exc.strerror}; it must be "
                             "opened for reading)", field=field) from None
        if not b:
            break
        chunks.append(b)
        off += len(b)
    if off > limit:
        raise PortsError("BAD_ARG", f"passed file is larger than {limit} bytes", field=field)
    return b"".join(chunks)
