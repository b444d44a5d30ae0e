"""Shared pytest fixtures: keep this minimal (put feature fixtures in your own test files)."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """``examples/`` (Copper programs and client scripts)."""
    return REPO_ROOT / "examples"
