"""Old hives (notes in agents/<n>/state) keep working: notes move, never lost or followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hivegen import nspawn
from hivegen.cli import main
from hivegen.config import load_config
from hivegen.hive import Hive
from hivegen.status import AgentState
from tests.conftest import sim_config


def make_legacy(hive: Hive, name: str, note: str) -> Path:
    """Put `name`'s notes back where hivegen kept them before, as an old hive has them."""
    legacy = hive.layout.legacy_notes(name)
    hive.layout.notes(name).rename(legacy)
    (legacy / "notes.md").write_text(note)
    conf = nspawn.conf_path(hive.config, f"h-{name}" if name != "hm1nd" else name)
    text = conf.read_text().replace(
        f"{hive.layout.root}/notes/{name}:", f"{hive.layout.root}/agents/{name}/state:"
    )
    conf.write_text(text)
    return legacy


@pytest.fixture
def legacy_hive(tmp_path: Path, hyperhive_flake: str) -> tuple[Hive, Path]:
    config_path = sim_config(tmp_path, hyperhive_flake)
    hive = Hive(load_config(config_path))
    hive.spawn("alice")
    return hive, config_path


def test_init_moves_old_notes_and_rewrites_the_conf(
    legacy_hive: tuple[Hive, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    hive, config_path = legacy_hive
    legacy = make_legacy(hive, "alice", "remember the milk\n")
    inode = legacy.stat().st_ino
    assert main(["--config", str(config_path), "doctor"]) == 3
    assert f"alice's notes are still in {legacy}" in capsys.readouterr().out
    assert main(["--config", str(config_path), "init"]) == 0
    out = capsys.readouterr().out
    assert f"moved alice's notes to {hive.layout.notes('alice')}" in out
    moved = hive.layout.notes("alice")
    assert (moved / "notes.md").read_text() == "remember the milk\n"
    assert moved.stat().st_ino == inode  # renamed, not copied: a running mount keeps it
    assert not os.path.lexists(legacy)
    conf = nspawn.conf_path(hive.config, "h-alice").read_text()
    assert f"--bind={moved}:/agents/alice/state" in conf
    assert f"{hive.layout.root}/agents/alice/state" not in conf
    assert main(["--config", str(config_path), "doctor"]) == 0


def test_doctor_repair_and_start_migrate_too(legacy_hive: tuple[Hive, Path]) -> None:
    hive, config_path = legacy_hive
    make_legacy(hive, "alice", "one\n")
    assert main(["--config", str(config_path), "doctor", "--repair"]) == 0
    assert (hive.layout.notes("alice") / "notes.md").read_text() == "one\n"
    # A verb that needs the notes migrates first: they are never hidden by a new empty dir.
    make_legacy(hive, "alice", "two\n")
    hive.restart("alice")
    assert (hive.layout.notes("alice") / "notes.md").read_text() == "two\n"
    assert {s.name: s.state for s in hive.status()}["alice"] is AgentState.RUNNING


def test_a_symlink_at_the_old_notes_path_is_never_followed(
    legacy_hive: tuple[Hive, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hive, config_path = legacy_hive
    legacy = make_legacy(hive, "alice", "mine\n")
    kept = tmp_path / "kept-notes"
    legacy.rename(kept)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "shadow").write_text("root:x:0\n")
    legacy.symlink_to(secret)  # what a manager plants in its RW /agents
    before = nspawn.conf_path(hive.config, "h-alice").read_bytes()
    hive.stop("alice")
    for args in (["init"], ["start", "alice"], ["doctor", "--repair"]):
        capsys.readouterr()
        code = main(["--config", str(config_path), *args])
        out = capsys.readouterr()
        assert code == (3 if args[0] == "doctor" else 2), (args, out)
        assert f"unsafe path {legacy}: it is a symlink" in out.out + out.err
        assert legacy.is_symlink()
        assert (secret / "shadow").read_text() == "root:x:0\n"
        assert not os.path.lexists(hive.layout.notes("alice"))
        assert nspawn.conf_path(hive.config, "h-alice").read_bytes() == before
    assert {s.name: s.state for s in hive.status()}["alice"] is AgentState.STOPPED


def test_old_notes_beside_new_ones_are_left_for_the_operator(
    legacy_hive: tuple[Hive, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    hive, config_path = legacy_hive
    legacy = hive.layout.legacy_notes("alice")
    legacy.mkdir()
    (legacy / "stray.md").write_text("written after the move\n")
    assert main(["--config", str(config_path), "doctor", "--repair"]) == 0  # a note only
    out = capsys.readouterr().out
    assert f"{legacy} holds files, but alice's notes are in" in out
    assert (legacy / "stray.md").exists()
