"""The subpackages form layers (docs/architecture.md): each imports only from its own
layer or below, counting imports inside functions and relative imports, so no import
cycle can exist between them."""

from __future__ import annotations

import ast
from pathlib import Path

#: Lowest first: ``copperline`` (the folder copperline_pkg/) < ... < ``host``.
LAYERS = ("copperline", "firmware", "hdl", "sim", "boards", "host")
FOLDERS = {"copperline": "copperline_pkg", "firmware": "firmware", "hdl": "hdl", "sim": "sim",
           "boards": "boards", "host": "host"}
RANK = {layer: i for i, layer in enumerate(LAYERS)}

REPO = Path(__file__).resolve().parent.parent


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name, None outside copperline."""
    parts = module.split(".")
    if parts[0] != "copperline":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in RANK and parts[1] != "copperline" \
        else "copperline"


def imported_modules(source: str, module: str, is_package: bool):
    """``(line, dotted name)`` of every import in ``source``, the module ``module``
    (relative imports resolved; ``from X import a`` yields ``X.a``)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            for alias in node.names:
                yield node.lineno, f"{mod}.{alias.name}"


def violations_in(source: str, layer: str, module: str, path: str,
                  is_package: bool = False) -> list[str]:
    """``path:line imports NAME (layer X above Y)`` for each import above ``layer``."""
    out = []
    for line, name in sorted(imported_modules(source, module, is_package)):
        target = layer_of(name)
        if target is not None and RANK[target] > RANK[layer]:
            out.append(f"{path}:{line} imports {name} ({target} is above {layer})")
    return out


def tree_violations(root: Path = REPO) -> list[str]:
    out = []
    for layer, folder in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder)
            parts = ["copperline"] + ([] if layer == "copperline" else [layer])
            parts += list(rel.parts[:-1]) + ([] if rel.name == "__init__.py" else [rel.stem])
            out += violations_in(path.read_text(encoding="utf-8"), layer, ".".join(parts),
                                 str(path.relative_to(root)), rel.name == "__init__.py")
    return out


def test_every_subpackage_imports_only_its_layer_or_below():
    bad = tree_violations()
    assert not bad, ("imports against the layering (" + " < ".join(LAYERS) + "):\n  "
                     + "\n  ".join(bad))


def test_firmware_is_pure_python():
    """The formats and contracts (the board interface too) import no Amaranth."""
    bad = [f"{path.relative_to(REPO)}:{line} imports {name}"
           for path in sorted((REPO / "firmware").rglob("*.py"))
           for line, name in imported_modules(path.read_text(encoding="utf-8"),
                                              "copperline.firmware.x", False)
           if name.split(".")[0] == "amaranth"]
    assert not bad, "\n".join(bad)


def test_the_check_sees_bad_imports_of_every_form():
    """Positive control: absolute, relative, package-relative and in-function imports."""
    source = "\n".join([
        "from copperline.firmware import isa",            # below: fine
        "import copperline.sim.vm",                       # above hdl
        "def f():",
        "    from ..host import link",                    # relative, in a function
        "    from . import core",                         # same layer: fine
        "from copperline import progress, host",          # host above
    ])
    bad = violations_in(source, "hdl", "copperline.hdl.top", "hdl/top.py")
    assert bad == ["hdl/top.py:2 imports copperline.sim.vm (sim is above hdl)",
                   "hdl/top.py:4 imports copperline.host.link (host is above hdl)",
                   "hdl/top.py:6 imports copperline.host (host is above hdl)"]
    # in a package's __init__, "." is the package itself
    assert violations_in("from . import rtl\nfrom ..host import link", "sim", "copperline.sim",
                         "sim/__init__.py", is_package=True) == \
        ["sim/__init__.py:2 imports copperline.host.link (host is above sim)"]
    assert violations_in("from .. import host", "sim", "copperline.sim.rtl", "sim/rtl.py") == \
        ["sim/rtl.py:1 imports copperline.host (host is above sim)"]
