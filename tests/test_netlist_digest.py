"""The elaborated gateware is the hardware ``tools/netlist_digests.json`` records.

A refactoring of ``hdl/`` must leave every netlist as it was: this test elaborates the
designs of ``tools/netlist_digest.py`` (the core alone and each board's top) and compares
the SHA-256 of their RTLIL with the recorded digests.
"""

import importlib.util
import json

from copperline.hdl.core import Core

REFRESH = "python tools/netlist_digest.py --json > tools/netlist_digests.json"


def _tool(repo_root):
    """``tools/netlist_digest.py`` as a module (``tools/`` is no package)."""
    spec = importlib.util.spec_from_file_location(
        "netlist_digest", repo_root / "tools" / "netlist_digest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recorded(repo_root) -> dict:
    return json.loads((repo_root / "tools" / "netlist_digests.json").read_text())


def test_netlists_match_the_recorded_digests(repo_root):
    tool = _tool(repo_root)
    recorded = _recorded(repo_root)
    actual = {name: tool.digest(design) for name, design in tool.designs()}
    assert actual.keys() == recorded.keys(), (
        f"the designs changed ({sorted(actual)} vs recorded {sorted(recorded)}); "
        f"refresh the file: {REFRESH}")
    changed = [name for name in actual if actual[name] != recorded[name]]
    assert not changed, (
        f"the hardware of {', '.join(changed)} changed. A refactoring must not change it; "
        f"if the change is intended, refresh the file and commit it with the change: {REFRESH}")


def test_digest_sees_a_hardware_change(repo_root):
    # positive control: a core with one context fewer is other hardware
    tool = _tool(repo_root)
    assert tool.digest(Core(clock_hz=12_000_000, contexts=3)) != _recorded(repo_root)["core"]
