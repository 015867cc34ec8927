"""A long verb on a terminal: its status line ticks (cli/live.py), and Ctrl-C ends it
with exit 130 and no traceback, the simulated host's included."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hivegen.cli import main
from hivegen.cli.live import ERASE, Live
from tests.conftest import alice_with_a_commit
from tests.ptys import read_rest, read_until


def test_approve_on_a_terminal_ticks_and_ctrl_c_ends_it_cleanly(
    tmp_path: Path, hyperhive_flake: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import pty

    cfg, _ = alice_with_a_commit(tmp_path, hyperhive_flake)
    assert main([*cfg, "propose", "alice"]) == 0
    capsys.readouterr()

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hivegen", *cfg, "approve", "1"],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        # nixos-container update hangs: the build "takes" as long as the test wants.
        env={**os.environ, "HIVEGEN_SIMHOST_FAULT": "nixos-container:1:hang", "TERM": "xterm"},
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    try:
        # The status line appears after a second and is redrawn in place as time goes.
        seen = read_until(master, rb"\r\x1b\[Khivegen approve: 2s", b"")
        assert b"\r\x1b[Khivegen approve: 1s" in seen
        # Ctrl-C: SIGINT to the whole foreground group, the simulated host's tools too.
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
        seen += read_rest(master)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(master)
    text = seen.decode(errors="replace")
    assert code == 130, text
    assert "Traceback" not in text, text
    assert "KeyboardInterrupt" not in text, text
    # The status line was erased before the last message, which ends the output.
    assert text.rstrip().endswith("hivegen: interrupted"), text
    assert text[text.rindex("hivegen approve: ") :].count(ERASE) >= 1
    # Resumable: the proposal was not lost, and the next approve deploys it.
    assert main([*cfg, "approve", "1", "--json"]) == 0
    deployed = json.loads(capsys.readouterr().out)
    assert deployed["agent"] == "alice"


def test_off_a_terminal_only_the_lines() -> None:
    stream = io.StringIO()
    live = Live("hivegen approve", stream)
    live.started -= 5  # as if it had run for a while: still no status line on a pipe
    live.line("building \x1b[31mred\x1b[0m")
    live.status("alice built")
    live.close()
    assert stream.getvalue() == "building \\x1b[31mred\\x1b[0m\n"
