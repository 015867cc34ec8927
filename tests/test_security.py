"""A hostile manager (and agents) against root: planted links at every bind source.

One hive for the module (the manager and alice, both stopped, one pending proposal
each). Each vector plants what a container could, runs every verb that writes a conf or
starts a container, then restores the path exactly: a refusal must leave nothing
changed, so the next vector starts from the same hive.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hivegen import nspawn
from hivegen.cli import main
from hivegen.config import load_config
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.status import AgentState
from hivegen.store import ProposalStatus
from tests.conftest import commit_dir, sim_config

VERBS = ("spawn", "start", "restart", "rebuild", "approve", "doctor --repair")


@dataclass
class World:
    hive: Hive
    config_path: Path
    outside: Path  # a host directory outside the state root, with a secret in it
    proposal: dict[str, int]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str) -> World:
    top = tmp_path_factory.mktemp("security")
    config_path = sim_config(top, hyperhive_flake)
    hive = Hive(load_config(config_path))
    proposals = Proposals(hive)
    ids = {}
    for name in ("hm1nd", "alice"):
        hive.spawn(name)
        proposed = hive.layout.proposed(name)
        (proposed / "agent.nix").write_text('{ ... }: { environment.variables.X = "1"; }\n')
        ids[name] = proposals.propose(name, commit_dir(proposed, "a change")).id
        hive.stop(name)
    outside = top / "host-secret"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOKEN-8d1f\n")
    return World(hive, config_path, outside, ids)


def cli(world: World, *args: str) -> int:
    return main(["--config", str(world.config_path), *args])


def run_verb(world: World, verb: str, agent: str) -> int:
    match verb:
        case "approve":
            return cli(world, "approve", str(world.proposal[agent]))
        case "doctor --repair":
            return cli(world, "doctor", "--repair")
        case _:
            return cli(world, verb, agent)


@contextlib.contextmanager
def planted(path: Path, target: Path) -> Iterator[None]:
    """`path` replaced by a symlink to `target`, as a container would; put back after."""
    aside = path.with_name(path.name + ".real-test")
    path.rename(aside)
    path.symlink_to(target)
    try:
        yield
    finally:
        path.unlink()
        aside.rename(path)


def snapshot_of(world: World) -> dict[str, object]:
    """Confs, drop-ins, unit states and proposal states: what a refusal must not change."""
    hive = world.hive
    confs = {p.name: p.read_bytes() for p in sorted(hive.config.host.containers_conf_dir.glob("*"))}
    states = {s.name: s.state for s in hive.status()}
    pending = {p.id: p.status for p in Proposals(hive).store.pending()}
    return {"confs": confs, "states": states, "pending": pending}


def binds_of(world: World, container: str) -> list[str]:
    text = nspawn.conf_path(world.hive.config, container).read_text()
    line = next(x for x in text.splitlines() if x.startswith("EXTRA_NSPAWN_FLAGS="))
    return [flag.split("=", 1)[1].split(":")[0] for flag in line.split('"')[1].split()]


def assert_no_bind_escapes(world: World) -> None:
    for container in ("hm1nd", "h-alice"):
        for source in binds_of(world, container):
            path = Path(source)
            assert os.path.realpath(path) == str(path), f"{source} goes through a link"
            assert not str(path).startswith(str(world.outside))


# (vector, agent the verbs run on, the path planted, relative to the hive)
BIND_VECTORS = {
    "notes of the manager": ("hm1nd", "state/notes/hm1nd"),
    "notes of an agent": ("alice", "state/notes/alice"),
    "credentials parent": ("alice", "state/credentials"),
    "credentials of an agent": ("alice", "state/credentials/alice"),
    "runtime dir": ("alice", "host/run/hyperhive/agents/alice"),
    "manager runtime dir": ("hm1nd", "host/run/hyperhive/manager"),
    "shared": ("alice", "state/shared"),
    "the manager's agents bind": ("hm1nd", "state/agents"),
}


@pytest.mark.parametrize("vector", list(BIND_VECTORS))
def test_a_planted_bind_source_is_refused_by_every_verb(
    world: World, vector: str, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, rel = BIND_VECTORS[vector]
    top = world.config_path.parent
    path = top / rel
    before = snapshot_of(world)
    with planted(path, world.outside):
        for verb in VERBS:
            capsys.readouterr()
            code = run_verb(world, verb, agent)
            err = capsys.readouterr()
            if verb == "doctor --repair":
                assert code == 3, (verb, err)
                assert f"unsafe path {path}: it is a symlink" in err.out, err.out
                assert "the hive is healthy" not in err.out
            else:
                assert code == 2, (verb, err)
                assert f"unsafe path {path}: it is a symlink" in err.err, (verb, err.err)
            # Same confs, nothing started: nspawn never opened the planted path.
            assert snapshot_of(world) == before, verb
        # doctor without --repair names it too, exit 3.
        capsys.readouterr()
        assert cli(world, "doctor") == 3
        assert str(path) in capsys.readouterr().out
    assert snapshot_of(world) == before
    assert world.outside.joinpath("secret.txt").read_text() == "TOKEN-8d1f\n"


@pytest.mark.parametrize("kind", ["file", "dir owned by someone else"])
def test_a_bind_source_of_the_wrong_type_or_owner_is_refused(
    world: World, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    top = world.config_path.parent
    before = snapshot_of(world)
    if kind == "file":
        path = top / "state/notes/alice"
        path.rename(path.with_name("alice.real-test"))
        path.write_text("not a directory\n")
        expected = f"unsafe path {path}: it is a regular file"
    else:
        # The parent of a bind source: whoever owns it could swap the source itself.
        path = top / "state/notes"
        os.chown(path, 4242, 4242)
        expected = f"unsafe path {path}: it is owned by uid 4242"
    try:
        capsys.readouterr()
        assert cli(world, "start", "alice") == 2
        assert expected in capsys.readouterr().err
        assert snapshot_of(world) == before
        assert cli(world, "doctor") == 3
        assert expected in capsys.readouterr().out
    finally:
        if kind == "file":
            path.unlink()
            path.with_name("alice.real-test").rename(path)
        else:
            os.chown(path, 0, 0)
    assert snapshot_of(world) == before


def test_a_bind_source_the_container_chmods_is_still_its_own(world: World) -> None:
    # Any agent can chmod /shared (the mount's root is the directory itself): that must
    # not stop other agents from starting. Only what lies *above* a source must be root's.
    shared = world.hive.layout.shared
    shared.chmod(0o777)
    try:
        world.hive.start("alice")
        assert {s.name: s.state for s in world.hive.status()}["alice"] is AgentState.RUNNING
        world.hive.stop("alice")
    finally:
        shared.chmod(0o755)


def test_a_planted_agent_dir_or_config_dir_is_never_followed(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hive = world.hive
    agents = hive.layout.agents
    # Another repo on the host, which a proposal must never read from.
    other = tmp_path / "other-repo"
    other.mkdir()
    (other / "agent.nix").write_text("{ ... }: { }\n")
    (other / "flake.nix").write_text("{ outputs = _: { }; }\n")
    sha = commit_dir(other, "someone else's")
    before = snapshot_of(world)
    for path in (agents / "alice", agents / "alice" / "config"):
        with planted(path, other):
            capsys.readouterr()
            assert cli(world, "propose", "alice", sha[:12]) == 2
            assert f"unsafe path {path}: it is a symlink" in capsys.readouterr().err
            assert cli(world, "spawn", "alice") == 2
            assert f"unsafe path {path}: it is a symlink" in capsys.readouterr().err
            assert cli(world, "doctor") == 3
            assert str(path) in capsys.readouterr().out
            # The verbs that bind nothing under agents/<n> are not stopped by it, and
            # nothing they write goes through it.
            assert cli(world, "start", "alice") == 0
            assert_no_bind_escapes(world)
            assert cli(world, "stop", "alice") == 0
            assert snapshot_of(world) == before
    assert snapshot_of(world) == before


def test_a_link_planted_in_the_agents_tree_is_reported(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    link = world.hive.layout.agents / "hm1nd" / "x"
    link.symlink_to("/")
    try:
        capsys.readouterr()
        assert cli(world, "doctor", "--repair") == 3
        out = capsys.readouterr().out
        assert f"{link} is a symlink (to '/')" in out
        assert link.is_symlink()  # never deleted, never followed
    finally:
        link.unlink()


def test_purge_never_deletes_through_a_planted_link(
    tmp_path: Path, hyperhive_flake: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = sim_config(tmp_path, hyperhive_flake)
    hive = Hive(load_config(config_path))
    hive.spawn("bob")
    victim = tmp_path / "victim"
    (victim / "config").mkdir(parents=True)
    (victim / "config" / "keep.txt").write_text("precious\n")
    agent_dir = hive.layout.agents / "bob"
    shutil.rmtree(agent_dir)
    agent_dir.symlink_to(victim)
    assert main(["--config", str(config_path), "destroy", "--purge", "--yes", "bob"]) == 2
    assert f"refusing to purge {agent_dir}: it is a symlink" in capsys.readouterr().err
    assert (victim / "config" / "keep.txt").read_text() == "precious\n"
    assert hive.layout.applied("bob").is_dir()  # nothing deleted before the refusal


def test_approve_after_a_refusal_still_deploys(world: World) -> None:
    """Last: the refusals above left the pending proposals approvable."""
    proposals = Proposals(world.hive)
    world.hive.start("alice")
    deployment = proposals.approve(world.proposal["alice"])
    assert deployment.proposal.status is ProposalStatus.DEPLOYED
