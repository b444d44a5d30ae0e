"""Formal proofs of the gateware in ``make test`` (tests/formal, docs/core.md "Verification").

Each proof runs ``yowasp-sby`` (k-induction or BMC, solver ``yices-smt2``) on an Amaranth
wrapper, then checks that its ``Cover`` statements are reachable (a proof whose
assumptions exclude every behaviour would pass vacuously). The whole set takes about
80-100 s on two cores (docs/core.md, "Verification", has the table). The mutant run
(``python -m tests.mutants``) shows that the proofs fail on deliberate faults.

The tools are project dependencies (``make setup``): missing ones fail the tests, unless
``COPPERLINE_SKIP_FORMAL=1`` says to skip them.
"""

import os

import logging

import pytest

from tests.formal import PROOFS, run_proof, tools_available

log = logging.getLogger(__name__)

pytestmark = pytest.mark.skipif(os.environ.get("COPPERLINE_SKIP_FORMAL") == "1",
                                reason="COPPERLINE_SKIP_FORMAL=1")


@pytest.mark.parametrize("name", list(PROOFS))
def test_formal_proof(name):
    missing = tools_available()
    assert missing is None, (f"formal tools missing: {missing} (make setup installs them; "
                             f"COPPERLINE_SKIP_FORMAL=1 skips the proofs)")
    proof = PROOFS[name]
    res = run_proof(proof)
    line = res.summary()
    log.info("%s", line)
    print(line)
    tail = "\n".join(l for l in res.log.splitlines() if "Checking" not in l)[-3000:]
    assert res.passed, (f"formal proof {name} ({proof.states}) failed: {proof.mode} depth "
                        f"{proof.depth}; work dir {res.workdir}\n{tail}")
    assert res.cover_passed is not False, (
        f"formal proof {name}: a Cover is unreachable in {proof.cover_depth} steps (the proof "
        f"may be vacuous); work dir {res.workdir}\n{tail}")
