"""Crash safety: every multi-step verb, interrupted at every external call, recovers.

For each verb, a hive is built once and snapshotted; then, for k = 1, 2, ... the
simulated host fails its k-th command (nixos-container or systemctl, nested calls
included), the verb runs and fails, and recovery is attempted: re-run the verb, then
`doctor --repair`. After it: `doctor` finds nothing, the manager's commits are all
there, no credentials or notes were lost. Separately, hivegen is SIGKILLed while a
simulated command hangs, and while it runs git. The verb-by-step table is printed at
the end of the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hivegen.config import load_config
from hivegen.doctor import Doctor
from hivegen.errors import HivegenError
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.status import AgentState
from hivegen.store import ProposalStatus
from tests.conftest import commit_dir, git, sim_config

RESULTS: list[tuple[str, str, bool]] = []

GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'
BROKEN = '{ ... }: { environment.variables.GREETING = throw "broken on purpose"; }\n'


@dataclass
class World:
    root: Path
    snapshot: Path

    @property
    def config_path(self) -> Path:
        return self.root / "hive.toml"

    def hive(self) -> Hive:
        return Hive(load_config(self.config_path))

    def restore(self) -> None:
        shutil.rmtree(self.root)
        shutil.copytree(self.snapshot, self.root, symlinks=True)


def build_world(tmp: Path, hyperhive_flake: str, setup: Callable[[Hive], None]) -> World:
    root = tmp / "world"
    root.mkdir()
    sim_config(root, hyperhive_flake)
    hive = Hive(load_config(root / "hive.toml"))
    hive.spawn("hm1nd")
    hive.spawn("alice")
    (hive.layout.notes("alice") / "notes.md").write_text("keep me\n")
    (hive.layout.credentials("alice") / "token").write_text("secret\n")
    setup(hive)
    snapshot = tmp / "snapshot"
    shutil.copytree(root, snapshot, symlinks=True)
    return World(root, snapshot)


def manager_commit(hive: Hive, agent_nix: str) -> str:
    proposed = hive.layout.proposed("alice")
    (proposed / "agent.nix").write_text(agent_nix)
    return commit_dir(proposed, "manager change")


def with_proposal(agent_nix: str) -> Callable[[Hive], None]:
    def setup(hive: Hive) -> None:
        Proposals(hive).propose("alice", manager_commit(hive, agent_nix))

    return setup


def nothing(hive: Hive) -> None:
    del hive


def limits_change(hive: Hive) -> None:
    """A new limit for alice: the rebuild rewrites the drop-in and restarts her."""
    assert hive.config.source is not None
    with hive.config.source.open("a") as config:
        config.write('[agents.alice]\nmemory_max = "3G"\n')


def run_verb(verb: str, hive: Hive) -> None:
    match verb:
        case "spawn":
            hive.spawn("bob")
        case "rebuild":
            hive.rebuild("alice")
        case "approve-good" | "approve-failing":
            Proposals(hive).approve(1)
        case "destroy":
            hive.destroy("alice")
        case "destroy-purge":
            hive.destroy("alice", purge=True)
        case _:
            raise AssertionError(verb)


def recover(verb: str, hive: Hive) -> None:
    """What an operator does after a failure: re-run the command, then doctor --repair."""
    if verb.startswith("approve"):
        status = Proposals(hive).store.get(1).status
        if status in (ProposalStatus.PENDING, ProposalStatus.BUILDING):
            # A failing build ends as failed/1: a consistent end too.
            with contextlib.suppress(HivegenError):
                Proposals(hive).approve(1)
    else:
        # The first run may have got to the end after all (a failed `systemctl show`
        # inside nixos-container reads as "not running", as in the real script).
        done = "no agent named" if verb == "destroy-purge" else "already exists and is running"
        try:
            run_verb(verb, hive)
        except HivegenError as exc:
            if done not in str(exc):
                raise
    Doctor(hive).run(repair=True)


def check_recovered(verb: str, world: World, manager_head: str) -> list[str]:
    """Every way the hive is not as it should be after recovery (empty: recovered)."""
    hive = world.hive()
    problems = [f"doctor: {f.check}: {f.message}" for f in Doctor(hive).run().problems]
    layout = hive.layout
    states = {s.name: s.state for s in hive.status()}
    if verb != "destroy-purge":
        proposed = layout.proposed("alice")
        if git(proposed, "rev-parse", "HEAD") != manager_head:
            problems.append("the manager's last commit in alice's proposed repo is lost")
        if not (layout.notes("alice") / "notes.md").exists():
            problems.append("alice's notes were deleted")
        if not (layout.credentials("alice") / "token").exists():
            problems.append("alice's credentials were deleted")
    expected = {
        "spawn": ("bob", AgentState.RUNNING),
        "rebuild": ("alice", AgentState.RUNNING),
        "approve-good": ("alice", AgentState.RUNNING),
        "approve-failing": ("alice", AgentState.RUNNING),
        "destroy": ("alice", AgentState.TOMBSTONE),
    }.get(verb)
    if expected and states.get(expected[0]) is not expected[1]:
        problems.append(f"{expected[0]} is {states.get(expected[0])}, not {expected[1]}")
    if verb == "destroy-purge" and ("alice" in states or layout.applied("alice").exists()):
        problems.append("alice was not purged")
    if states.get("hm1nd") is not AgentState.RUNNING:
        problems.append("the manager is not running")
    if verb == "approve-good":
        status = Proposals(hive).store.get(1).status
        if status not in (ProposalStatus.DEPLOYED, ProposalStatus.FAILED):
            problems.append(f"proposal 1 is {status}")
    return problems


SCENARIOS: dict[str, Callable[[Hive], None]] = {
    "spawn": nothing,
    "rebuild": limits_change,
    "approve-good": with_proposal(GOOD),
    "approve-failing": with_proposal(BROKEN),
    "destroy": nothing,
    "destroy-purge": nothing,
}


@pytest.mark.parametrize("verb", list(SCENARIOS))
def test_fault_at_every_simulated_call_recovers(
    verb: str, tmp_path: Path, hyperhive_flake: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = build_world(tmp_path, hyperhive_flake, SCENARIOS[verb])
    manager_head = git(world.hive().layout.proposed("alice"), "rev-parse", "HEAD")
    failures = []
    step = 0
    while True:
        step += 1
        world.restore()
        monkeypatch.setenv("HIVEGEN_SIMHOST_FAULT", str(step))
        try:
            run_verb(verb, world.hive())
            injected = False
        except HivegenError:
            injected = True
        log = (world.hive().config.host.simulated_root / "log").read_text()
        hit = "# injected fault" in log
        monkeypatch.delenv("HIVEGEN_SIMHOST_FAULT")
        if not hit:
            assert not injected or verb == "approve-failing", "failed without a fault"
            break  # the verb made fewer than `step` simulated calls: all were covered
        recover(verb, world.hive())
        problems = check_recovered(verb, world, manager_head)
        RESULTS.append((verb, f"simulated call {step} fails", not problems))
        if problems:
            failures.append(f"fault at call {step}: {problems}")
        assert step < 60, "runaway"
    assert step > 1, "the verb made no simulated call: the test proves nothing"
    assert not failures, "\n".join(failures)


def hivegen_cmd(world: World, verb: str) -> list[str]:
    base = [sys.executable, "-m", "hivegen", "--config", str(world.config_path)]
    return {
        "spawn": [*base, "spawn", "bob"],
        "approve-good": [*base, "approve", "1"],
        "destroy": [*base, "destroy", "alice"],
    }[verb]


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("verb", ["spawn", "approve-good", "destroy"])
def test_sigkill_while_a_simulated_command_hangs(
    verb: str, tmp_path: Path, hyperhive_flake: str
) -> None:
    world = build_world(tmp_path, hyperhive_flake, SCENARIOS[verb])
    manager_head = git(world.hive().layout.proposed("alice"), "rev-parse", "HEAD")
    failures = []
    for step in (1, 2, 3, 5):
        world.restore()
        log = world.hive().config.host.simulated_root / "log"
        env = {**os.environ, "HIVEGEN_SIMHOST_FAULT": f"{step}:hang"}
        proc = subprocess.Popen(
            hivegen_cmd(world, verb),
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and "# injected fault (hang)" not in log.read_text():
            assert time.monotonic() < deadline, "the injected hang never came"
            time.sleep(0.05)
        hit = proc.poll() is None
        kill_group(proc)
        if not hit:
            continue
        recover(verb, world.hive())
        problems = check_recovered(verb, world, manager_head)
        RESULTS.append((verb, f"SIGKILL while simulated call {step} hangs", not problems))
        if problems:
            failures.append(f"killed at call {step}: {problems}")
    assert not failures, "\n".join(failures)


GIT_SHIM = """#!/bin/sh
# Counts git calls; at the Nth, SIGKILLs the whole process group (hivegen included).
n=$(( $(cat "$HG_GIT_COUNTER" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$HG_GIT_COUNTER"
if [ "$n" = "$HG_KILL_AT" ]; then kill -9 0; fi
exec {git} "$@"
"""


@pytest.mark.parametrize("verb", ["spawn", "approve-good"])
def test_sigkill_while_running_git(verb: str, tmp_path: Path, hyperhive_flake: str) -> None:
    world = build_world(tmp_path, hyperhive_flake, SCENARIOS[verb])
    manager_head = git(world.hive().layout.proposed("alice"), "rev-parse", "HEAD")
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    real_git = shutil.which("git")
    assert real_git
    (shim_dir / "git").write_text(GIT_SHIM.format(git=real_git))
    (shim_dir / "git").chmod(0o755)
    counter = tmp_path / "git-calls"
    failures = []
    killed = 0
    for step in range(2, 40, 6):
        world.restore()
        counter.unlink(missing_ok=True)
        env = {
            **os.environ,
            "PATH": f"{shim_dir}:{os.environ['PATH']}",
            "HG_GIT_COUNTER": str(counter),
            "HG_KILL_AT": str(step),
        }
        proc = subprocess.Popen(
            hivegen_cmd(world, verb),
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        code = proc.wait(timeout=120)
        if code != -signal.SIGKILL:
            break  # fewer than `step` git calls: finished normally
        killed += 1
        recover(verb, world.hive())
        problems = check_recovered(verb, world, manager_head)
        RESULTS.append((verb, f"SIGKILL at git call {step}", not problems))
        if problems:
            failures.append(f"killed at git call {step}: {problems}")
    assert killed >= 2
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("verb", ["spawn", "approve-good", "destroy"])
def test_sigkill_at_a_random_time_recovers(verb: str, tmp_path: Path, hyperhive_flake: str) -> None:
    """SIGKILL (or SIGINT, SIGTERM) at a time drawn from the verb's own duration, with a
    fixed seed: what the points above cannot foresee. Bounded: four trials per verb."""
    import random

    world = build_world(tmp_path, hyperhive_flake, SCENARIOS[verb])
    manager_head = git(world.hive().layout.proposed("alice"), "rev-parse", "HEAD")
    started = time.monotonic()
    uninterrupted = subprocess.run(hivegen_cmd(world, verb), capture_output=True, check=False)
    duration = time.monotonic() - started
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    draw = random.Random(f"hivegen-{verb}")  # noqa: S311 (not for security: a fixed plan)
    failures = []
    for trial in range(4):
        world.restore()
        delay = draw.uniform(0.05, duration)
        sig = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM, signal.SIGKILL)[trial]
        proc = subprocess.Popen(
            hivegen_cmd(world, verb),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=120)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what a SIGINT/SIGTERM left running
        recover(verb, world.hive())
        problems = check_recovered(verb, world, manager_head)
        step = f"{sig.name} at {delay:.2f}s of {duration:.2f}s"
        RESULTS.append((verb, step, not problems))
        if problems:
            failures.append(f"{step}: {problems}")
    assert not failures, "\n".join(failures)
