"""A hostile manager plants symlinks in `/agents`; a real systemd-nspawn never follows them.

The manager writes `/agents` (the host's `<state>/agents`): it can replace anything in
there with a symlink to any path of the host. Nothing it can reach there is a bind
source any more (notes live in `<state>/notes/<n>`, see hivegen/safepath.py), so
restarting it and an agent after it planted links to a directory outside the state root
(at the old notes paths, in place of a proposed repo, and to `/`) binds what hivegen
checked, never what the links point to. Its own box: these tests rearrange the
manager's `/agents`, which test_real_systemd.py's lifecycle test relies on.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostbox.boxed import BoxedHive, assert_status_agrees, boxed_hive
from tests.hostbox.boxed import expected_binds as boxed_expected_binds

# One xdist group with test_containment, which watches the host for stray writes.
pytestmark = [pytest.mark.hostbox, pytest.mark.xdist_group("host")]

MANAGER = "hm1nd"
AGENT = "alice"
CONTAINERS = {MANAGER: MANAGER, AGENT: "h-alice"}
# Unique to this run: found in a container only if the secret directory was bound in.
TOKEN = f"planted-{uuid.uuid4().hex}"
EXIT_PROBLEMS = 3


@pytest.fixture(scope="module")
def boxed(
    hostbox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str
) -> Iterator[BoxedHive]:
    top = tmp_path_factory.mktemp("hostbox-planted")
    with boxed_hive(hostbox_rootfs, top, hyperhive_flake) as hive:
        hive.hivegen("init")
        for name in CONTAINERS:
            hive.hivegen("spawn", name)
        for name in CONTAINERS:
            (hive.dirs.state / "notes" / name / "note").write_text(f"note-{name}\n")
        yield hive


@pytest.fixture(scope="module")
def secret(boxed: BoxedHive) -> Path:
    """A host directory outside the state root, at the same path in the box."""
    path = boxed.dirs.top / "host-secret"
    path.mkdir(mode=0o755)
    (path / "secret.txt").write_text(f"{TOKEN}\n")
    return path


def planted_links(boxed: BoxedHive, secret: Path) -> dict[Path, str]:
    """Where the manager plants a symlink (as the host sees it) → its target."""
    agents = boxed.dirs.state / "agents"
    return {
        agents / MANAGER / "state": str(secret),  # the manager's notes, once
        agents / AGENT / "state": str(secret),  # alice's notes, once
        agents / AGENT / "config": str(secret),  # alice's proposed repo
        agents / MANAGER / "x": "/",
    }


@pytest.fixture
def planted(boxed: BoxedHive, secret: Path) -> Iterator[dict[Path, str]]:
    """What a hostile manager does from inside its container; undone afterwards."""
    plant = [
        # The proposed repo is moved aside (and back after), not lost.
        f"mv /agents/{AGENT}/config /agents/{AGENT}/config.real",
        f"ln -s {secret} /agents/{AGENT}/config",
        f"rm -rf /agents/{MANAGER}/state",
        f"ln -s {secret} /agents/{MANAGER}/state",
        f"rm -rf /agents/{AGENT}/state",
        f"ln -s {secret} /agents/{AGENT}/state",
        f"ln -s / /agents/{MANAGER}/x",
    ]
    out = boxed.in_container(MANAGER, " && ".join(plant))
    assert out.returncode == 0, out.stderr
    links = planted_links(boxed, secret)
    for link, target in links.items():
        assert link.is_symlink(), link
        assert str(link.readlink()) == target
    try:
        yield links
    finally:
        undo = [
            f"rm /agents/{MANAGER}/state /agents/{AGENT}/state /agents/{MANAGER}/x",
            f"rm /agents/{AGENT}/config",
            f"mv /agents/{AGENT}/config.real /agents/{AGENT}/config",
        ]
        out = boxed.in_container(MANAGER, " && ".join(undo))
        assert out.returncode == 0, out.stderr
        for link in links:
            assert not link.is_symlink(), link
        assert (boxed.dirs.state / "agents" / AGENT / "config").is_dir()


def expected_binds(boxed: BoxedHive) -> dict[str, dict[str, tuple[str, str]]]:
    return {
        MANAGER: boxed_expected_binds(boxed, MANAGER, manager=True),
        AGENT: boxed_expected_binds(boxed, AGENT, manager=False),
    }


def assert_secret_untouched(secret: Path) -> None:
    assert sorted(p.name for p in secret.iterdir()) == ["secret.txt"]
    assert (secret / "secret.txt").read_text() == f"{TOKEN}\n"


def test_the_secret_is_nowhere_before_anything_is_planted(boxed: BoxedHive, secret: Path) -> None:
    # The search does find the token where it is: a container it was bound into would
    # show it (the box itself sees the secret directory at the same path).
    found = boxed.box.run(["/usr/bin/grep", "-rlF", "--", TOKEN, str(secret)])
    assert found.stdout.split() == [str(secret / "secret.txt")]
    for name, container in CONTAINERS.items():
        assert boxed.bind_mounts(container) == expected_binds(boxed)[name]
        assert boxed.find_text(container, TOKEN) == []
    result = boxed.run_hivegen("doctor")
    assert result.returncode == 0, result.stdout + result.stderr


def test_restarting_after_the_manager_planted_symlinks_binds_none_of_them(
    boxed: BoxedHive, secret: Path, planted: dict[Path, str]
) -> None:
    leaders = {name: boxed.leader(container) for name, container in CONTAINERS.items()}
    # No bind source goes through /agents/<n>/: nothing for hivegen to refuse.
    for name in CONTAINERS:
        boxed.hivegen("restart", name)
    rows = assert_status_agrees(boxed)
    for name, container in CONTAINERS.items():
        assert rows[container]["state"] == "running"
        assert boxed.leader(container) != leaders[name], f"{container} was not restarted"

    for name, container in CONTAINERS.items():
        mounts = boxed.bind_mounts(container)
        assert mounts == expected_binds(boxed)[name]
        for source, _ in mounts.values():
            assert not Path(source).is_relative_to(secret), (container, mounts)
        assert boxed.find_text(container, TOKEN) == [], container

    # Each still has its own notes where they were, not what the links point to.
    assert boxed.find_text(MANAGER, f"note-{MANAGER}") == [f"/notes/{MANAGER}/note", "/state/note"]
    assert boxed.find_text(MANAGER, f"note-{AGENT}") == [f"/notes/{AGENT}/note"]
    assert boxed.find_text("h-alice", f"note-{AGENT}") == [f"/agents/{AGENT}/state/note"]
    # Inside the manager the links are what it made them: dangling (the host's path
    # does not exist in the container) or its own `/`.
    out = boxed.in_container(MANAGER, f"readlink /agents/{AGENT}/config; ls /agents/{AGENT}/config")
    assert out.stdout.splitlines() == [str(secret)]
    assert out.returncode != 0
    assert_secret_untouched(secret)


def test_doctor_names_every_planted_symlink(
    boxed: BoxedHive, secret: Path, planted: dict[Path, str]
) -> None:
    result = boxed.run_hivegen("doctor")
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_PROBLEMS, output
    for link in planted:
        # Named as the host sees it, as a symlink (not merely a path that starts so).
        named = re.compile(re.escape(str(link)) + r"(?![\w./-]).*symlink")
        assert any(named.search(line) for line in output.splitlines()), (link, output)
    assert TOKEN not in output
    assert_secret_untouched(secret)


def test_once_the_links_are_gone_the_hive_is_whole(boxed: BoxedHive, secret: Path) -> None:
    # The `planted` fixture removed the links and put alice's proposed repo back.
    result = boxed.run_hivegen("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTAINERS:
        boxed.hivegen("restart", name)
    assert_status_agrees(boxed)
    out = boxed.in_container(MANAGER, f"ls /agents/{AGENT}/config")
    assert out.returncode == 0, out.stderr
    assert "agent.nix" in out.stdout.split()
    for name, container in CONTAINERS.items():
        assert boxed.bind_mounts(container) == expected_binds(boxed)[name]
        assert boxed.find_text(container, TOKEN) == []
    assert_secret_untouched(secret)
