"""`hivegen reconcile` after a simulated reboot: the agents that ran run again, the
stopped stay stopped, interrupted work is settled, and a foreign container is untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hivegen import desired, nspawn, simhost
from hivegen.cli import main
from hivegen.config import load_config
from hivegen.desired import Desired
from hivegen.doctor import Doctor
from hivegen.findings import Check
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.reconcile import Outcome, Reconciler
from hivegen.status import AgentState
from hivegen.store import ProposalStatus
from tests.conftest import approve_killed_at_tag, commit_dir, git, sim_config

GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'
FOREIGN_CONF = 'PRIVATE_NETWORK=0\nHOST_ADDRESS=\nLOCAL_ADDRESS=\nEXTRA_NSPAWN_FLAGS=""\n'


@pytest.fixture
def config_path(tmp_path: Path, hyperhive_flake: str) -> Path:
    return sim_config(tmp_path, hyperhive_flake)


def states(hive: Hive) -> dict[str, AgentState]:
    return {s.name: s.state for s in hive.status()}


def reboot(hive: Hive) -> None:
    host = hive.config.host
    simhost.reboot(host.simulated_root, (host.runtime_root,))


def sim_log(hive: Hive) -> list[str]:
    path = hive.config.host.simulated_root / "log"
    return path.read_text().splitlines() if path.exists() else []


def starts(lines: list[str]) -> list[str]:
    return [line.split()[-1] for line in lines if line.startswith("nixos-container start ")]


def test_reboot_brings_back_exactly_the_agents_that_ran(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hive = Hive(load_config(config_path))
    for name in ("hm1nd", "alice", "bob", "carol"):
        hive.spawn(name)
    hive.stop("bob")
    # A container hivegen did not create: named in the report, never touched.
    foreign = nspawn.conf_path(hive.config, "h-zed")
    foreign.write_text(FOREIGN_CONF)
    dropin = nspawn.dropin_dir(hive.config, "h-alice") / "hyperhive-limits.conf"
    dropin_before = dropin.read_bytes()
    assert desired.read(hive.layout, "alice") is Desired.RUNNING
    assert desired.read(hive.layout, "bob") is Desired.STOPPED

    reboot(hive)
    runtime = hive.config.host.runtime_root
    assert not runtime.exists()
    assert states(hive) == {
        "hm1nd": AgentState.STOPPED,
        "alice": AgentState.STOPPED,
        "bob": AgentState.STOPPED,
        "carol": AgentState.STOPPED,
        "zed": AgentState.FOREIGN,
    }
    capsys.readouterr()
    assert main(["--config", str(config_path), "status"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert " stopped (wanted running) " in rows["alice"]
    assert " stopped " in rows["bob"]
    assert "wanted" not in rows["bob"]

    log_before = len(sim_log(hive))
    assert main(["--config", str(config_path), "reconcile"]) == 0
    out = capsys.readouterr().out
    new = sim_log(hive)[log_before:]
    assert states(hive) == {
        "hm1nd": AgentState.RUNNING,
        "alice": AgentState.RUNNING,
        "bob": AgentState.STOPPED,
        "carol": AgentState.RUNNING,
        "zed": AgentState.FOREIGN,
    }
    # The manager first, then the others by name; bob (stopped by the operator) not.
    assert starts(new) == ["hm1nd", "h-alice", "h-carol"]
    assert not [line for line in new if "h-zed" in line]
    assert foreign.read_text() == FOREIGN_CONF
    assert dropin.read_bytes() == dropin_before
    # /run was emptied: every runtime dir (bound at /run/hive) is back.
    assert (runtime / "manager").is_dir()
    assert (runtime / "agents/alice").is_dir()
    assert "bob: left stopped" in out
    assert "h-zed: not created by hivegen; left alone" in out
    assert Doctor(hive).run().problems == ()

    # Again: nothing to do, and nothing is started twice.
    log_before = len(sim_log(hive))
    assert main(["--config", str(config_path), "reconcile", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {a["name"]: a["outcome"] for a in report["agents"]} == {
        "hm1nd": "already running",
        "alice": "already running",
        "bob": "left stopped",
        "carol": "already running",
    }
    assert report["foreign"] == ["h-zed"]
    assert starts(sim_log(hive)[log_before:]) == []


def test_a_running_agent_recorded_as_stopped_is_left_running(config_path: Path) -> None:
    hive = Hive(load_config(config_path))
    hive.spawn("alice")
    desired.record(hive.layout, "alice", Desired.STOPPED)  # e.g. a stop that was killed
    report = Reconciler(hive).run()
    assert [(a.name, a.outcome) for a in report.agents] == [("alice", Outcome.RUNNING_UNWANTED)]
    assert not report.failed
    assert states(hive)["alice"] is AgentState.RUNNING


def test_no_record_is_reported_and_doctor_records_what_runs(config_path: Path) -> None:
    hive = Hive(load_config(config_path))
    hive.spawn("alice")
    hive.spawn("bob")
    hive.stop("bob")
    for name in ("alice", "bob"):
        desired.record_path(hive.layout, name).unlink()  # a hive from before the record
    findings = [f for f in Doctor(hive).run().problems if f.check is Check.DESIRED]
    assert sorted(f.agent or "" for f in findings) == ["alice", "bob"]
    Doctor(hive).run(repair=True)
    assert desired.read(hive.layout, "alice") is Desired.RUNNING
    assert desired.read(hive.layout, "bob") is Desired.STOPPED
    assert Doctor(hive).run().problems == ()

    desired.record_path(hive.layout, "alice").unlink()
    reboot(hive)
    report = Reconciler(hive).run()
    outcomes = {a.name: a.outcome for a in report.agents}
    assert outcomes == {"alice": Outcome.NOT_RECORDED, "bob": Outcome.LEFT_STOPPED}
    assert states(hive)["alice"] is AgentState.STOPPED  # never guessed


def test_a_failing_agent_does_not_stop_the_others(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hive = Hive(load_config(config_path))
    hive.spawn("hm1nd")
    hive.spawn("alice")
    hive.spawn("bob")
    reboot(hive)
    # alice's credentials dir swapped for a symlink: her bind check refuses her start.
    creds = hive.layout.credentials("alice")
    shutil.rmtree(creds)
    creds.symlink_to("/etc")
    capsys.readouterr()
    assert main(["--config", str(config_path), "reconcile"]) == 1
    captured = capsys.readouterr()
    assert "hivegen: error: alice: unsafe path" in captured.err
    assert states(hive) == {
        "hm1nd": AgentState.RUNNING,
        "alice": AgentState.STOPPED,
        "bob": AgentState.RUNNING,
    }


def test_a_missing_container_wanted_running_is_created(config_path: Path) -> None:
    """As after restoring a backup of the state root on a new host: the repos are the
    record, the container is made from them."""
    hive = Hive(load_config(config_path))
    hive.spawn("alice")
    conf = nspawn.conf_path(hive.config, "h-alice")
    subprocess.run(
        [
            str(hive.config.host.simulated_root / "bin/nixos-container"),
            "destroy",
            "h-alice",
        ],
        env={**os.environ, **{k: v for k, v in hive.host.env.items() if v is not None}},
        check=True,
        capture_output=True,
    )
    assert not conf.exists()
    report = Reconciler(hive).run()
    assert [(a.name, a.outcome) for a in report.agents] == [("alice", Outcome.CREATED)]
    assert states(hive)["alice"] is AgentState.RUNNING
    assert Doctor(hive).run().problems == ()


def manager_commit(hive: Hive, agent_nix: str) -> str:
    proposed = hive.layout.proposed("alice")
    (proposed / "agent.nix").write_text(agent_nix)
    return commit_dir(proposed, "manager change")


def test_an_approve_killed_after_its_activation_is_settled_and_put_back(
    config_path: Path, tmp_path: Path
) -> None:
    hive = Hive(load_config(config_path))
    hive.spawn("hm1nd")
    hive.spawn("alice")
    recorded = hive.recorded_system(hive.spec("alice"))
    assert recorded is not None
    old_system = recorded[1]
    proposal = Proposals(hive).propose("alice", manager_commit(hive, GOOD))
    approve_killed_at_tag(config_path, tmp_path, proposal.id)
    assert Proposals(hive).store.get(proposal.id).status is ProposalStatus.BUILDING
    new_system = hive.host.system("h-alice")
    assert new_system is not None
    assert new_system != old_system

    reboot(hive)
    report = Reconciler(hive).run()
    assert report.settled == ("proposal 1 (alice): interrupted approve settled as pending",)
    alice = next(a for a in report.agents if a.name == "alice")
    assert alice.outcome is Outcome.STARTED
    assert any("rebuilt from the meta flake" in s for s in alice.steps), alice.steps
    # She boots her last deploy again, not the approve nobody finished.
    assert hive.host.system("h-alice") == old_system
    assert states(hive)["alice"] is AgentState.RUNNING
    assert git(hive.layout.applied("alice"), "describe", "--tags", "--exact-match") == (
        "deployed/0"
    )
    assert Proposals(hive).store.get(proposal.id).status is ProposalStatus.PENDING
    assert Doctor(hive).run().problems == ()
    # And the proposal is still approvable.
    Proposals(hive).approve(proposal.id)
    assert Proposals(hive).store.get(proposal.id).status is ProposalStatus.DEPLOYED
