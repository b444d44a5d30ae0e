"""Run the benchmarks: ``python -m tests.bench [NAME ...]`` (or ``make bench``).

Every ``tests/bench/bench_<name>.py`` module has ``main(argv) -> int`` that prints its
figures (medians, and ratios against a baseline measured in the same run). With no
names, all benchmarks run in turn.
"""

import importlib
import pkgutil
import sys
import time

import tests.bench as pkg


def main(argv: list[str]) -> int:
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(pkg.__path__)
                   if m.name.startswith("bench_"))
    wanted = argv or names
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}",
              file=sys.stderr)
        return 2
    rc = 0
    for name in wanted:
        print(f"== bench {name} ==", flush=True)
        t0 = time.perf_counter()
        module = importlib.import_module(f"tests.bench.bench_{name}")
        rc |= module.main([])
        print(f"== bench {name}: {time.perf_counter() - t0:.1f} s ==\n", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
