"""The benchmarks (`python -m benchmarks`), every suite at its smallest sizes, as CI
runs them: each must run to the end against hivegen as it is and meet every count
target (processes, calls, lock nodes, evaluator function calls). No time is checked:
times are the machine's and its load's.

A benchmark reads hivegen's output (`status --json` as a hivegen.status/1 document,
`meta sync`'s line) and stops when it does not find what it knows: a verb whose output
changed shape fails this test, rather than leaving a benchmark that no longer runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import run

# One worker for the module: the run below (heavy: it builds hives and evaluates a
# costly base flake) is then made once, not once on each worker that gets a test.
pytestmark = pytest.mark.xdist_group("benchmarks")

ROOT = Path(__file__).parent.parent
HIVE_SIZE = 10
ROLLOUT_SIZE = 2  # a manager and one agent
SMALLEST = [
    *("--sizes", str(HIVE_SIZE), "--rollout-sizes", str(ROLLOUT_SIZE)),
    *("--repeat", "1"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of every suite (the work dir under pytest's: nothing written elsewhere)."""
    tmp = tmp_path_factory.mktemp("benchmarks")
    out = tmp / "results.json"
    workdir = ["--workdir", str(tmp / "work")]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *SMALLEST, *workdir, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    # The figures are written once every suite has run: none means one stopped.
    assert out.is_file(), f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    loaded: dict[str, Any] = json.loads(out.read_text())
    missed = [row["measure"] for row in loaded["rows"] if row["met"] is False]
    # Exit 1 exactly when a target was missed (a time target may be, on a busy machine).
    assert done.returncode == (1 if missed else 0), (missed, done.stderr[-4000:])
    return loaded


def test_every_suite_ran_at_every_size_asked(results: dict[str, Any]) -> None:
    rows = results["rows"]
    assert {row["suite"] for row in rows} == set(run.SUITES)
    assert {row["n"] for row in rows if row["suite"] == "hives"} == {HIVE_SIZE, None}
    assert {row["n"] for row in rows if row["suite"] == "rollout"} == {ROLLOUT_SIZE}
    assert [hive["n"] for hive in results["hives"]] == [HIVE_SIZE]
    assert [rollout["n"] for rollout in results["rollouts"]] == [ROLLOUT_SIZE]


def test_every_count_target_is_met(results: dict[str, Any]) -> None:
    counted = [row for row in results["rows"] if row["target_kind"] == run.COUNT]
    # Each suite holds some: a suite whose count targets went missing is caught too.
    assert {row["suite"] for row in counted} == set(run.SUITES)
    missed = [row for row in counted if row["met"] is not True]
    assert missed == []
