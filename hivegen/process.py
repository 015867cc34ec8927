"""The one subprocess gateway: argv lists only, never a shell.

Every external command hivegen runs goes through `run`, so that `-v` can show each one,
tests can count them, and every failure carries the command, its exit status and the
tail of its stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hivegen.errors import CommandError, HivegenError

log = logging.getLogger("hivegen.process")

STDERR_TAIL_LINES = 32

# Install hints for the executables hivegen depends on.
_INSTALL_HINTS = {
    "nix": "install Nix (Debian: apt-get install nix-bin), or run hivegen from its flake",
    "nix-instantiate": "install Nix (Debian: apt-get install nix-bin)",
    "git": "install git (Debian: apt-get install git)",
}


@dataclass(frozen=True, slots=True)
class RunOpts:
    cwd: Path | None = None
    # Variables added to (or, with value None, removed from) the inherited environment.
    env: Mapping[str, str | None] | None = None
    input: str | None = None
    # False: a non-zero exit is returned in CmdOut instead of raised.
    check: bool = True
    # Called with each stderr line as it arrives (long nix builds show progress).
    on_stderr_line: Callable[[str], None] | None = None
    # Called with each stdout line (split on "\n" only, without it) as it arrives, on
    # the calling thread, for output that may never end (`journalctl --follow`): such
    # lines are not kept, CmdOut.stdout is then empty. Takes no timeout.
    on_stdout_line: Callable[[str], None] | None = None
    timeout: float | None = None
    # True for a stderr line that is noise (a warning every healthy run prints): it is
    # neither passed to on_stderr_line nor kept in CmdOut.stderr and an error's tail.
    is_noise: Callable[[str], bool] | None = None


@dataclass(frozen=True, slots=True)
class CmdOut:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def stderr_tail(self) -> tuple[str, ...]:
        return tuple(self.stderr.splitlines()[-STDERR_TAIL_LINES:])


class _Counter:
    """How many processes this process has started; tests and benchmarks read it."""

    def __init__(self) -> None:
        self.value = 0
        self.lock = threading.Lock()

    def bump(self) -> None:
        with self.lock:
            self.value += 1


_started = _Counter()


def started_count() -> int:
    return _started.value


def quote_argv(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def _child_env(extra: Mapping[str, str | None] | None) -> dict[str, str] | None:
    if not extra:
        return None
    env = dict(os.environ)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(argv: Sequence[str], opts: RunOpts | None = None) -> CmdOut:
    opts = opts or RunOpts()
    cmd = tuple(argv)
    if not cmd:
        raise ValueError("empty argv")
    if opts.on_stdout_line is not None and opts.timeout is not None:
        raise ValueError("on_stdout_line takes no timeout")
    where = f" (in {opts.cwd})" if opts.cwd else ""
    log.info("$ %s%s", quote_argv(cmd), where)
    _started.bump()
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=opts.cwd,
            env=_child_env(opts.env),
            stdin=subprocess.PIPE if opts.input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise HivegenError(
            f"cannot run {cmd[0]!r}: not found on PATH", hint=_INSTALL_HINTS.get(cmd[0])
        ) from exc
    except PermissionError as exc:
        raise HivegenError(f"cannot run {cmd[0]!r}: {exc.strerror}") from exc

    try:
        if opts.on_stderr_line is None and opts.on_stdout_line is None:
            raw_out, raw_err = proc.communicate(_encode(opts.input), timeout=opts.timeout)
            stdout, stderr = _decode(raw_out), _without_noise(_text_lines(_decode(raw_err)), opts)
        else:
            stdout, stderr = _communicate_streaming(proc, opts)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise HivegenError(f"command timed out after {opts.timeout}s: {quote_argv(cmd)}") from exc
    except BaseException:
        # Interrupted (Ctrl-C): do not leave the child running behind us.
        proc.kill()
        proc.wait()
        raise

    out = CmdOut(cmd, proc.returncode, stdout, stderr)
    if opts.check and not out.ok:
        tail = out.stderr_tail()
        hint = None
        if any("No space left on device" in line for line in tail):
            hint = "a filesystem is full: free space, then re-run the command"
        elif any(".lock': File exists" in line for line in tail):
            hint = (
                "a git lock is in the way: hivegen doctor names it, and --repair removes "
                "it when no process holds it"
            )
        raise CommandError(cmd, out.returncode, tail, hint=hint)
    return out


def _encode(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8", errors="surrogateescape")


def _decode(data: bytes) -> str:
    # Bytes, not text mode: text mode turns every "\r" into "\n", and stdout (a commit
    # subject, a file in a diff) must reach --json exactly as git holds it.
    return data.decode("utf-8", errors="replace")


def _text_lines(text: str) -> str:
    """stderr is for people: "\r" progress updates become lines of their own."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _without_noise(text: str, opts: RunOpts) -> str:
    if opts.is_noise is None or not text:
        return text
    kept = [line for line in text.removesuffix("\n").split("\n") if not opts.is_noise(line)]
    return "\n".join(kept) + ("\n" if kept and text.endswith("\n") else "")


def _communicate_streaming(proc: subprocess.Popen[bytes], opts: RunOpts) -> tuple[str, str]:
    assert proc.stdout is not None
    assert proc.stderr is not None
    on_stderr, on_stdout, is_noise = opts.on_stderr_line, opts.on_stdout_line, opts.is_noise
    stderr_lines: deque[str] = deque()
    stdout_chunks: list[bytes] = []

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            for line in _text_lines(_decode(raw)).rstrip("\n").split("\n"):
                if is_noise is not None and is_noise(line):
                    continue
                stderr_lines.append(line)
                if on_stderr is not None:
                    on_stderr(line)

    def pump_stdout() -> None:
        assert proc.stdout is not None
        stdout_chunks.append(proc.stdout.read())

    def feed_stdin() -> None:
        assert proc.stdin is not None
        if opts.input:
            proc.stdin.write(_encode(opts.input) or b"")
        proc.stdin.close()

    threads = [threading.Thread(target=pump_stderr, daemon=True)]
    if on_stdout is None:
        threads.append(threading.Thread(target=pump_stdout, daemon=True))
    if proc.stdin is not None:
        threads.append(threading.Thread(target=feed_stdin, daemon=True))
    for thread in threads:
        thread.start()
    try:
        if on_stdout is not None:
            # Here, not in a thread: Ctrl-C and a closed stdout (BrokenPipeError) of the
            # caller's own printing reach the caller, and stop the child.
            # Binary lines split on b"\n" alone: a "\r" stays in its line, for the
            # caller to show (text mode would make it a line break).
            for raw in proc.stdout:
                on_stdout(_decode(raw).removesuffix("\n"))
        proc.wait(timeout=opts.timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        for thread in threads:
            thread.join(timeout=5)
        raise
    for thread in threads:
        thread.join()
    stderr = "\n".join(stderr_lines)
    return _decode(b"".join(stdout_chunks)), stderr + ("\n" if stderr else "")
