"""The reference Copper VM: an exact, fast implementation of ``isa.EXECUTION_RULES``.

:class:`Machine` is the *specification* of timing: the RTL (simulated or on a board)
must produce the same events at the same cycles. It runs in virtual time: the caller
says how far to advance (:meth:`Machine.run_until`) and gets the events of that span.

Speed comes from two things:

- idle time (``WAIT us``, ``WAIT vsync``, a blocked ``FENCE``) is skipped in O(1): a
  program only has a "next issue cycle", nothing happens cycle by cycle;
- the image is pre-decoded into tuples, and each program runs ahead in a tight loop up
  to the next cycle in which another program (or a vsync event) must go first.

Programs only interact through the shared registers and the order of their events, so
running one program ahead while the others are idle is exact (rule 8).

Host actions (``start``, ``stop``, ``set_fence``, ``unload``) take effect at the
*beginning* of the machine's current cycle, before any op issues in it. Their events
(``state`` running / stopped) therefore come before the program events of that cycle.
"""

from __future__ import annotations

from copperline.firmware import isa
from copperline.firmware.image import Image, ImageError
from copperline.sim.engine import EngineError, MachineParams


#: "never": the next issue cycle of a program that is blocked or not running.
NEVER = 1 << 62

# Op kinds of the pre-decoded code: the opcodes, plus one for WAIT's vsync form (the
# form with a flag arg), which waits for an edge instead of a count.
K_HALT, K_NOP, K_WAIT, K_MOVE, K_ADD, K_IRQ, K_JUMP, K_LOOP, K_FENCE, K_BIND = (
    int(isa.OP_BY_NAME[name].opcode)
    for name in ("HALT", "NOP", "WAIT", "MOVE", "ADD", "IRQ", "JUMP", "LOOP", "FENCE", "BIND_LAYER"))
K_VSYNC = max(isa.OP_BY_CODE) + 1

# Cycle costs of the ops (isa.OPS), bound to locals in the hot loop.
_COSTS = (isa.OP_BY_NAME["MOVE"].cost, isa.OP_BY_NAME["ADD"].cost, isa.OP_BY_NAME["IRQ"].cost,
          isa.OP_BY_NAME["NOP"].cost, isa.OP_BY_NAME["BIND_LAYER"].cost,
          isa.OP_BY_NAME["FENCE"].cost, isa.OP_BY_NAME["JUMP"].branch_cost,
          isa.OP_BY_NAME["LOOP"].branch_cost, isa.OP_BY_NAME["LOOP"].cost)

_RUNNING = "running"


class MachineError(EngineError):
    """A request the machine refuses (unknown slot, full, bad image for this machine...)."""


class _Context:
    """One program context (a slot)."""
    __slots__ = ("slot", "image", "code", "state", "reason", "pc", "nxt", "start", "idle",
                 "loops", "blocked", "bindings", "ops", "started")

    def __init__(self, slot: int, image: Image, code: list[tuple]):
        self.slot = slot
        self.image = image
        self.code = code
        self.state = "loaded"
        self.reason: str | None = None
        self.pc = 0
        self.nxt = NEVER          # global cycle of the next op issue
        self.start = 0            # global cycle the program started in
        self.idle = 0             # watchdog counter (rule 9)
        self.loops = [0] * isa.LOOP_SLOTS      # LOOP counters (rule 6)
        self.blocked: tuple[str, int] | None = None   # (timeline, value) of a waiting FENCE
        self.bindings: dict[int, str] = {}
        self.ops = 0              # ops issued since start
        self.started = False


