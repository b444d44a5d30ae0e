"""Shared pytest fixtures: the ones several test files use (shared helpers: tests/support.py)."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# the shared helpers' asserts report their values like the tests' own
pytest.register_assert_rewrite("tests.support")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """``examples/`` (Copper programs and client scripts)."""
    return REPO_ROOT / "examples"


@pytest.fixture
def trace(tmp_path, capsys) -> Path:
    """A trace of ``examples/sprite.json`` on the soft VM, 3 frames (``soft.jsonl``)."""
    from copperline.host.cli import main
    path = tmp_path / "soft.jsonl"
    assert main(["run", str(REPO_ROOT / "examples" / "sprite.json"), "--frames", "3",
                 "--trace", str(path)]) == 0
    capsys.readouterr()
    return path
