"""Several hivegens at once: the hive lock serializes them and loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hivegen import meta as meta_mod
from hivegen.config import load_config
from hivegen.doctor import Doctor
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.status import AgentState
from hivegen.store import ProposalStatus
from tests.conftest import commit_dir, git, sim_config


def hivegen(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hivegen", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def test_eight_spawns_at_once(tmp_path: Path, hyperhive_flake: str) -> None:
    config = sim_config(tmp_path, hyperhive_flake)
    names = [f"agent{i}" for i in range(8)]
    procs = [hivegen(config, "spawn", name) for name in names]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0] * 8, results
    waited = sum("waiting for another hivegen" in err for _, _, err in results)
    assert waited >= 1  # they really ran at the same time and queued on the lock
    hive = Hive(load_config(config))
    assert {s.name: s.state for s in hive.status()} == dict.fromkeys(names, AgentState.RUNNING)
    flake = (hive.layout.meta / "flake.nix").read_text()
    assert all(f"agent-{name}.url" in flake for name in names)
    locked = meta_mod.locked_inputs(meta_mod.read_lock(hive.layout.meta))
    assert locked == {"hyperhive", *(f"agent-{n}" for n in names)}
    assert not Doctor(hive).run().problems


def test_four_approves_at_once_serialize(tmp_path: Path, hyperhive_flake: str) -> None:
    config = sim_config(tmp_path, hyperhive_flake)
    hive = Hive(load_config(config))
    hive.spawn("alice")
    proposals = Proposals(hive)
    proposed = hive.layout.proposed("alice")
    shas = []
    for index in range(4):
        (proposed / "agent.nix").write_text(
            f'{{ ... }}: {{ environment.variables.N = "{index}"; }}\n'
        )
        shas.append(commit_dir(proposed, f"change {index}"))
        proposals.propose("alice", shas[-1])
    # --force: whichever runs after a later one is superseded (approve would refuse it);
    # this test is about the lock serializing them, not about that refusal.
    procs = [hivegen(config, "approve", str(i), "--force") for i in range(1, 5)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0] * 4, results
    assert [proposals.store.get(i).status for i in range(1, 5)] == [ProposalStatus.DEPLOYED] * 4
    deploys = git(hive.layout.meta, "log", "--format=%s").splitlines()
    assert sorted(line.split()[2] for line in deploys if line.startswith("deploy ")) == [
        f"deployed/{i}" for i in range(1, 5)
    ]
    # main is the proposal deployed last, and the meta lock agrees with it.
    last = deploys[0].split()[2]
    main = git(hive.layout.applied("alice"), "rev-parse", "main")
    assert main == shas[int(last.split("/")[1]) - 1]
    lock = meta_mod.read_lock(hive.layout.meta)
    assert meta_mod.locked_node(lock, "agent-alice")["rev"] == main
    assert not Doctor(hive).run().problems


def test_status_answers_while_a_spawn_holds_the_lock(tmp_path: Path, hyperhive_flake: str) -> None:
    config = sim_config(tmp_path, hyperhive_flake)
    hive = Hive(load_config(config))
    hive.spawn("alice")
    log = hive.config.host.simulated_root / "log"
    env = {**os.environ, "HIVEGEN_SIMHOST_FAULT": "nixos-container:1:hang"}
    spawn = hivegen(config, "spawn", "bob", env=env)
    try:
        deadline = time.monotonic() + 60
        while "# injected fault (hang)" not in log.read_text():
            assert spawn.poll() is None, spawn.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # The spawn is stuck inside `nixos-container create`, holding the hive lock.
        started = time.monotonic()
        status = subprocess.run(
            [sys.executable, "-m", "hivegen", "--config", str(config), "status", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert time.monotonic() - started < 10
        assert {row["name"] for row in json.loads(status.stdout)["agents"]} >= {"alice"}
        blocked = subprocess.run(
            [
                sys.executable,
                "-m",
                "hivegen",
                "--config",
                str(config),
                "--no-wait",
                "stop",
                "alice",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert blocked.returncode == 1
        assert "another hivegen holds the hive lock" in blocked.stderr
        # It names who: the spawn's pid and command line.
        assert f"pid {spawn.pid}: hivegen --config {config} spawn bob" in blocked.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(spawn.pid, signal.SIGKILL)
        spawn.wait()
    # Killed mid-create: re-running the spawn completes it.
    Hive(load_config(config)).spawn("bob")
    assert {s.name: s.state for s in hive.status()}["bob"] is AgentState.RUNNING
    assert not Doctor(hive).run().problems
