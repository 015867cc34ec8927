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
        "schema": "hivegen.port/1",
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
    assert "nixosModules.default" in json.loads(out)["files"]["flake.nix"]
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
        "heavy = [m for m in ('jinja2', 'pygments', 'shtab', 'hivegen.cli.manpage')\n"
        "         if m in sys.modules]\n"
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
