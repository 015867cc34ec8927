"""The container lifecycle on the simulated host, with real git and Nix."""

from __future__ import annotations

import itertools
import json
import stat
from pathlib import Path

import pytest

from hivegen import meta as meta_mod
from hivegen import names, nspawn, process, registry, repos
from hivegen.cli import main
from hivegen.config import load_config
from hivegen.errors import HivegenError
from hivegen.hive import Hive
from hivegen.status import AgentState
from tests.conftest import commit_dir, git, sim_config

pytestmark = pytest.mark.nix  # run on Nix 2.8 here and on 2.26 in tests/nixroot


@pytest.fixture
def hive(tmp_path: Path, hyperhive_flake: str) -> Hive:
    return Hive(load_config(sim_config(tmp_path, hyperhive_flake)))


def by_name(hive: Hive) -> dict[str, tuple[AgentState, int]]:
    return {s.name: (s.state, s.main_pid) for s in hive.status()}


def states(hive: Hive) -> dict[str, AgentState]:
    return {name: state for name, (state, _) in by_name(hive).items()}


def conf(hive: Hive, container: str) -> dict[str, str]:
    text = nspawn.conf_path(hive.config, container).read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


def dropin(hive: Hive, container: str) -> Path:
    return nspawn.dropin_dir(hive.config, container) / "hyperhive-limits.conf"


def lock_inputs(hive: Hive) -> set[str]:
    return meta_mod.locked_inputs(meta_mod.read_lock(hive.layout.meta))


def test_full_cycle(hive: Hive, tmp_path: Path) -> None:
    layout = hive.layout
    hive.spawn("hm1nd")
    hive.spawn("alice")
    assert states(hive) == {"hm1nd": AgentState.RUNNING, "alice": AgentState.RUNNING}
    assert lock_inputs(hive) == {"hyperhive", "agent-alice", "agent-hm1nd"}

    alice = conf(hive, "h-alice")
    assert alice["PRIVATE_NETWORK"] == "0"
    assert alice["HOST_ADDRESS"] == alice["LOCAL_ADDRESS"] == ""
    run = tmp_path / "host/run/hyperhive"
    assert alice["EXTRA_NSPAWN_FLAGS"] == (
        f'"--bind={run}/agents/alice:/run/hive --bind={layout.root}/credentials/alice:/root/.claude'
        f" --bind={layout.root}/notes/alice:/agents/alice/state"
        f' --bind={layout.root}/shared:/shared"'
    )
    manager_flags = conf(hive, "hm1nd")["EXTRA_NSPAWN_FLAGS"]
    assert f"--bind={layout.root}/notes/hm1nd:/state " in manager_flags
    assert f"--bind={layout.root}/agents:/agents " in manager_flags
    assert f"--bind-ro={layout.root}/applied:/applied " in manager_flags
    assert f"--bind-ro={layout.root}/meta:/meta " in manager_flags
    # Every agent's notes, read-only: the manager can read them but not plant in them.
    assert manager_flags.endswith(f'--bind-ro={layout.root}/notes:/notes"')
    assert "credentials/alice" not in manager_flags
    assert dropin(hive, "h-alice").read_text() == "[Service]\nMemoryMax=2G\nCPUQuota=50%\n"
    assert stat.S_IMODE(layout.credentials("alice").stat().st_mode) == 0o700
    assert git(layout.applied("alice"), "tag", "--list") == "deployed/0"

    # stop / start
    hive.stop("alice")
    assert states(hive)["alice"] is AgentState.STOPPED
    hive.start("alice")
    assert states(hive)["alice"] is AgentState.RUNNING

    # rebuild with nothing changed: no restart (same leader pid)
    pid = by_name(hive)["alice"][1]
    conf_before = nspawn.conf_path(hive.config, "h-alice").read_bytes()
    log = hive.rebuild("alice")
    assert not any("restarted" in step for step in log.steps)
    assert by_name(hive)["alice"] == (AgentState.RUNNING, pid)
    assert nspawn.conf_path(hive.config, "h-alice").read_bytes() == conf_before

    # rebuild after a limit change: the drop-in changes and the container restarts
    limited = Hive(
        load_config(
            sim_config(
                tmp_path, hive.config.hive.hyperhive_flake, '[agents.alice]\nmemory_max = "4G"\n'
            )
        )
    )
    log = limited.rebuild("alice")
    assert any("restarted" in step for step in log.steps)
    assert by_name(limited)["alice"][1] != pid
    assert "MemoryMax=4G" in dropin(limited, "h-alice").read_text()

    # destroy: container and drop-in gone, out of meta, repos/credentials/notes kept
    (layout.notes("alice") / "notes.md").write_text("remember\n")
    (layout.credentials("alice") / "token").write_text("secret\n")
    hive.destroy("alice")
    assert states(hive)["alice"] is AgentState.TOMBSTONE
    assert not nspawn.conf_path(hive.config, "h-alice").exists()
    assert not nspawn.dropin_dir(hive.config, "h-alice").exists()
    assert lock_inputs(hive) == {"hyperhive", "agent-hm1nd"}
    assert "alice" not in (layout.meta / "flake.nix").read_text()
    assert (layout.notes("alice") / "notes.md").read_text() == "remember\n"
    assert (layout.credentials("alice") / "token").exists()
    assert git(layout.proposed("alice"), "log", "--format=%s") == "hive-c0re init"
    with pytest.raises(HivegenError, match="was destroyed"):
        hive.start("alice")

    # revive
    hive.spawn("alice")
    assert states(hive)["alice"] is AgentState.RUNNING
    assert lock_inputs(hive) == {"hyperhive", "agent-alice", "agent-hm1nd"}
    assert (layout.notes("alice") / "notes.md").read_text() == "remember\n"

    # destroy --purge: everything of alice's goes, nothing of the manager's
    hive.destroy("alice", purge=True)
    assert "alice" not in states(hive)
    for path in (
        layout.agents / "alice",
        layout.credentials("alice"),
        layout.applied("alice"),
        run / "agents/alice",
    ):
        assert not path.exists(), path
    assert states(hive) == {"hm1nd": AgentState.RUNNING}
    assert lock_inputs(hive) == {"hyperhive", "agent-hm1nd"}


