"""Where build products go: one cache directory, whatever the current directory is.

Bitstreams, their reports and the compiled simulators (CXXRTL, Verilator) are cached
under :func:`cache_dir`: ``$COPPER_BUILD_DIR`` when set, else
``$XDG_CACHE_HOME/copperline``, else ``~/.cache/copperline``. Commands that build take
``--build-dir`` to put one build elsewhere (docs/boards.md, "Where builds go").
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable that moves the whole cache.
ENV_VAR = "COPPER_BUILD_DIR"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The build cache root: ``override`` (a ``--build-dir``), else ``$COPPER_BUILD_DIR``,
    else ``$XDG_CACHE_HOME/copperline``, else ``~/.cache/copperline``. Not created here."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "copperline"
