"""hive.sqlite as an index: read-only verbs never wait on it or crash on it, and its ids
are never reused (issue 12)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hivegen.cli import main
from hivegen.config import load_config
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from tests.conftest import commit_dir, git, sim_config


@pytest.fixture
def hive(tmp_path: Path, hyperhive_flake: str) -> Hive:
    hive = Hive(load_config(sim_config(tmp_path, hyperhive_flake)))
    hive.spawn("alice")
    proposed = hive.layout.proposed("alice")
    (proposed / "agent.nix").write_text("{ ... }: { }  # one\n")
    Proposals(hive).propose("alice", commit_dir(proposed, "one"))
    return hive


def cli(hive: Hive, *args: str) -> int:
    assert hive.config.source is not None
    return main(["--config", str(hive.config.source), *args])


def test_status_does_not_wait_for_a_writer(hive: Hive, capsys: pytest.CaptureFixture[str]) -> None:
    writer = sqlite3.connect(hive.layout.database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE proposals SET note = 'being written' WHERE id = 1")
        start = time.monotonic()
        capsys.readouterr()
        assert cli(hive, "status") == 0
        assert cli(hive, "pending") == 0
        assert cli(hive, "history", "alice") == 0
        elapsed = time.monotonic() - start
        out = capsys.readouterr().out
        assert "being written" not in out  # the snapshot before the writer's change
        assert "one" in out
        assert elapsed < 10, elapsed  # a write lock would have waited 30 s, then crashed
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize("content", [b"garbage, not sqlite\n" * 100, b""])
def test_a_damaged_database_is_one_clear_line(
    hive: Hive, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    database = hive.layout.database
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    database.write_bytes(content)
    capsys.readouterr()
    code = cli(hive, "pending")
    err = capsys.readouterr().err
    if content:
        assert code == 1
        assert f"{database} is damaged or not a hivegen database" in err
        assert "Traceback" not in err
        assert cli(hive, "status") == 1
    else:
        # An empty file is a database no proposal was ever written to.
        assert code == 0
    assert database.read_bytes() == content  # a read never changes the file


def test_a_propose_killed_after_its_tag_never_reuses_the_id(
    tmp_path: Path, hyperhive_flake: str
) -> None:
    """Issue 12, reproduction 1: killed while `nix-instantiate --parse` runs, after the
    proposal tag is written; the sqlite row rolls back with the process."""
    config_path = sim_config(tmp_path, hyperhive_flake)
    hive = Hive(load_config(config_path))
    hive.spawn("alice")
    proposed = hive.layout.proposed("alice")
    (proposed / "agent.nix").write_text("{ ... }: { }  # first\n")
    first = commit_dir(proposed, "first")
    killer = tmp_path / "killer-bin"
    killer.mkdir()
    (killer / "nix-instantiate").write_text("#!/bin/sh\nkill -9 $PPID\nsleep 5\n")
    (killer / "nix-instantiate").chmod(0o755)
    env = {**os.environ, "PATH": f"{killer}{os.pathsep}{os.environ['PATH']}"}
    argv = [sys.executable, "-m", "hivegen", "--config", str(config_path), "propose"]
    killed = subprocess.run([*argv, "alice", first], env=env, capture_output=True, check=False)
    assert killed.returncode == -signal.SIGKILL
    applied = hive.layout.applied("alice")
    assert "proposal/1" in git(applied, "tag", "--list").split()
    assert Proposals(hive).store.ids() == set()  # the row rolled back with the process

    (proposed / "agent.nix").write_text("{ ... }: { }  # second\n")
    second = Proposals(hive).propose("alice", commit_dir(proposed, "second"))
    assert second.id == 2  # never the orphan's id
    assert cli(hive, "doctor") == 3
    assert cli(hive, "doctor", "--repair") == 0
    pending = {p.id: p.fetched_sha for p in Proposals(hive).store.pending()}
    assert pending == {1: first, 2: second.fetched_sha}
    assert Proposals(hive).approve(1).proposal.status == "deployed"


def test_a_database_without_its_schema_reads_as_empty(tmp_path: Path) -> None:
    """What an older hivegen left when a refused first propose rolled the schema's
    creation back: a valid sqlite file with no table. Read as no proposals, unchanged;
    a refused change now keeps the schema it made."""
    from hivegen.store import Store

    path = tmp_path / "hive.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE x (a)")
    db.execute("DROP TABLE x")
    db.commit()
    db.close()
    before = path.read_bytes()
    store = Store(path)
    assert store.damage() is None
    assert (store.ids(), store.pending_counts(), store.pending()) == (set(), {}, [])
    assert path.read_bytes() == before

    fresh = Store(tmp_path / "fresh.sqlite")
    with pytest.raises(RuntimeError), fresh.connect():
        raise RuntimeError("a refused change")
    assert fresh.damage() is None
    with fresh.read() as connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert "proposals" in {row[0] for row in tables}
