from __future__ import annotations

import os
from pathlib import Path

import pytest

from hivegen import nix
from hivegen.cli import main

pytestmark = pytest.mark.nix  # run on Nix 2.8 here and on 2.26 in tests/nixroot


@pytest.fixture(autouse=True)
def keep_nix_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo adds its offline settings to NIX_CONFIG for the rest of its process.
    monkeypatch.setenv("NIX_CONFIG", os.environ["NIX_CONFIG"])


def test_demo_builds_a_running_hive_and_teaches_the_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "hive-demo"
    assert main(["demo", str(target)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    config = target / "hive.toml"
    # The build output shown is the builds' own: not nix's note on the staged meta lock.
    assert "[h-alice] reloading container..." in captured.err
    assert "is dirty" not in captured.err
    for step in ("init", "spawn hm1nd", "spawn alice", "spawn bob", "status"):
        assert f"$ hivegen --config {config} {step}\n" in out
    # The manager proposes through its socket (hivegen serve runs meanwhile) and sees
    # the operator's decision there.
    asked = out.split("through its socket:\n", 1)[1]
    assert asked.startswith(
        '$ curl --unix-socket /run/hive/hive.sock http://hive/propose -d \'{"agent": "alice"}\'\n'
    )
    assert '"subject": "alice greets the operator"' in asked
    seen = out.split("the manager sees the decision", 1)[1].split("\n\n", 1)[0]
    assert "http://hive/proposals/1\n" in seen
    assert '"status": "deployed"' in seen
    assert not (target / "host/run/hyperhive/manager/hive.sock").exists()  # server stopped
    # A good proposal is deployed, a broken one rolled back with nix's error kept.
    assert "alice: deployed " in out
    assert " as deployed/1\n" in out
    history = out.split(f"$ hivegen --config {config} history alice\n", 1)[1]
    assert "failed/2" in history
    assert "error: alice forgot how to greet" in history
    # A base release reaches alice (the canary) and bob, who crashes on it and is put
    # back; the manager is never reached.
    upgrade = out.split(f"$ hivegen --config {config} upgrade --canary alice\n", 1)[1]
    report = [line.split() for line in upgrade.splitlines()[1:4]]
    assert report == [
        ["alice", "healthy", report[0][2]],
        ["bob", "rolled", "back", report[1][3]],
        ["hm1nd", "skipped", report[2][2]],
    ]
    assert "(hivegen rollout to update): bob, hm1nd" in out
    table = out.rsplit(f"$ hivegen --config {config} status\n", 1)[1].splitlines()
    assert table[0].split() == [
        "NAME",
        "CONTAINER",
        "ROLE",
        "PORT",
        "STATE",
        "DEPLOYED",
        "MEMORY",
        "CPU",
        "PENDING",
    ]
    rows = {line.split()[0]: line.split() for line in table[1:4]}
    assert set(rows) == {"alice", "bob", "hm1nd"}
    assert all(row[4] == "running" for row in rows.values())
    assert rows["alice"][5] == "deployed/1"
    assert rows["alice"][-3] == "4G"  # the demo's per-agent override

    # A second demo in the same place replaces the first.
    assert main(["demo", str(target)]) == 0
    capsys.readouterr()
    # The commands it printed work by hand.
    assert main(["--config", str(config), "stop", "alice"]) == 0
    assert "alice: stopped h-alice" in capsys.readouterr().out


def test_demo_refuses_a_directory_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious.txt").write_text("keep\n")
    assert main(["demo", str(tmp_path)]) == 2
    assert "not touching it" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]


def test_demo_refuses_a_path_hivegen_cannot_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", str(tmp_path / "with space")]) == 2
    assert "must be an absolute path" in capsys.readouterr().err
    assert not (tmp_path / "with space").exists()


def test_verbose_shows_each_external_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    assert main(["-v", "--config", str(tmp_path / "d/hive.toml"), "rebuild", "alice"]) == 0
    err = capsys.readouterr().err
    assert "$ nixos-container update h-alice --flake" in err
    # The one input bumped, as this nix spells it (`flake update INPUT` from 2.19 on).
    bump = (
        "flake update agent-alice --flake"
        if nix.version() >= nix.FLAKE_UPDATE_INPUT_SINCE
        else "flake lock --update-input agent-alice"
    )
    assert f"$ nix --extra-experimental-features 'nix-command flakes' {bump}" in err


def test_a_demo_whose_story_does_not_happen_fails_naming_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo checks its story from --json, not only exit codes: here the base release
    crashes the canary instead of bob, so `upgrade` still exits 1 as the story expects,
    but alice is put back and bob never reached, and the demo says so (exit 1)."""
    import hivegen.demo

    release = hivegen.demo.release_base

    def crashes_the_canary(root: Path, version: str, crash: tuple[str, ...] = ()) -> str:
        assert crash == ("bob",)
        return release(root, version, crash=("alice",))

    monkeypatch.setattr(hivegen.demo, "release_base", crashes_the_canary)
    assert main(["demo", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert "the demo's story did not happen at `upgrade`: expected alice (the canary) up" in err
    assert "alice running deployed/1 (needs rebuild)" in err
