"""Process counts at N = 50 registered agents: deterministic, unlike timings.

Timings (and N = 1000) are the benchmark's: `python -m benchmarks`. The hive here is
built the benchmark's way (benchmarks/hives.py): real applied repos written directly,
stopped containers' confs, and one real meta sync.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from benchmarks import hives
from hivegen import meta, process, registry
from hivegen.cli import main
from hivegen.config import load_config
from hivegen.hive import Hive
from hivegen.repos import git_for, seed
from hivegen.status import AgentState
from tests.conftest import git

N = 50


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str) -> hives.BuiltHive:
    root = tmp_path_factory.mktemp("hive50")
    return hives.build_hive(root, hyperhive_flake, hives.agent_names(N))


def _cli(config_path: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["--config", str(config_path), *args])
    return code, out.getvalue()


def test_the_hive_is_real(built: hives.BuiltHive) -> None:
    config = built.config
    assert registry.registered_agents(config) == built.agents
    lock = meta.read_lock(config.layout.meta)
    for name in built.agents:
        git_dir = config.layout.applied(name) / ".git"
        main_sha = registry.read_ref(git_dir, "refs/heads/main")
        assert meta.locked_node(lock, meta.input_name(name))["rev"] == main_sha
    sample = config.layout.applied(built.agents[0])
    git(sample, "fsck", "--strict")
    assert git(sample, "status", "--porcelain") == ""
    assert git(sample, "tag", "--list") == "deployed/0"


def test_fast_seeded_repo_holds_what_hivegen_seeds(
    built: hives.BuiltHive, tmp_path: Path, hyperhive_flake: str
) -> None:
    name = built.agents[0]
    other = load_config(hives.write_config(tmp_path, hyperhive_flake))
    seed(other, git_for(other), name)
    tree = "main^{tree}"
    assert git(other.layout.applied(name), "rev-parse", tree) == git(
        built.config.layout.applied(name), "rev-parse", tree
    )


def test_status_of_50_agents_costs_at_most_two_processes(built: hives.BuiltHive) -> None:
    hive = Hive(built.config)
    hive.host  # noqa: B018 -- installing the simulated host is not part of the count
    before = process.started_count()
    statuses = hive.status()
    assert process.started_count() - before <= 2
    assert [s.name for s in statuses] == list(built.agents)
    assert {s.state for s in statuses} == {AgentState.STOPPED}
    assert {s.deployed_tag for s in statuses} == {"deployed/0"}

    before = process.started_count()
    code, out = _cli(built.config_path, "status", "--json")
    assert process.started_count() - before <= 2
    assert code == 0
    assert len(json.loads(out)["agents"]) == N


def test_noop_meta_sync_starts_no_process(built: hives.BuiltHive) -> None:
    hive = Hive(built.config)
    before = process.started_count()
    result = hive.meta_sync()
    assert process.started_count() - before == 0
    assert result.commit is None
    assert not result.plan.needed
    assert len(result.plan.agents) == N

    before = process.started_count()
    code, out = _cli(built.config_path, "meta", "sync")
    assert process.started_count() - before == 0
    assert (code, out) == (0, f"meta flake is up to date ({N} agents)\n")
