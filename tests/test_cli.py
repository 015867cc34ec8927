from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hivegen import __version__
from hivegen.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors and --help/--version
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def no_host_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("hivegen.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    for needle in ("render", "port", "examples:", "exit codes", "HIVEGEN_CONFIG"):
        assert needle in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert (code, out.strip()) == (0, f"hivegen {__version__}")


def test_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["port", "alice"], capsys)[:2] == (0, "8879\n")
    code, out, _ = run(["port", "hm1nd", "--json"], capsys)
    assert code == 0
    assert json.loads(out) == {
        "name": "hm1nd",
        "port": 8000,
        "container": "hm1nd",
        "role": "manager",
    }


@pytest.mark.parametrize("bad", ["Alice", "abcdefghij", "a/b", "-", "a b", ""])
def test_bad_name_exits_2_saying_what_is_allowed(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["port", "--", bad], capsys)
    assert code == 2
    assert out == ""
    assert "invalid agent name" in err
    assert "lowercase letter" in err


def test_bad_config_exits_2_naming_file_table_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hive.toml"
    config.write_text('[limits]\nmemory_max = "2G; rm -rf /"\n')
    code, _, err = run(["--config", str(config), "port", "alice"], capsys)
    assert code == 2
    assert f"{config}: [limits] memory_max: '2G; rm -rf /' is not a memory limit" in err


def test_unknown_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["frobnicate"], capsys)[0] == 2
    # No abbreviations: `--conf` must not silently mean `--config`.
    assert run(["--conf", "x", "port", "alice"], capsys)[0] == 2


def test_render_meta_explicit_agents(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["render", "meta", "--agent", "alice", "--agent", "bob"], capsys)
    assert code == 0
    assert 'agent-alice.url = "git+file:///var/lib/hyperhive/applied/alice";' in out
    assert "agent-bob.url" in out
    assert "\x1b[" not in out  # not a terminal: no colour


def test_render_meta_without_agents_uses_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    for name, tagged in (("alice", True), ("bob", False), ("Bad", True)):
        git_dir = state / "applied" / name / ".git"
        (git_dir / "refs" / "tags").mkdir(parents=True)
        if tagged:
            (git_dir / "packed-refs").write_text(f"{'0' * 40} refs/tags/deployed/0\n")
    config = tmp_path / "hive.toml"
    config.write_text(f'[hive]\nstate_root = "{state}"\n')
    code, out, _ = run(["--config", str(config), "render", "meta"], capsys)
    assert code == 0
    assert "agent-alice.url" in out
    assert "agent-bob" not in out  # no deployed/0: not (yet) part of the hive
    assert "Bad" not in out


def test_render_meta_empty_hive_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["render", "meta"], capsys)
    assert code == 0
    assert "nixosConfigurations = {\n      };" in out
    assert "no registered agents" in err


def test_render_agent_files(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["render", "agent-nix", "alice"], capsys)
    assert code == 0
    assert "Per-agent overrides for alice." in out
    code, out, _ = run(["render", "agent-flake", "--json"], capsys)
    assert code == 0
    assert "nixosModules.default" in json.loads(out)["flake.nix"]
    assert run(["render", "agent-nix", "../x"], capsys)[0] == 2


def test_color_always_highlights(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["render", "agent-flake", "--color", "always"], capsys)
    assert code == 0
    assert "\x1b[" in out
    assert run(["render", "agent-flake", "--color", "rainbow"], capsys)[0] == 2


def test_heavy_modules_are_not_imported_for_help() -> None:
    code = (
        "import sys, hivegen.cli\n"
        "hivegen.cli.build_parser().format_help()\n"
        "heavy = [m for m in ('jinja2', 'pygments') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hivegen", "port", "coder"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "8202\n"


def test_a_reader_that_leaves_early_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hivegen port alice | true`: EPIPE is an OSError too, and must end quietly, 0."""
    import io
    import sys

    class Gone(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    class Stderr(io.StringIO):
        shown = ""

        def close(self) -> None:
            Stderr.shown = self.getvalue()
            super().close()

    monkeypatch.setattr(sys, "stdout", Gone())
    monkeypatch.setattr(sys, "stderr", Stderr())
    assert main(["port", "alice"]) == 0
    assert Stderr.shown == ""


def test_an_unknown_agent_and_an_unknown_proposal_are_both_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One exit code per kind of error: a name or id that does not exist is input (2)."""
    config = tmp_path / "hive.toml"
    config.write_text(
        f'[hive]\nstate_root = "{tmp_path / "s"}"\n[host]\nruntime = "simulated"\n'
        f'simulated_root = "{tmp_path / "h"}"\n'
    )
    for verb in (["start", "zed"], ["history", "zed"], ["approve", "7"], ["diff", "7"]):
        assert main(["--config", str(config), *verb]) == 2, verb
        assert capsys.readouterr().err.startswith("hivegen: error: no ")


def test_global_options_work_after_the_verb_and_every_verb_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hivegen.cli import build_parser

    parser = build_parser()
    missing = tmp_path / "missing.toml"
    before = parser.parse_args(["--config", str(missing), "-v", "status"])
    after = parser.parse_args(["status", "--config", str(missing), "-v"])
    for args in (before, after):
        assert (args.config, args.verbose, args.debug, args.no_wait) == (
            missing,
            True,
            False,
            False,
        )
    # Given before the verb and absent after it: not reset by the verb's parser.
    nested = parser.parse_args(["--no-wait", "--debug", "meta", "sync", "--check"])
    assert (nested.no_wait, nested.debug) == (True, True)
    assert parser.parse_args(["approve", "3", "--no-wait"]).no_wait
    # And it is used: the file named after the verb is the one read.
    assert main(["status", "--config", str(missing)]) == 2
    assert f"{missing}: no such file" in capsys.readouterr().err
    [verbs] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, verb in verbs.choices.items():
        assert "global options:" in verb.format_help(), name
        assert "--no-wait" in verb.format_help(), name


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
    from tests.conftest import commit_dir, sim_config

    config = sim_config(tmp_path, hyperhive_flake)
    cfg = ["--config", str(config)]
    assert main([*cfg, "spawn", "alice"]) == 0
    proposed = tmp_path / "state/agents/alice/config"
    (proposed / "agent.nix").write_text('{ ... }: { environment.variables.X = "1"; }\n')
    sha = commit_dir(proposed, "one")
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
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hivegen", *argv],
        stdin=slave,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in seen:
        assert time.monotonic() < deadline, seen
        seen += os.read(master, 1024)
    os.write(master, answer)
    code = proc.wait(timeout=120)
    try:
        while chunk := os.read(master, 4096):
            seen += chunk
    except OSError:
        pass  # the other end closed
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
    import time

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
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["bob", "alice"]
    assert main([*cfg, "status", "alcie"]) == 2
    assert "did you mean 'alice'?" in capsys.readouterr().err

    watch = subprocess.Popen(
        [sys.executable, "-m", "hivegen", *cfg, "status", "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    time.sleep(1.5)
    assert watch.poll() is None
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=30)
    assert time.monotonic() < deadline
    assert watch.returncode == 0, err
    assert out.count("every 0.2s: hivegen status") >= 2
    assert "\x1b[" not in out  # not a terminal: no screen clearing
