"""Issue 12's reproductions, each from a fresh hive on the simulated host: git is the
truth, hive.sqlite an index, and a repair never destroys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hivegen.config import load_config
from hivegen.doctor import Doctor
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.store import ProposalStatus
from tests.conftest import approve_killed_at_tag, commit_dir, git, sim_config

GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'
OTHER = '{ ... }: { environment.variables.GREETING = "other"; }\n'


@pytest.fixture
def config_path(tmp_path: Path, hyperhive_flake: str) -> Path:
    return sim_config(tmp_path, hyperhive_flake)


@pytest.fixture
def hive(config_path: Path) -> Hive:
    hive = Hive(load_config(config_path))
    hive.spawn("hm1nd")
    hive.spawn("alice")
    return hive


def manager_commit(hive: Hive, agent_nix: str, name: str = "alice") -> str:
    proposed = hive.layout.proposed(name)
    (proposed / "agent.nix").write_text(agent_nix)
    return commit_dir(proposed, f"manager change {agent_nix[-12:-3]}")


def problems(hive: Hive) -> list[str]:
    return [f"{f.check}: {f.message}" for f in Doctor(hive).run().problems]


def test_7_a_deploy_killed_before_its_tag_then_denied_leaves_nothing_running(
    hive: Hive, config_path: Path, tmp_path: Path
) -> None:
    """Killed after `nixos-container update` succeeded, before `git tag deployed/1`; then
    `--repair` and `deny 1`: the container must not keep the denied system."""
    recorded = hive.recorded_system(hive.spec("alice"))
    assert recorded is not None
    proposal = Proposals(hive).propose("alice", manager_commit(hive, GOOD))
    approve_killed_at_tag(config_path, tmp_path, proposal.id)
    assert hive.host.system("h-alice") != recorded[1]  # the new system was installed

    report = Doctor(hive).run(repair=True)
    assert any("interrupted approve settled as pending" in r for r in report.repaired)
    assert any("back on its last deploy's system" in r for r in report.repaired)
    Proposals(hive).deny(proposal.id, "not this one")
    assert hive.host.system("h-alice") == recorded[1]
    assert problems(hive) == []
    assert Proposals(hive).store.get(proposal.id).status is ProposalStatus.DENIED
    assert git(hive.layout.applied("alice"), "rev-parse", "main") == git(
        hive.layout.applied("alice"), "rev-parse", "deployed/0"
    )


def killed_while_simulated_call_hangs(config: Path, *args: str, call: int = 1) -> None:
    """Run `hivegen ARGS` and SIGKILL it while its CALL-th nixos-container call hangs."""
    log = load_config(config).host.simulated_root / "log"
    before = log.read_text().count("# injected fault (hang)") if log.exists() else 0
    env = {**os.environ, "HIVEGEN_SIMHOST_FAULT": f"nixos-container:{call}:hang"}
    counter = load_config(config).host.simulated_root / "fault-calls-nixos-container"
    counter.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hivegen", "--config", str(config), *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while log.read_text().count("# injected fault (hang)") == before:
        assert proc.poll() is None, f"hivegen {' '.join(args)} ended before the hang"
        assert time.monotonic() < deadline, "the injected hang never came"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_9_an_interrupted_rollback_re_run_finishes_that_rollback(
    hive: Hive, config_path: Path
) -> None:
    proposals = Proposals(hive)
    proposals.approve(proposals.propose("alice", manager_commit(hive, GOOD)).id)
    killed_while_simulated_call_hangs(config_path, "rollback", "alice", "--to", "deployed/0")
    [interrupted] = proposals.store.in_status(ProposalStatus.BUILDING)
    assert interrupted.kind == "rollback"

    deployment = proposals.rollback("alice", "deployed/0")
    assert deployment.proposal.id == interrupted.id  # the same rollback, finished
    rows = proposals.store.of_agent("alice")
    assert sorted((p.id, p.kind, p.status) for p in rows) == [
        (1, "apply", ProposalStatus.DEPLOYED),
        (interrupted.id, "rollback", ProposalStatus.DEPLOYED),
    ]
    assert proposals.store.in_status(ProposalStatus.BUILDING) == []
    applied = hive.layout.applied("alice")
    assert git(applied, "rev-parse", "main") == git(applied, "rev-parse", "deployed/0")
    assert problems(hive) == []


def test_an_approve_settles_another_interrupted_approve_of_the_agent_first(
    hive: Hive, config_path: Path
) -> None:
    proposals = Proposals(hive)
    first = proposals.propose("alice", manager_commit(hive, GOOD))
    killed_while_simulated_call_hangs(config_path, "approve", str(first.id))
    second = proposals.propose("alice", manager_commit(hive, OTHER))
    proposals.approve(second.id)
    assert proposals.store.get(first.id).status is ProposalStatus.PENDING
    assert proposals.store.get(second.id).status is ProposalStatus.DEPLOYED
    assert proposals.store.in_status(ProposalStatus.BUILDING) == []
    assert problems(hive) == []


def test_11_purge_then_spawn_starts_a_clean_history(hive: Hive) -> None:
    proposals = Proposals(hive)
    first = proposals.propose("alice", manager_commit(hive, GOOD))
    proposals.approve(first.id)
    hive.destroy("alice", purge=True)
    hive.spawn("alice")
    assert [h.tag for h in proposals.history("alice")] == ["deployed/0"]
    assert proposals.store.of_agent("alice") == []
    assert problems(hive) == []
    assert Doctor(hive).run(repair=True).repaired == ()
    again = proposals.propose("alice", manager_commit(hive, OTHER))
    assert again.id > first.id  # ids are never reused
