"""`hivegen logs NAME`: the container's journal through `journalctl -M`, on the simulated
host, whose journalctl keeps the real one's contract; every line shown is sanitised."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hivegen.cli import main
from hivegen.config import load_config
from hivegen.hive import Hive
from hivegen.jsondoc import Kind
from hivegen.simhost import journalctl
from hivegen.simhost.state import ENV_ROOT, Host
from tests import jsonschemas
from tests.conftest import sim_config

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str) -> Path:
    """A hive whose alice runs; a test that stops it starts it again."""
    path = tmp_path_factory.mktemp("logs")
    Hive(load_config(sim_config(path, hyperhive_flake))).spawn("alice")
    return path


def hive(base: Path) -> Hive:
    return Hive(load_config(base / "hive.toml"))


def sim_host(base: Path) -> Host:
    return Host.from_env({ENV_ROOT: str(base / "host")})


def say(base: Path, message: bytes | str, **fields: str) -> None:
    """A process in alice's container logs MESSAGE (any bytes)."""
    entry: dict[str, str | bytes] = {"SYSLOG_IDENTIFIER": "agent", "_PID": "42", **fields}
    entry["MESSAGE"] = message
    journalctl.append(sim_host(base), "h-alice", entry)


def cli(base: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["--config", str(base / "hive.toml"), *args])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def journalctl_calls(base: Path) -> list[list[str]]:
    """Every journalctl call the simulated host has seen, as its argv."""
    lines = (base / "host" / "log").read_text().splitlines()
    return [argv for argv in map(shlex.split, lines) if argv[:1] == ["journalctl"]]


def child_env(base: Path, **extra: str) -> dict[str, str]:
    """The environment hivegen gives its children (the simulated host's PATH first)."""
    env = dict(os.environ)
    for key, value in hive(base).host.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return {**env, **extra}


def hivegen_cmd(base: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "hivegen", "--config", str(base / "hive.toml"), *args]


