"""cocotb driver, monitor and scoreboard helpers for the generated ``copper_core`` Verilog.

Port payloads are flat vectors; their bit layout is the one of the Amaranth layouts in
``copperline.hdl.core`` (first field in the low bits); event records are decoded and
converted by :mod:`copperline.firmware.board_interface` and
:mod:`copperline.firmware.core_events`, as every other reader of records does.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import NextTimeStep, ReadOnly, RisingEdge, Timer

from copperline.firmware import isa
from copperline.firmware.board_interface import CtxState, Record, decode_record
from copperline.firmware.core_events import RecordConverter

__all__ = ["CoreDriver"]


class CoreDriver:
    """Drives ``prog_wr``/``cmd``/``fence_wr``, monitors ``events`` into ``records``."""

    def __init__(self, dut, meta_dir: str):
        self.dut = dut
        with open(os.path.join(meta_dir, "copper_core.json")) as f:
            self.meta = json.load(f)
        self.C = self.meta.get("contexts", isa.DEFAULT_CONTEXTS)
        self.sb = self.meta["slot_bits"]
        self.words = self.meta["program_words"]
        self.records: list[Record] = []
        self.drain = True

    async def reset(self):
        d = self.dut
        # Every input gets a value and reset is asserted *before* the first clock edge:
        # an edge that samples undriven (X) inputs puts X into the context state, and X
        # state feeds the fetch address, so it never washes out (the old "first test gets
        # no events" bug).
        for sig in (d.prog_wr__valid, d.cmd__valid, d.fence_wr__valid, d.vsync_in,
                    d.vsync_external, d.reg_addr, d.status_slot, d.cmd__payload,
                    d.fence_wr__payload, d.prog_wr__payload):
            sig.value = 0
        d.events__ready.value = 1
        d.rst.value = 1
        d.clk.value = 0
        await Timer(1, unit="ns")
        cocotb.start_soon(Clock(d.clk, 10, unit="ns").start(start_high=False))
        for _ in range(3):
            await RisingEdge(d.clk)
        d.rst.value = 0
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        d = self.dut
        sb = self.sb
        while True:
            await RisingEdge(d.clk)          # values seen here are the ones the edge samples
            if int(d.events__valid.value) and int(d.events__ready.value):
                self.records.append(decode_record(int(d.events__payload.value), sb))

    async def write_program(self, slot: int, words):
        d = self.dut
        pc_bits = self.meta["pc_bits"]
        for i, w in enumerate(words):
            d.prog_wr__valid.value = 1
            d.prog_wr__payload.value = (slot * self.words + i) | w << (self.sb + pc_bits)
            while True:             # the SPRAM program memory takes a write per slot turn
                await ReadOnly()
                ready = int(d.prog_wr__ready.value)
                await RisingEdge(d.clk)
                if ready:
                    break
        d.prog_wr__valid.value = 0

    async def command(self, start=0, stop=0, reset=0, timebase=0):
        """Issue one command; returns the global cycle it took effect in."""
        d, C = self.dut, self.C
        d.cmd__payload.value = start | stop << C | reset << 2 * C | timebase << 3 * C
        d.cmd__valid.value = 1
        while True:
            await ReadOnly()
            ready = int(d.cmd__ready.value)
            cyc = int(d.cycle.value)
            await RisingEdge(d.clk)
            if ready:
                break
        d.cmd__valid.value = 0
        # (``cycle`` shows the time-base reset from the next clock on)
        return 0 if timebase else cyc

    async def until(self, cycle: int, phase: int = 0):
        d = self.dut
        while True:
            await ReadOnly()
            if int(d.cycle.value) == cycle and int(d.phase.value) == phase:
                await NextTimeStep()       # leave ReadOnly, still in the same clock
                return
            await RisingEdge(d.clk)

    async def fence(self, slot: int, timeline: int, value: int):
        d = self.dut
        d.fence_wr__payload.value = slot | timeline << self.sb | value << (self.sb + 2)
        d.fence_wr__valid.value = 1
        await RisingEdge(d.clk)
        d.fence_wr__valid.value = 0

    async def read_reg(self, index: int) -> int:
        d = self.dut
        d.reg_addr.value = index
        await RisingEdge(d.clk)
        await ReadOnly()
        raw = int(d.reg_data.value)
        await RisingEdge(d.clk)
        return isa.register_field(index).wrap(raw)

    async def status(self, slot: int) -> tuple[CtxState, int]:
        d = self.dut
        d.status_slot.value = slot
        await RisingEdge(d.clk)
        await ReadOnly()
        st, pc = CtxState(int(d.status_state.value)), int(d.status_pc.value)
        await RisingEdge(d.clk)
        return st, pc

    def events(self, images: dict) -> list[tuple]:
        """The records as events in the terms of :func:`vm_events` (``images``: slot ->
        image; the stamps are taken as global cycles, so run from a time-base reset)."""
        conv = RecordConverter(self.meta["clock_hz"], self.meta.get("layers", isa.DEFAULT_LAYERS),
                               key="slot")
        for slot, image in images.items():
            conv.set_slot(slot, slot, image)
        return vm_events([ev for rec in self.records for ev in conv.convert(rec, rec.timestamp)])


def vm_events(events: list[dict]) -> list[tuple]:
    """VM events in the same terms as :meth:`CoreDriver.events`."""
    out = []
    for e in events:
        k = e["event"]
        if k == "reg":
            d = (e["reg"], e["value"])
        elif k == "irq":
            d = e["tag"]
        elif k == "bind":
            d = (e["layer"], e["surface"])
        elif k == "state":
            d = (e["state"], e["reason"], e["pc"])
        else:
            continue
        out.append((e["cycle"], e["slot"], k, d))
    return out
