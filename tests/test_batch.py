"""Lifecycle verbs on several agents and --all (hivegen.batch), on the simulated host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hivegen.cli import main
from hivegen.config import load_config
from hivegen.hive import Hive
from tests.conftest import sim_config

MANAGER = "hm1nd"


@pytest.fixture
def cfg(tmp_path: Path, hyperhive_flake: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    config = sim_config(tmp_path, hyperhive_flake)
    argv = ["--config", str(config)]
    # Several names on spawn: the manager first, whatever the order given.
    assert main([*argv, "spawn", "bob", MANAGER, "alice", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [a["agent"] for a in report["agents"]] == [MANAGER, "bob", "alice"]
    assert report["ok"] is True
    return argv


def states(cfg: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert main([*cfg, "status", "--json"]) == 0
    return {row["name"]: row["state"] for row in json.loads(capsys.readouterr().out)["agents"]}


def test_stop_and_start_all_in_the_hives_order(
    cfg: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*cfg, "stop", "--all", "--json"]) == 0
    stopped = json.loads(capsys.readouterr().out)
    # The agents answer to the manager: it stops last.
    assert [a["agent"] for a in stopped["agents"]] == ["alice", "bob", MANAGER]
    assert all(a["ok"] and a["steps"] for a in stopped["agents"])
    assert set(states(cfg, capsys).values()) == {"stopped"}
    assert main([*cfg, "start", "--all"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split(":")[0] == MANAGER  # first up
    assert {line.split(":")[0] for line in out} == {MANAGER, "alice", "bob"}
    assert set(states(cfg, capsys).values()) == {"running"}


def test_several_names_once_each(cfg: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*cfg, "stop", "bob", "alice", "bob"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()] == ["bob", "alice"]
    assert states(cfg, capsys) == {MANAGER: "running", "alice": "stopped", "bob": "stopped"}


def test_an_unknown_name_stops_the_batch_before_it_starts(
    cfg: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*cfg, "stop", "alice", "bobb"]) == 2
    err = capsys.readouterr().err
    assert "no agent named 'bobb'" in err
    assert "did you mean 'bob'?" in err
    assert states(cfg, capsys)["alice"] == "running"  # nothing was done


def test_one_failure_does_not_stop_the_others(
    cfg: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # alice's container is gone behind hivegen's back: its start fails, bob's does not.
    hive = Hive(load_config(Path(cfg[1])))
    assert main([*cfg, "stop", "alice", "bob"]) == 0
    hive.host.destroy("h-alice")
    capsys.readouterr()
    assert main([*cfg, "start", "alice", "bob", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    by_agent = {a["agent"]: a for a in report["agents"]}
    assert by_agent["alice"]["ok"] is False
    assert by_agent["alice"]["error"]["message"]
    assert by_agent["bob"]["ok"] is True
    assert states(cfg, capsys)["bob"] == "running"
    assert main([*cfg, "start", "alice", "bob"]) == 1
    err = capsys.readouterr().err
    assert "hivegen: error: alice: " in err
    assert "hivegen: start failed for 1 of 2: alice" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["start"], "start needs an agent name, or --all for every agent"),
        (["stop", "alice", "--all"], "name agents or give --all, not both"),
    ],
)
def test_names_or_all_is_a_usage_error(
    cfg: list[str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([*cfg, *argv]) == 2
    assert message in capsys.readouterr().err


def test_spawn_and_destroy_take_no_all(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("spawn", "destroy"):
        with pytest.raises(SystemExit) as exit_info:
            main([verb, "alice", "--all"])
        assert exit_info.value.code == 2
        assert "unrecognized arguments: --all" in capsys.readouterr().err
