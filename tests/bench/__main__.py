"""Run the benchmarks: ``python -m tests.bench [NAME ...] [--OPTION ...]`` (or
``make bench BENCH="NAME --OPTION ..."``).

Every ``tests/bench/bench_<name>.py`` module has ``main(argv) -> int`` that prints its
figures (medians, and ratios against a baseline measured in the same run). With no
names, all benchmarks run in turn. Options (from the first argument starting with
``-``) go to every benchmark named, e.g. ``python -m tests.bench events --seconds 10``.
"""

import importlib
import pkgutil
import sys
import time

import tests.bench as pkg


def main(argv: list[str]) -> int:
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(pkg.__path__)
                   if m.name.startswith("bench_"))
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    argv, options = argv[:split], argv[split:]
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
        rc |= module.main(options)
        print(f"== bench {name}: {time.perf_counter() - t0:.1f} s ==\n", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
