"""The box's root filesystem, built once per machine; its prerequisites, checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hostbox import harness

# boxed.py's helpers assert what they check: with pytest's messages (before any test
# module imports it).
pytest.register_assert_rewrite("tests.hostbox.boxed")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def hostbox_rootfs() -> Path:
    """The cached root filesystem; skipped (failed in CI) when the machine cannot boot it."""
    require("hostbox", harness.missing_prerequisites())
    return harness.rootfs()


def require(what: str, missing: list[str]) -> None:
    """Skip the test for what this machine lacks to run `what`; in CI, fail it."""
    if missing:
        reason = f"{what} needs " + "; ".join(missing)
        if in_ci():
            pytest.fail(f"{reason} (CI must run these tests: .ci/run installs them)")
        pytest.skip(reason)
