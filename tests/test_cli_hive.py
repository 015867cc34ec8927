"""The CLI against a hive on the simulated host (real git and Nix): the verbs'
options, questions, views and messages an operator meets. (tests/test_cli.py holds
the ones that need neither git nor Nix: the flake's offline check runs it.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hivegen.cli import main
from tests.conftest import commit_dir


def test_did_you_mean_on_a_mistyped_command_and_agent(
    tmp_path: Path, hyperhive_flake: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import sim_config

    with pytest.raises(SystemExit) as exit_info:
        main(["stauts"])
    assert exit_info.value.code == 2
    assert "unknown command 'stauts'; did you mean 'status'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["meta", "snyc"])
    assert "did you mean 'sync'?" in capsys.readouterr().err
    config = sim_config(tmp_path, hyperhive_flake)
    assert main(["--config", str(config), "spawn", "alice"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "stop", "alcie"]) == 2
    err = capsys.readouterr().err
    assert "no agent named 'alcie'" in err
    assert "did you mean 'alice'?" in err


def test_propose_takes_the_tip_of_main_and_refuses_a_duplicate(
    tmp_path: Path, hyperhive_flake: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import alice_with_a_commit

    cfg, sha = alice_with_a_commit(tmp_path, hyperhive_flake)
    capsys.readouterr()
    assert main([*cfg, "propose", "alice", "--json"]) == 0  # no REV: the tip of main
    made = json.loads(capsys.readouterr().out)
    assert (made["sha"], made["subject"]) == (sha, "one")  # subject, as pending has
    for again in (["alice"], ["alice", "HEAD"], ["alice", "main"], ["alice", sha[:7]]):
        assert main([*cfg, "propose", *again]) == 2, again
        err = capsys.readouterr().err
        assert f"alice {sha[:12]} is already proposal 1, pending" in err
    # Nothing else is taken for a name: a branch, a ref expression, an option.
    for rev in ("feature", "main~1", "-all", "HEAD^{tree}"):
        assert main([*cfg, "propose", "alice", "--", rev]) == 2, rev
        assert "invalid commit" in capsys.readouterr().err


def _on_a_pty(argv: list[str], answer: bytes) -> tuple[int, str]:
    """Run hivegen with a terminal for stdin and stderr; answer its question."""
    import os
    import pty
    import subprocess
    import sys

    from tests.ptys import read_rest, read_until

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hivegen", *argv],
        stdin=slave,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    seen = read_until(master, rb"\[y/N\]", b"")
    os.write(master, answer)
    code = proc.wait(timeout=120)
    seen += read_rest(master)
    os.close(master)
    return code, seen.decode(errors="replace")


def test_destructive_verbs_ask_on_a_tty_and_refuse_without_one(
    tmp_path: Path, hyperhive_flake: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import sim_config

    config = sim_config(tmp_path, hyperhive_flake)
    cfg = ["--config", str(config)]
    assert main([*cfg, "spawn", "hm1nd"]) == 0
    assert main([*cfg, "spawn", "alice"]) == 0
    applied = tmp_path / "state/applied/alice"
    # Rolling back to deployed/0 is a question only once alice runs something else.
    assert main([*cfg, "rollback", "alice", "--to", "deployed/0"]) == 2
    assert "alice already runs deployed/0" in capsys.readouterr().err  # not asked first
    proposed = tmp_path / "state/agents/alice/config"
    (proposed / "agent.nix").write_text('{ ... }: { environment.variables.X = "1"; }\n')
    commit_dir(proposed, "one")
    assert main([*cfg, "propose", "alice"]) == 0
    assert main([*cfg, "approve", "1"]) == 0
    capsys.readouterr()
    # No terminal (as here, under pytest), no --yes: refused before anything is done.
    for verb in (
        ["destroy", "alice", "--purge"],
        ["destroy", "hm1nd"],
        ["rollback", "alice", "--to", "deployed/0"],
    ):
        assert main([*cfg, *verb]) == 2, verb
        err = capsys.readouterr().err
        assert "without confirmation" in err, err
        assert "hint: add --yes" in err, err
    assert applied.is_dir()
    # On a terminal: the question, and "n" changes nothing.
    code, shown = _on_a_pty([*cfg, "destroy", "alice", "--purge"], b"n\n")
    assert "about to delete alice's container, repos, credentials and notes" in shown
    assert code == 1
    assert "not confirmed: nothing was changed" in shown
    assert applied.is_dir()
    code, shown = _on_a_pty([*cfg, "destroy", "alice", "--purge"], b"y\n")
    assert code == 0, shown
    assert not applied.exists()
    # A plain destroy of a sub-agent is not asked about.
    assert main([*cfg, "spawn", "bob"]) == 0
    assert main([*cfg, "destroy", "bob"]) == 0


def test_meta_sync_says_what_hand_edit_it_overwrote(
    tmp_path: Path, hyperhive_flake: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import sim_config

    config = sim_config(tmp_path, hyperhive_flake)
    cfg = ["--config", str(config)]
    assert main([*cfg, "spawn", "alice"]) == 0
    flake = tmp_path / "state/meta/flake.nix"
    rendered = flake.read_text()
    flake.write_text(rendered.replace("{", "{ # my tweak\n", 1))
    capsys.readouterr()
    assert main([*cfg, "meta", "sync"]) == 0
    out = capsys.readouterr().out
    assert "flake.nix had been edited by hand" in out
    assert "-{ # my tweak" in out
    assert "meta flake is up to date" not in out
    assert flake.read_text() == rendered
    assert main([*cfg, "meta", "sync", "--json"]) == 0  # nothing left to do
    assert json.loads(capsys.readouterr().out)["overwritten"] is None


def test_status_of_names_a_detail_view_and_watch(
    tmp_path: Path, hyperhive_flake: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    from tests.conftest import sim_config

    config = sim_config(tmp_path, hyperhive_flake)
    cfg = ["--config", str(config)]
    for name in ("alice", "bob"):
        assert main([*cfg, "spawn", name]) == 0
    assert main([*cfg, "stop", "bob"]) == 0
    capsys.readouterr()
    assert main([*cfg, "status", "alice"]) == 0
    detail = dict(
        line.split(":", 1) for line in capsys.readouterr().out.splitlines() if ":" in line
    )
    assert detail["agent"].strip() == "alice"
    assert detail["state"].strip() == "running"
    assert detail["wanted"].strip() == "running"
    assert detail["port"].strip() == "8879"
    assert main([*cfg, "status", "h-bob", "alice", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)["agents"]] == ["bob", "alice"]
    assert main([*cfg, "status", "alcie"]) == 2
    assert "did you mean 'alice'?" in capsys.readouterr().err

    watch = subprocess.Popen(
        [sys.executable, "-m", "hivegen", *cfg, "status", "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Interrupted once it has refreshed twice (not after a fixed time: a loaded machine
    # may take longer than that to start it).
    assert watch.stdout is not None
    seen = []
    for line in watch.stdout:
        seen.append(line)
        if sum("every 0.2s: hivegen status" in s for s in seen) >= 2:
            break
    assert watch.poll() is None
    watch.send_signal(signal.SIGINT)
    rest, err = watch.communicate(timeout=30)
    out = "".join(seen) + rest
    assert watch.returncode == 0, err
    assert out.count("every 0.2s: hivegen status") >= 2
    assert "\x1b[" not in out  # not a terminal: no screen clearing