def test_spawning_a_running_agent_is_an_error(hive: Hive) -> None:
    hive.spawn("alice")
    with pytest.raises(HivegenError, match="already exists and is running"):
        hive.spawn("alice")


def test_port_collision_is_refused_with_the_references_message(hive: Hive) -> None:
    first, second = colliding_pair()
    hive.spawn(first)
    hive.stop(first)  # stopped agents hold their port too
    with pytest.raises(HivegenError) as info:
        hive.spawn(second)
    assert str(info.value) == (
        f"port {names.agent_port(first)} is already taken by {first!r} — "
        "rename one of them and retry"
    )
    assert not hive.layout.proposed(second).exists()


def test_failed_create_leaves_conf_and_a_second_spawn_completes(hive: Hive) -> None:
    proposed = hive.layout.proposed("bob")
    proposed.mkdir(parents=True)
    (proposed / "flake.nix").write_text(
        (Path(__file__).parent.parent / "hivegen/templates/flake.nix.j2").read_text()
    )
    (proposed / "agent.nix").write_text(
        '{ ... }: { environment.variables.X = throw "bob is broken"; }\n'
    )
    commit_dir(proposed, "prepared by the manager")
    with pytest.raises(HivegenError, match="bob is broken"):
        hive.spawn("bob")
    assert nspawn.conf_path(hive.config, "h-bob").exists()  # left behind, as on NixOS
    assert states(hive)["bob"] is AgentState.STOPPED
    # The fix reaches the applied repo (as an approved proposal would) ...
    applied = hive.layout.applied("bob")
    (applied / "agent.nix").write_text("{ ... }: { }\n")
    commit_dir(applied, "fix")
    # ... and re-running spawn finishes the job.
    hive.spawn("bob")
    assert states(hive)["bob"] is AgentState.RUNNING
    assert dropin(hive, "h-bob").exists()