class Machine:
    """A cycle-exact Copper core with several program contexts and shared registers: the
    reference :class:`~copperline.sim.engine.Engine`, for the machine ``params`` describes.
    """

    def __init__(self, params: MachineParams):
        self.params = params
        # (flat copies: the hot loop reads them as attributes)
        self.cycles_per_us = params.cycles_per_us
        self.vsync_period = params.vsync_period
        self.clock_hz = params.clock_hz
        self.watchdog_ops = params.watchdog_ops
        self.layers = params.layers
        self.contexts = params.contexts
        self.program_words = params.program_words
        self.vsync_events = params.vsync_events
        self._slots: list[_Context | None] = [None] * params.contexts
        self._reg_names = isa.register_names(params.layers)
        self._fences: dict[str, int] = {}
        self.reset()

    # -- time base --------------------------------------------------------------------
    def reset(self) -> None:
        """Machine reset: cycle 0, registers 0, fences 0, every slot freed."""
        self.cycle = 0
        self._regs = [0] * (self.layers * isa.REG_STRIDE)
        self._fences = {}
        self._slots = [None] * self.contexts
        self._pending: list[dict] = []
        self._next_vsync = self.vsync_period

    def close(self) -> None:
        """Nothing to release (the VM holds no process or file)."""

    def time_us(self, cycle: int) -> float:
        """Model time of ``cycle`` (same rounding as :func:`copperline.firmware.trace.time_us`)."""
        return round(cycle * 1_000_000 / self.clock_hz, 3)

    # -- programs ---------------------------------------------------------------------
    def load(self, image: Image) -> int:
        """Load ``image`` into the lowest free slot and return the slot."""
        code = self._predecode(image)
        for slot, ctx in enumerate(self._slots):
            if ctx is None:
                self._slots[slot] = _Context(slot, image, code)
                return slot
        raise MachineError(f"all {self.contexts} program contexts are in use")

    def unload(self, slot: int) -> None:
        """Free a slot; a running program is stopped first (``stopped`` event)."""
        ctx = self._ctx(slot)
        if ctx.state == _RUNNING:
            self.stop(slot)
        self._slots[slot] = None

    def start(self, slot: int) -> None:
        """Start (or restart) the program in ``slot``: its first op issues in this cycle."""
        ctx = self._ctx(slot)
        if ctx.state == _RUNNING:
            raise MachineError(f"slot {slot} is already running")
        ctx.state, ctx.reason = _RUNNING, None
        ctx.pc, ctx.start, ctx.nxt, ctx.idle = 0, self.cycle, self.cycle, 0
        ctx.loops = [0] * isa.LOOP_SLOTS
        ctx.blocked = None
        ctx.bindings = {}
        ctx.ops = 0
        ctx.started = True
        self._pending.append({"event": "state", "slot": slot, "state": _RUNNING, "reason": "start",
                              "pc": 0, "cycle": 0, "time_us": 0.0})

    def stop(self, slot: int) -> None:
        """Stop a running program in this cycle (``stopped`` event); no-op otherwise."""
        ctx = self._ctx(slot)
        if ctx.state != _RUNNING:
            return
        self._end(ctx, "stopped", "host", self.cycle, self._pending)

    def set_fence(self, name: str, value: int) -> None:
        """Set timeline ``name`` to ``value``, effective in the current cycle (rule 5)."""
        problem = isa.fence_update_problem(name, value, self._fences.get(name, 0))
        if problem:
            raise ValueError(problem)
        self._fences[name] = value
        for ctx in self._slots:
            if ctx is not None and ctx.blocked is not None and ctx.blocked[0] == name \
                    and value >= ctx.blocked[1]:
                ctx.blocked = None
                ctx.nxt = self.cycle + isa.FENCE_RESUME_LATENCY

    def fence(self, name: str) -> int:
        """Current value of timeline ``name``."""
        return self._fences.get(name, 0)

    @property
    def regs(self) -> dict[str, int]:
        """Every register by name."""
        return {name: self._regs[i] for i, name in enumerate(self._reg_names) if name}

    def status(self, slot: int) -> dict:
        """State, pc, reason, bindings, ops and program cycle of ``slot``."""
        ctx = self._ctx(slot)
        out = {"slot": slot, "state": ctx.state, "pc": ctx.pc, "reason": ctx.reason,
               "bindings": dict(ctx.bindings), "ops": ctx.ops,
               "cycle": self.cycle - ctx.start if ctx.started else 0}
        if ctx.blocked is not None:
            out["fence"] = {"timeline": ctx.blocked[0], "value": ctx.blocked[1]}
        return out

    def slots(self) -> list[int]:
        """Slots that hold a program."""
        return [s for s, ctx in enumerate(self._slots) if ctx is not None]

    def slot_start(self, slot: int) -> int:
        """Global cycle the program in ``slot`` (last) started in."""
        return self._ctx(slot).start

    @property
    def ops(self) -> int:
        """Ops issued by the loaded programs since their last start."""
        return sum(ctx.ops for ctx in self._slots if ctx is not None)

    # -- running ----------------------------------------------------------------------
    def next_event_cycle(self) -> int | None:
        """Earliest global cycle >= ``cycle`` in which an op issues (or a vsync event is
        due, with ``vsync_events``); None when nothing will happen until the host acts."""
        best = NEVER
        for ctx in self._slots:
            if ctx is not None and ctx.nxt < best:
                best = ctx.nxt
        if self.vsync_events and self._next_vsync < best:
            best = self._next_vsync
        if self._pending:
            best = self.cycle
        return None if best >= NEVER else best

    def run_until(self, cycle: int) -> list[dict]:
        """Execute every cycle from ``self.cycle`` up to (not including) ``cycle``.

        Returns the events of that span in order: global cycle, then host actions, then
        vsync, then slot. Afterwards ``self.cycle == cycle``.
        """
        if cycle < self.cycle:
            raise ValueError(f"run_until({cycle}): the machine is already at cycle {self.cycle}")
        out = self._pending
        self._pending = []
        slots = self._slots
        vs = self.vsync_events
        while True:
            best = None
            bn = NEVER
            for ctx in slots:
                if ctx is not None and ctx.nxt < bn:
                    best, bn = ctx, ctx.nxt
            nv = self._next_vsync
            if vs and nv < cycle and nv <= bn:
                k = nv // self.vsync_period
                out.append({"event": "vsync", "frame": k, "cycle": nv, "time_us": self.time_us(nv)})
                self._next_vsync = nv + self.vsync_period
                continue
            if best is None or bn >= cycle:
                break
            # Run ``best`` ahead while no other program (nor a vsync event) must go first.
            limit = cycle
            if vs and nv < limit:
                limit = nv
            for ctx in slots:
                if ctx is not None and ctx is not best and ctx.nxt < NEVER:
                    lim = ctx.nxt if ctx.slot < best.slot else ctx.nxt + 1
                    if lim < limit:
                        limit = lim
            self._run(best, limit, out)
        if not vs and self._next_vsync < cycle:
            p = self.vsync_period
            self._next_vsync = (cycle + p - 1) // p * p if cycle > 0 else p
        self.cycle = cycle
        return out

    # -- internals --------------------------------------------------------------------
    def _ctx(self, slot: int) -> _Context:
        if not isinstance(slot, int) or not 0 <= slot < self.contexts or self._slots[slot] is None:
            raise MachineError(f"no program in slot {slot!r}")
        return self._slots[slot]

    def _end(self, ctx: _Context, state: str, reason: str, cycle: int, out: list) -> None:
        ctx.state, ctx.reason, ctx.nxt, ctx.blocked = state, reason, NEVER, None
        c = cycle - ctx.start
        out.append({"event": "state", "slot": ctx.slot, "state": state, "reason": reason,
                    "pc": ctx.pc, "cycle": c, "time_us": self.time_us(c)})

    def _predecode(self, image: Image) -> list[tuple]:
        """Check the image against this machine and turn it into op tuples.

        A tuple is ``(kind, *operands)``: the args of the word's form in ``isa.OPS`` order,
        then the fields no arg sets (LOOP's slot). A register arg gives ``(index, name,
        mask, half, full)`` (ADD wraps with them), a string-table arg its string, any
        other arg its JSON value (a WAIT its microseconds, a forever LOOP the count -1).
        """
        if not isinstance(image, Image):
            raise TypeError(f"load() needs an Image, got {type(image).__name__}")
        image.check_fits(self.program_words, self.layers)
        code: list[tuple] = []
        for addr, word in enumerate(image.code):
            ins = isa.decode(word)
            f = ins.fields
            form = ins.op.form(f)
            reg = ins.op.register(f)
            operands: list = []
            for arg in form:
                raw = f[arg.field]
                if arg.kind == "reg":
                    full = 1 << reg.width
                    operands += (raw, self._reg_names[raw], full - 1,
                                 full >> 1 if reg.signed else full, full)
                elif arg.kind in isa.TABLE_KINDS:
                    operands.append(image.table(arg.kind)[raw])
                elif arg.kind == "label":
                    operands.append(raw)
                else:
                    if arg.kind == "layer" and raw >= self.layers:
                        raise ImageError(f"word {addr}: {ins.name} {arg.field} {raw} is out of "
                                         f"range (0..{self.layers - 1})")
                    operands.append(isa.FROM_RAW[arg.kind](raw, reg))
            operands += [f[b.name] for b in ins.op.assigned_bits]
            flag_form = any(a.kind == "true" for a in form)
            code.append((K_VSYNC if flag_form else int(ins.op.opcode), *operands))
        return code

    def _run(self, ctx: _Context, limit: int, out: list) -> None:
        """Issue ``ctx``'s ops in cycles < ``limit`` (the hot loop; keep it lean)."""
        code = ctx.code
        pc = ctx.pc
        t = ctx.nxt
        S = ctx.start
        idle = ctx.idle
        wd = self.watchdog_ops
        regs = self._regs
        ap = out.append
        s = ctx.slot
        hz = self.clock_hz
        cpu = self.cycles_per_us
        c_move, c_add, c_irq, c_nop, c_bind, c_fence, c_jump, c_loop, c_exit = _COSTS
        n = 0
        while t < limit:
            if idle == wd:
                ctx.pc, ctx.idle, ctx.ops = pc, idle, ctx.ops + n
                self._end(ctx, "faulted", "watchdog", t, out)
                return
            op = code[pc]
            k = op[0]
            n += 1
            if k == K_MOVE:                        # (K, reg, name, mask, half, full, value)
                v = op[6]
                regs[op[1]] = v
                c = t - S
                ap({"event": "reg", "slot": s, "reg": op[2], "value": v, "cycle": c,
                    "time_us": round(c * 1_000_000 / hz, 3)})
                pc += 1
                t += c_move
                idle += 1
            elif k == K_ADD:                       # (K, reg, name, mask, half, full, delta)
                r = op[1]
                v = (regs[r] + op[6]) & op[3]
                if v >= op[4]:
                    v -= op[5]
                regs[r] = v
                c = t - S
                ap({"event": "reg", "slot": s, "reg": op[2], "value": v, "cycle": c,
                    "time_us": round(c * 1_000_000 / hz, 3)})
                pc += 1
                t += c_add
                idle += 1
            elif k == K_JUMP:                      # (K, target)
                pc = op[1]
                t += c_jump
                idle += 1
            elif k == K_WAIT:                      # (K, us)
                t += op[1] * cpu
                pc += 1
                idle = 0
            elif k == K_LOOP:                      # (K, count, target, slot)
                idle += 1
                count = op[1]
                if count < 0:                      # forever (-1)
                    pc = op[2]
                    t += c_loop
                    continue
                loops = ctx.loops
                j = op[3]
                left = loops[j]
                left = count - 1 if left == 0 else left - 1
                loops[j] = left
                if left:
                    pc = op[2]
                    t += c_loop
                else:
                    pc += 1
                    t += c_exit
            elif k == K_IRQ:                       # (K, tag)
                c = t - S
                ap({"event": "irq", "slot": s, "tag": op[1], "cycle": c,
                    "time_us": round(c * 1_000_000 / hz, 3)})
                pc += 1
                t += c_irq
                idle += 1
            elif k == K_VSYNC:
                p = self.vsync_period
                t = (t // p + 1) * p + isa.VSYNC_LATENCY
                pc += 1
                idle = 0
            elif k == K_FENCE:                     # (K, timeline, value)
                pc += 1
                if self._fences.get(op[1], 0) >= op[2]:
                    t += c_fence
                    idle += 1
                else:
                    ctx.blocked = (op[1], op[2])
                    ctx.pc, ctx.idle, ctx.nxt, ctx.ops = pc, 0, NEVER, ctx.ops + n
                    return
            elif k == K_NOP:
                pc += 1
                t += c_nop
                idle += 1
            elif k == K_BIND:                      # (K, layer, surface)
                ctx.bindings[op[1]] = op[2]
                c = t - S
                ap({"event": "bind", "slot": s, "layer": op[1], "surface": op[2], "cycle": c,
                    "time_us": round(c * 1_000_000 / hz, 3)})
                pc += 1
                t += c_bind
                idle += 1
            else:                                  # HALT
                ctx.pc, ctx.idle, ctx.ops = pc, idle + 1, ctx.ops + n
                self._end(ctx, "done", "halt", t, out)
                return
        ctx.pc, ctx.nxt, ctx.idle, ctx.ops = pc, t, idle, ctx.ops + n
