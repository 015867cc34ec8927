"""Start-up at Python's pace: a short command imports what it runs, nothing else.

Each command runs hivegen's CLI entry (`hivegen.cli.main`, what the console script
calls) in a fresh interpreter, which then reports what `sys.modules` holds. Nothing
here is timed (benchmarks/startup.py times them); a module that is imported where it
is not needed fails the test whatever the machine."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from hivegen.cli.common import _Lazy
from hivegen.cli.parser import _build, build_parser, parser_for, verb_of

# Never needed by `--help`, `--version` or the status of an empty hive: the dashboard
# and its server, templates and highlighting, the proposal database, the simulated
# host's tools, the process gateway (no command runs), and the verbs that deploy.
HEAVY = (
    "jinja2",
    "markupsafe",
    "pygments",
    "aiohttp",
    "asyncio",
    "ssl",
    "socket",
    "sqlite3",
    "subprocess",
    "shtab",
    "hivegen.simhost",
    "hivegen.serve",
    "hivegen.process",
    "hivegen.activation",
    "hivegen.health",
    "hivegen.proposals",
    "hivegen.rollout",
    "hivegen.cli.completion",
    "hivegen.cli.manpage",
)
# ... and the parser alone (`--help`, `--version`) reads no config, opens no hive, runs
# no verb and prints no document.
NOT_FOR_THE_PARSER = (
    "tomllib",
    "logging",
    "json",
    "hivegen.config",
    "hivegen.hive",
    "hivegen.cli.agent_verbs",
    "hivegen.cli.hive_verbs",
    "hivegen.cli.lifecycle_verbs",
    "hivegen.cli.proposal_verbs",
    "hivegen.cli.render_verbs",
    "hivegen.cli.serve_verbs",
    "hivegen.cli.demo_verb",
    "hivegen.cli.logs_verb",
    "hivegen.cli.rollout_verbs",
    "hivegen.jsondoc",
)

# The modules are listed before this report imports json to say what they are.
REPORT = """\
import contextlib, io, sys
from hivegen.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
modules = sorted(sys.modules)
import json
print(json.dumps({"code": code, "out": out.getvalue(), "modules": modules}))
"""


def imported_by(args: list[str]) -> tuple[str, set[str]]:
    """What `hivegen ARGS` printed, and every module it left imported."""
    done = subprocess.run(
        [sys.executable, "-c", REPORT, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["code"] in (0, None), done.stderr
    return report["out"], set(report["modules"])


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(f"{n}.") for n in names))


def test_the_brief_heavy_modules_are_all_checked() -> None:
    assert {"jinja2", "aiohttp", "pygments", "sqlite3", "hivegen.simhost", "hivegen.serve"} <= set(
        HEAVY
    )


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_the_parser_alone_imports_no_verb(args: list[str]) -> None:
    out, modules = imported_by(args)
    assert out.startswith(("usage: hivegen", "hivegen "))
    assert loaded(modules, HEAVY + NOT_FOR_THE_PARSER) == []


def test_every_verb_handler_names_a_function_that_exists() -> None:
    """The handlers are named, imported when their verb runs: each name must resolve."""

    def handlers(parser: argparse.ArgumentParser) -> list[object]:
        found = [parser.get_default("handler")]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found += handlers(sub)
        return [h for h in found if h is not None]

    named = [h for h in handlers(build_parser()) if isinstance(h, _Lazy)]
    assert len(named) > 20
    for handler in named:
        assert callable(handler.resolve()), handler


LINES = [
    ["status", "--json"],
    ["--config", "x.toml", "-v", "status", "alice"],
    ["--config=x.toml", "meta", "sync", "--check"],
    ["--no-wait", "--debug", "approve", "3", "--dry-run"],
    ["-v", "render", "meta", "--agent", "a", "--agent", "b", "--json"],
    ["logs", "alice", "-n", "all"],
    ["completion", "zsh"],
    ["rollout", "--all", "--jobs", "4"],
]


@pytest.mark.parametrize("words", LINES, ids=" ".join)
def test_one_verbs_parser_reads_a_line_as_the_whole_grammar_does(words: list[str]) -> None:
    assert vars(parser_for(words).parse_args(words)) == vars(build_parser().parse_args(words))


def test_a_verb_left_unbuilt_is_built_when_argparse_reaches_it() -> None:
    """Should the guess of the verb ever be wrong, the line still parses as it did."""
    words = ["port", "alice"]
    assert verb_of(words) == "port"
    guessed_wrong = _build(frozenset({"status"}))
    assert vars(guessed_wrong.parse_args(words)) == vars(build_parser().parse_args(words))