def test_logs_shows_the_containers_journal_with_journalctls_argv(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    say(base, "agent up, serving on 8879")
    code, out, err = cli(base, capsys, "logs", "alice")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    # What the container's systemd logged as it booted, then what the agent said.
    assert re.fullmatch(
        rf"{STAMP} h-alice systemd\[1\]: systemd \(simulated\) running in system mode\.",
        lines[0],
    )
    assert any(line.endswith(" h-alice systemd[1]: Reached target multi-user.target - "
                             "Multi-User System.") for line in lines)  # fmt: skip
    assert re.fullmatch(rf"{STAMP} h-alice agent\[42\]: agent up, serving on 8879", lines[-1])
    assert journalctl_calls(base)[-1] == [
        "journalctl",
        "--machine=h-alice",
        "--no-pager",
        "--all",
        "--lines=50",
        "--output=short-iso",
    ]


def test_lines_limits_the_entries_shown(base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for number in range(1, 6):
        say(base, f"step {number}")
    code, out, _ = cli(base, capsys, "logs", "alice", "-n", "3")
    assert code == 0
    assert [line.split(": ", 1)[1] for line in out.splitlines()] == ["step 3", "step 4", "step 5"]
    assert journalctl_calls(base)[-1][4] == "--lines=3"

    code, out, _ = cli(base, capsys, "logs", "alice", "--lines", "all")
    assert code == 0
    assert journalctl_calls(base)[-1][4] == "--lines=all"
    assert len(out.splitlines()) > 5

    code, _, err = cli(base, capsys, "logs", "alice", "-n", "-1")
    assert code == 2
    assert "a number of entries, or 'all'" in err


HOSTILE = b"evil\x1b[2J\x1b]52;c;aGk=\x07 \x9b31m \xc2\x9b\r\x08 mid\nnext \xe2\x80\xae line\x7f"


def test_a_hostile_line_is_shown_sanitised_byte_for_byte(base: Path) -> None:
    # 2023-11-14T22:13:20 UTC.
    say(base, HOSTILE, __REALTIME_TIMESTAMP="1700000000000000")
    env = child_env(base, TZ="UTC")
    out = subprocess.run(
        hivegen_cmd(base, "logs", "alice", "-n", "1"), env=env, capture_output=True, check=True
    )
    prefix = b"2023-11-14T22:13:20+0000 h-alice agent[42]: "
    # ESC, BEL, CR, BS, DEL and the C1 CSI become visible escapes, a lone 0x9b byte (not
    # UTF-8) the replacement character, the bidi override an escape; the message's own
    # newline stays a line break, its second line indented under the first, as
    # journalctl prints it.
    assert out.stdout == (
        prefix + rb"evil\x1b[2J\x1b]52;c;aGk=\x07 " + "\ufffd".encode() + rb"31m \x9b\x0d\x08 mid"
        b"\n" + b" " * len(prefix) + rb"next \u202e line\x7f" + b"\n"
    )
    assert out.stderr == b""

    as_json = subprocess.run(
        hivegen_cmd(base, "logs", "alice", "-n", "1", "--json"),
        env=env,
        capture_output=True,
        check=True,
    )
    assert as_json.stdout.isascii()
    [line] = as_json.stdout.decode().splitlines()
    document = json.loads(line)
    assert jsonschemas.validate(document) is Kind.LOG_ENTRY
    assert (document["agent"], document["time"]) == ("alice", "2023-11-14T22:13:20.000000Z")
    # Not printable UTF-8: journalctl's list of byte values, the exact bytes.
    assert bytes(document["message"]) == HOSTILE
    entry = document["fields"]
    assert bytes(entry["MESSAGE"]) == HOSTILE
    assert entry["_HOSTNAME"] == "h-alice"
    assert journalctl_calls(base)[-1][-2:] == ["--output=json", "--quiet"]


def test_an_unknown_agent_is_refused_with_a_did_you_mean(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = len(journalctl_calls(base))
    code, out, err = cli(base, capsys, "logs", "alise")
    assert (code, out) == (2, "")
    assert err == (
        "hivegen: error: no agent named 'alise'\n"
        "hivegen: hint: did you mean 'alice'? (hivegen list shows the hive)\n"
    )
    assert len(journalctl_calls(base)) == calls


def test_a_stopped_agent_says_where_its_units_log_is(
    base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hive(base).stop("alice")
    try:
        code, out, err = cli(base, capsys, "logs", "alice")
        assert (code, out) == (1, "")
        assert err == (
            "hivegen: error: h-alice is not running: journalctl -M reads the journal of a "
            "running container only\n"
            "hivegen: hint: hivegen start alice; the host's log of its unit, kept while it "
            "is stopped: journalctl -u container@h-alice.service\n"
        )
        # journalctl's own answer, as on a host whose machined does not know it.
        real = subprocess.run(
            ["journalctl", "-M", "h-alice"],
            env=child_env(base),
            capture_output=True,
            text=True,
            check=False,
        )
        assert real.returncode == 1
        assert real.stderr == (
            "Failed to open root directory of machine 'h-alice': No machine 'h-alice' known\n"
            "Failed to open journal: No such device or address\n"
        )
    finally:
        hive(base).start("alice")
    # The journal kept what came before: the shutdown, then the new boot.
    code, out, _ = cli(base, capsys, "logs", "alice", "-n", "4")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith(" h-alice systemd[1]: Shutting down.")
    assert re.fullmatch(r"-- Boot [0-9a-f]{32} --", lines[1])
    assert lines[2].endswith(" systemd[1]: systemd (simulated) running in system mode.")
    assert len(lines) == 5


def _reader(stream: Iterator[bytes]) -> queue.Queue[bytes]:
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[bytes], needle: bytes, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        if needle in line:
            return line


def _session_processes(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:  # after pid, comm: state, ppid, pgrp, session
                pids.append(int(stat.parent.name))
    return pids


@contextlib.contextmanager
def following(base: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`hivegen logs alice -f -n 1` in a session of its own; whatever is left of it
    afterwards is killed."""
    proc = subprocess.Popen(
        hivegen_cmd(base, "logs", "alice", "-f", "-n", "1"),
        env=child_env(base),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_follow_streams_new_lines_and_ctrl_c_exits_130_quietly(base: Path) -> None:
    say(base, "before following")
    with following(base) as proc:
        assert proc.stdout is not None
        lines = _reader(proc.stdout)
        _wait_for(lines, b"agent[42]: before following")
        say(base, "while following \x1b[31mred")
        line = _wait_for(lines, b"while following")
        assert line.endswith(rb"agent[42]: while following \x1b[31mred" + b"\n")
        assert journalctl_calls(base)[-1][-2:] == ["--output=short-iso", "--follow"]
        # Only hivegen is interrupted: it must stop journalctl itself.
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert b"Traceback" not in stderr
    assert stderr == b""
    assert _session_processes(proc.pid) == []


def test_follow_ends_quietly_when_its_reader_leaves(base: Path) -> None:
    with following(base) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # `hivegen logs alice -f | head -1`
        say(base, "nobody reads this")
        stderr = proc.stderr.read()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    assert stderr == b""
    assert _session_processes(proc.pid) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "journalctl: unrecognized option '--bogus'"),
        (["-z"], "journalctl: invalid option -- 'z'"),
        (["-M"], "journalctl: option requires an argument -- 'M'"),
        (["--machine"], "journalctl: option '--machine' requires an argument"),
        (["-M", "h-alice", "--lines=x"], "Failed to parse lines 'x'"),
        (["-M", "h-alice", "-o", "fancy"], "Unknown output format 'fancy'."),
        (["-M", "h-alice", "-u", "x"], "journalctl (simulated): option '-u' is not simulated"),
        (
            ["-M", "h-alice", "--follow=1"],
            "journalctl: option '--follow' doesn't allow an argument",
        ),
    ],
)
def test_simulated_journalctl_refuses_as_journalctl_does(
    base: Path, args: list[str], message: str
) -> None:
    out = subprocess.run(
        ["journalctl", *args], env=child_env(base), capture_output=True, text=True, check=False
    )
    assert (out.returncode, out.stdout, out.stderr) == (1, "", message + "\n")


def test_simulated_journalctl_lines_follow_getopt(base: Path) -> None:
    env = child_env(base)

    def count(*args: str) -> int:
        argv = ["journalctl", "-M", "h-alice", "-q", *args]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        return len(out.stdout.splitlines())

    for number in range(12):
        say(base, f"entry {number}")
    assert count("-n") == 10  # -n alone: 10
    assert count("-n", "3") == 3  # the next argument, as it parses
    assert count("-n3") == 3
    assert count("--lines=+2") == 2  # the first two
    assert count("-n", "0") == 0
    assert count() > 12  # all
