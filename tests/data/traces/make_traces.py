"""Regenerate the hand-made example traces in this folder: ``python tests/data/traces/make_traces.py``.

They describe the sprite demo (layer 1 moves 4 px right per frame, IRQ "tick" each
frame, 30 frames) as three backends would record it:

* ``sprite_fpga.jsonl`` -- the cycle model at 12 MHz (the board's cycle stamp is real time);
* ``sprite_soft.jsonl`` -- the soft VM in real time: same ``time_us``, plus ``wall_us``
  that runs 150 ppm fast and is 10..40 us late (seeded jitter) -- what a Python VM does;
* ``sprite_sim24.jsonl`` -- the same program at 24 MHz (cycles double, µs identical).

The files are committed; tests read them and docs/traces.md quotes them.
"""

import os
import random

from copperline.firmware.trace import TraceWriter, time_us

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = "5f1c0ad2" + "0" * 56   # stands for the sha256 of the demo image
FRAMES = 30


def sprite_events(clock_hz: int) -> list[dict]:
    period = round(clock_hz / 60.0)
    ev = []

    def add(cycle, **kw):
        e = {"event": kw.pop("event"), "prog": 1, **kw, "cycle": cycle,
             "time_us": time_us(cycle, clock_hz)}
        ev.append(e)

    add(0, event="state", state="running")
    add(0, event="reg", reg="layer[1].x", value=16)
    add(1, event="reg", reg="layer[1].y", value=100)
    add(2, event="reg", reg="layer[1].alpha", value=200)
    add(3, event="reg", reg="layer[1].visible", value=1)
    add(4, event="reg", reg="layer[2].x", value=120)
    add(5, event="reg", reg="layer[2].y", value=80)
    add(6, event="reg", reg="layer[2].z", value=1)
    add(7, event="reg", reg="layer[2].alpha", value=128)
    add(8, event="reg", reg="layer[2].visible", value=1)
    x = 16
    for k in range(1, FRAMES + 1):
        e = k * period
        x += 4
        add(e + 1, event="reg", reg="layer[1].x", value=x)
        add(e + 2, event="irq", tag="tick")
    add(FRAMES * period + 5, event="state", state="done", reason="halt")
    return ev


def write(name: str, backend: str, clock_hz: int, events: list[dict]) -> None:
    with TraceWriter(os.path.join(HERE, name), backend=backend, clock_hz=clock_hz,
                     vsync_hz=60.0, program=PROGRAM) as w:
        w.write_all(events)


def main() -> None:
    write("sprite_fpga.jsonl", "fpga", 12_000_000, sprite_events(12_000_000))
    rng = random.Random(7)
    soft = []
    period = 200_000
    vs = 1
    for e in sprite_events(12_000_000):
        while vs * period <= e["cycle"] and vs <= FRAMES:
            soft.append({"event": "vsync", "frame": vs, "cycle": vs * period,
                         "time_us": time_us(vs * period, 12_000_000)})
            vs += 1
        late = 10 + rng.random() * 30
        soft.append({**e, "wall_us": round(e["time_us"] * (1 + 150e-6) + late, 3)})
    write("sprite_soft.jsonl", "soft", 12_000_000, soft)
    write("sprite_sim24.jsonl", "sim", 24_000_000, sprite_events(24_000_000))


if __name__ == "__main__":
    main()