def test_status_of_many_agents_costs_one_process(hive: Hive) -> None:
    for index in range(50):
        name = f"a{index}"
        git_dir = hive.layout.applied(name) / ".git"
        (git_dir / "refs/tags/deployed").mkdir(parents=True)
        (git_dir / "refs/heads").mkdir(parents=True)
        sha = f"{index:040x}"
        (git_dir / "refs/heads/main").write_text(sha + "\n")
        (git_dir / "refs/tags/deployed/0").write_text(sha + "\n")
        path = nspawn.conf_path(hive.config, f"h-{name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("PRIVATE_NETWORK=0\n")
    hive.host  # noqa: B018 -- installing the simulated host is not part of the count
    before = process.started_count()
    statuses = hive.status()
    assert process.started_count() - before <= 2
    assert len(statuses) == 50
    assert {s.state for s in statuses} == {AgentState.STOPPED}
    assert statuses[0].deployed_tag == "deployed/0"


def test_foreign_container_is_reported_and_never_touched(hive: Hive, tmp_path: Path) -> None:
    hive.spawn("alice")
    foreign = nspawn.conf_path(hive.config, "h-x")
    foreign.write_text("PRIVATE_NETWORK=1\nHOST_ADDRESS=10.233.9.1\n")
    before = foreign.read_bytes()
    assert states(hive)["x"] is AgentState.FOREIGN
    with pytest.raises(HivegenError, match="hivegen did not create it"):
        hive.spawn("x")
    for verb in (hive.start, hive.stop, hive.rebuild, hive.destroy):
        with pytest.raises(HivegenError, match="no agent named 'x'"):
            verb("x")
    hive.rebuild("alice")
    hive.meta_sync()
    assert foreign.read_bytes() == before
    assert "agent-x" not in lock_inputs(hive)


def test_purge_refuses_a_planted_symlink(hive: Hive, tmp_path: Path) -> None:
    hive.spawn("alice")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep\n")
    creds = hive.layout.credentials("alice")
    for child in creds.iterdir():
        child.unlink()
    creds.rmdir()
    creds.symlink_to(outside)
    with pytest.raises(HivegenError, match="refusing to purge"):
        hive.destroy("alice", purge=True)
    assert (outside / "precious").read_text() == "keep\n"
    assert hive.layout.applied("alice").exists()


def test_cli_status_json_and_list(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(tmp_path / "hive.toml")
    assert main(["--config", config, "spawn", "alice"]) == 0
    out, err = capsys.readouterr()
    assert "alice: created container h-alice" in out
    assert "[h-alice] " in err  # nix build output streamed with the container prefix
    assert main(["--config", config, "status", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["agents"]
    assert row["name"] == "alice"
    assert row["state"] == "running"
    assert row["port"] == 8879
    assert row["deployed_tag"] == "deployed/0"
    assert row["limits"] == {"memory_max": "2G", "cpu_quota": "50%"}
    assert main(["--config", config, "list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "NAME   CONTAINER  ROLE   PORT",
        "alice  h-alice    agent  8879",
    ]
    assert registry.registered_agents(hive.config) == ("alice",)


def test_a_unit_that_failed_to_start_shows_as_failed(hive: Hive) -> None:
    hive.spawn("alice")
    hive.stop("alice")
    profile = hive.config.host.simulated_root / "profiles/per-container/h-alice"
    for link in profile.iterdir():
        link.unlink()
    # `nixos-container start` itself (hivegen's start would build the profile first): the
    # unit's script runs `nixos-container update`, which builds attr "container" and fails.
    with pytest.raises(HivegenError, match="start"):
        hive.host.start("h-alice")
    assert states(hive)["alice"] is AgentState.FAILED


def colliding_pair() -> tuple[str, str]:
    """Two valid agent names with the same port, found by brute force."""
    seen: dict[int, str] = {}
    for letters in itertools.product("abcdefghijklmnopqrstuvwxyz", repeat=3):
        name = "".join(letters)
        port = names.agent_port(name)
        if port in seen:
            return seen[port], name
        seen[port] = name
    raise AssertionError("no collision among three-letter names")


def test_start_is_refused_while_a_running_agent_holds_the_port(hive: Hive) -> None:
    first, second = colliding_pair()
    hive.spawn(first)
    # `second` joins behind spawn's back (spawn would refuse it), as an older hive might
    # hold such a pair: start must still never run both at once.
    repos.seed(hive.config, hive.git, second)
    hive.meta_sync()
    hive.host.create(f"h-{second}", hive.host.flake_ref(second))
    nspawn.verify_binds(hive.config, hive.spec(second), create=True)
    nspawn.write_conf(hive.config, hive.spec(second))
    port = names.agent_port(first)
    with pytest.raises(HivegenError, match=f"port {port} is already taken by '{first}'"):
        hive.start(second)
    hive.stop(first)
    hive.start(second)  # the port is free while `first` is stopped
    with pytest.raises(HivegenError, match=f"already taken by '{second}'"):
        hive.start(first)
    with pytest.raises(HivegenError, match=f"already taken by '{second}'"):
        hive.restart(first)
