"""Text the manager controls reaches the operator's terminal inert, and `--json` exact.

One hive on the simulated host (built once per module and only read by the tests): a
pending proposal whose subject and agent.nix carry OSC 52, CSI, `\\r`, C1 and bidi
controls, a proposal that failed to build with such bytes in nix's error, and one denied
with a hostile note.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hivegen import cli
from hivegen.config import load_config
from hivegen.errors import HivegenError
from hivegen.hive import Hive
from hivegen.jsondoc import Kind
from hivegen.proposals import Proposals
from tests.conftest import commit_dir, sim_config

HOSTILE = "\x1b]52;c;aGVsbG8=\x07 \x1b[2J \u202egnp.exe \x9b31m"
SUBJECT = f"tune alice {HOSTILE} safe\rEVIL"
# In a Nix comment a `\r` ends the line (the rest would be code): the comment has the rest.
AGENT_NIX = f'# {HOSTILE}\n{{ ... }}: {{ environment.variables.GREETING = "hello"; }}\n'
BROKEN_NIX = f'{{ ... }}: {{ environment.variables.GREETING = throw "boom {HOSTILE}"; }}\n'
NOTE = "no\rEVIL \u202eabc \u2066x\u2069"

BIDI = {0x61C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
SGR = re.compile("\x1b\\[[0-9;]*m")  # the colours hivegen's highlighter writes itself


def assert_inert(text: str, colour: bool = False) -> None:
    """No character that could drive a terminal: C0 but tab/newline, DEL, C1, bidi."""
    if colour:
        text = SGR.sub("", text)
    for char in text:
        code = ord(char)
        bad = (code < 0x20 and char not in "\n\t") or 0x7F <= code <= 0x9F or code in BIDI
        assert not bad, f"raw U+{code:04X} in output: {text!r}"


def assert_shows_hostile(text: str) -> None:
    for shown in ("\\x1b]52;c;aGVsbG8=\\x07", "\\x1b[2J", "\\u202egnp.exe", "\\x9b31m"):
        assert shown in text, f"{shown!r} not shown in {text!r}"


@dataclass(frozen=True)
class HostileHive:
    hive: Hive
    config: Path
    approve: tuple[int, str, str]  # exit code, stdout, stderr of `approve 2`

    def run(self, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        code = cli.main(["--config", str(self.config), *argv])
        out, err = capsys.readouterr()
        return code, out, err


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str) -> HostileHive:
    tmp = tmp_path_factory.mktemp("terminal")
    config = sim_config(tmp, hyperhive_flake)
    hive = Hive(load_config(config))
    hive.spawn("alice")
    proposals = Proposals(hive)
    proposed = hive.layout.proposed("alice")

    def manager_commit(agent_nix: str, message: str) -> str:
        (proposed / "agent.nix").write_text(agent_nix)
        return commit_dir(proposed, message)

    assert proposals.propose("alice", manager_commit(AGENT_NIX, SUBJECT)).id == 1
    assert proposals.propose("alice", manager_commit(BROKEN_NIX, "broken")).id == 2
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--config", str(config), "approve", "2"])
    logging.getLogger("hivegen").handlers.clear()  # bound to the redirected stream
    assert proposals.propose("alice", manager_commit(AGENT_NIX, "denied one")).id == 3
    proposals.deny(3, note=NOTE)
    return HostileHive(hive, config, (code, out.getvalue(), err.getvalue()))


def test_pending_table_is_inert(hostile: HostileHive, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = hostile.run("pending", capsys=capsys)
    assert code == 0
    assert_inert(out)
    assert_shows_hostile(out)
    assert "safe\\x0aEVIL" in out or "safe\\x0dEVIL" in out  # one row: no forged line
    assert len(out.splitlines()) == 2  # header + proposal 1


def test_pending_json_is_the_exact_subject(
    hostile: HostileHive, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = hostile.run("pending", "--json", capsys=capsys)
    assert code == 0
    out.encode("ascii")  # every control, C1 and bidi character is a \\u escape
    [entry] = json.loads(out)["proposals"]
    assert entry["subject"] == Proposals(hostile.hive).pending()[0].subject
    assert entry["subject"].startswith(f"tune alice {HOSTILE} safe")


def test_pending_json_keeps_carriage_return(
    hostile: HostileHive, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = hostile.run("pending", "--json", capsys=capsys)
    assert json.loads(out)["proposals"][0]["subject"] == SUBJECT


def test_history_table_is_inert(hostile: HostileHive, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = hostile.run("history", "alice", capsys=capsys)
    assert code == 0
    assert_inert(out)
    assert "no\\x0dEVIL \\u202eabc \\u2066x\\u2069" in out  # the deny note
    assert "error: boom " in out  # the build error's headline
    assert "\\u202egnp.exe" in out
    assert len(out.splitlines()) == 5  # header, 3, 2, 1, 0


def test_history_json_is_the_exact_note(
    hostile: HostileHive, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = hostile.run("history", "alice", "--json", capsys=capsys)
    assert code == 0
    out.encode("ascii")
    notes = {e["id"]: e["note"] for e in json.loads(out)["entries"]}
    assert notes[3] == NOTE
    assert "\u202egnp.exe \x9b31m" in notes[2]


@pytest.mark.parametrize("colour", ["never", "always"])
def test_diff_is_inert(
    hostile: HostileHive, colour: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = hostile.run("diff", "1", "--color", colour, capsys=capsys)
    assert code == 0
    assert_inert(out, colour=colour == "always")
    assert_shows_hostile(out)
    if colour == "always":
        assert SGR.search(out)  # hivegen's own colours survive


def test_diff_bytes_from_a_subprocess(hostile: HostileHive) -> None:
    argv = ["--config", str(hostile.config), "diff", "1", "--color", "always"]
    result = subprocess.run(
        [sys.executable, "-m", "hivegen", *argv],
        capture_output=True,
        check=True,
    )
    raw = re.sub(rb"\x1b\[[0-9;]*m", b"", result.stdout)
    for forbidden in (b"\x1b", b"\x07", b"\r", "\u202e".encode(), "\x9b".encode()):
        assert forbidden not in raw
    assert b"\\x1b]52;c;aGVsbG8=\\x07" in raw


def test_build_output_and_error_are_inert(hostile: HostileHive) -> None:
    code, _, err = hostile.approve
    assert code == 1
    assert_inert(err)
    assert "[h-alice] error: boom" in err  # streamed nix output
    assert "hivegen: error: proposal 2 (alice" in err  # the error quoting it
    assert err.count("\\u202egnp.exe") >= 2


def test_note_with_escape_is_refused(
    hostile: HostileHive, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = hostile.run("deny", "1", "--note", "x\x1b[2Jy", capsys=capsys)
    assert (code, out) == (2, "")
    assert "control character U+001B" in err
    assert_inert(err)


def test_error_printer_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    cli._report(HivegenError(f"build failed:\n{HOSTILE}", hint="see \x1b]8;;http://x\x1b\\"))
    out, err = capsys.readouterr()
    assert out == ""
    assert_inert(err)
    assert err == (
        "hivegen: error: build failed:\n"
        "\\x1b]52;c;aGVsbG8=\\x07 \\x1b[2J \\u202egnp.exe \\x9b31m\n"
        "hivegen: hint: see \\x1b]8;;http://x\\x1b\\\n"
    )


def test_json_output_is_ascii_and_exact(capsys: pytest.CaptureFixture[str]) -> None:
    files = {"subject": SUBJECT, "note": NOTE, "plain": "héllo ✓"}
    cli._print_json(Kind.RENDER, {"files": files})
    out = capsys.readouterr().out
    out.encode("ascii")
    assert json.loads(out) == {"schema": "hivegen.render/1", "files": files}


def test_verbose_log_lines_are_inert(capsys: pytest.CaptureFixture[str]) -> None:
    cli._setup_logging(verbose=True)
    try:
        logging.getLogger("hivegen.process").info("$ git show %s", "\x1b]52;c;x\x07")
    finally:
        logging.getLogger("hivegen").handlers.clear()
    assert capsys.readouterr().err == "$ git show \\x1b]52;c;x\\x07\n"
