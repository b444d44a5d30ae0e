"""pytest plugin (``-p tests.mutant_hook``): load one gateware module with a mutant's patch.

With ``COPPERLINE_MUTANT=<name>`` (see :mod:`tests.mutants`), importing the mutant's
module compiles its patched source instead of the file; the file itself is never
changed (and no bytecode cache is written for it). Without the variable it does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys


class _MutantLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname, path, mutant):
        super().__init__(fullname, path)
        self.mutant = mutant

    def get_code(self, fullname):
        with open(self.path, encoding="utf-8") as f:
            source = self.mutant.apply(f.read())
        return compile(source, self.path, "exec", dont_inherit=True)


class _MutantFinder(importlib.abc.MetaPathFinder):
    def __init__(self, mutant):
        self.mutant = mutant

    def find_spec(self, fullname, path, target=None):
        if fullname != self.mutant.module:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = _MutantLoader(fullname, spec.origin, self.mutant)
                return spec
        return None


def _install():
    name = os.environ.get("COPPERLINE_MUTANT")
    if not name:
        return
    from tests.mutants import MUTANTS
    mutant = MUTANTS[name]
    if mutant.module in sys.modules:
        raise RuntimeError(f"{mutant.module} was imported before the mutant hook")
    sys.meta_path.insert(0, _MutantFinder(mutant))
    print(f"mutant hook: {name} ({mutant.what}) in {mutant.module}", file=sys.stderr)


_install()
