from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hivegen import process
from hivegen.errors import CommandError, HivegenError
from hivegen.process import RunOpts, run

FAIL = ["sh", "-c", "for i in $(seq 1 40); do echo line$i >&2; done; exit 3"]


def test_failure_carries_command_status_and_stderr_tail() -> None:
    with pytest.raises(CommandError) as info:
        run(FAIL)
    error = info.value
    assert error.argv == tuple(FAIL)
    assert error.returncode == 3
    assert error.stderr_tail == tuple(f"line{i}" for i in range(9, 41))  # last 32
    assert "exit 3" in str(error)
    assert "sh -c 'for i in" in str(error)  # shell-quoted, pasteable


def test_check_false_returns_the_result() -> None:
    out = run(FAIL, RunOpts(check=False))
    assert not out.ok
    assert out.returncode == 3


def test_stdout_input_cwd_and_env(tmp_path: Path) -> None:
    out = run(
        ["sh", "-c", 'cat; pwd; echo "$HG_X"'],
        RunOpts(cwd=tmp_path, input="in\n", env={"HG_X": "x"}),
    )
    assert out.stdout == f"in\n{tmp_path}\nx\n"


def test_streaming_reports_each_stderr_line_as_it_comes() -> None:
    seen: list[str] = []
    out = run(["sh", "-c", "echo a >&2; echo out; echo b >&2"], RunOpts(on_stderr_line=seen.append))
    assert seen == ["a", "b"]
    assert out.stdout == "out\n"
    with pytest.raises(CommandError) as info:
        run(FAIL, RunOpts(on_stderr_line=seen.append))
    assert info.value.stderr_tail[-1] == "line40"


def test_missing_executable_says_how_to_install() -> None:
    with pytest.raises(HivegenError) as info:
        run(["git-does-not-exist-here"])
    assert "not found on PATH" in str(info.value)


def test_every_command_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    before = process.started_count()
    with caplog.at_level(logging.INFO, logger="hivegen.process"):
        run(["echo", "two words", "it's"])
    assert process.started_count() == before + 1
    assert "$ echo 'two words' 'it'\"'\"'s'" in caplog.text


def test_timeout_kills_the_child() -> None:
    with pytest.raises(HivegenError, match="timed out"):
        run(["sleep", "5"], RunOpts(timeout=0.2))
