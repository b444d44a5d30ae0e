"""``python -m tests.formal [NAME ...]``: run the proofs, print a table, exit 1 on a failure."""

from __future__ import annotations

import argparse
import logging
import sys

from tests.formal import PROOFS, run_proof, tools_available


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.formal", description=__doc__)
    ap.add_argument("names", nargs="*", help=f"proofs to run (default all: {', '.join(PROOFS)})")
    ap.add_argument("--no-cover", action="store_true", help="skip the cover (reachability) runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    missing = tools_available()
    if missing:
        print(f"missing formal tools: {missing} (pip install -e '.[test]')", file=sys.stderr)
        return 2
    bad = [n for n in args.names if n not in PROOFS]
    if bad:
        print(f"unknown proof(s): {', '.join(bad)}", file=sys.stderr)
        return 2
    results = [run_proof(PROOFS[n], covers=not args.no_cover) for n in (args.names or PROOFS)]
    print(f"\n{'proof':22} {'mode':6} {'depth':>5} {'result':7} {'time':>7}  covers")
    for r in results:
        cov = "-" if r.cover_passed is None else ("reached" if r.cover_passed else "UNREACHED")
        print(f"{r.name:22} {r.mode:6} {r.depth:5} {'PASS' if r.passed else 'FAIL':7} "
              f"{r.seconds + r.cover_seconds:6.1f}s  {cov}")
    print(f"total {sum(r.seconds + r.cover_seconds for r in results):.1f} s")
    return 0 if all(r.passed and r.cover_passed is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
