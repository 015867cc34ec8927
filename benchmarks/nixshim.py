"""A `nix` first on PATH that records every nix process, then runs the real one.

Both hivegen (through hivegen.process) and the simulated host's `nixos-container` (its
`nix build` of the container's system) run whatever `nix` PATH finds first: with this
shim's directory first on PATH, every nix process of a measured operation is recorded,
whoever started it. For each call the shim (bash; `$EPOCHREALTIME` is a builtin, so the
record costs no extra process) writes one file holding its start and end (wall clock,
the real nix's whole run), exit status and argv, and has the real nix write its
evaluator statistics beside it (`NIX_SHOW_STATS`, `NIX_SHOW_STATS_PATH`: Nix's own
counters, among them the evaluator's function calls and the process's CPU time).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hivegen.errors import HivegenError

_SCRIPT = """\
#!/bin/bash
# hivegen benchmark: record this nix call (benchmarks/nixshim.py), then run the real nix.
start=$EPOCHREALTIME
id="$$-${{start/./}}"
NIX_SHOW_STATS=1 NIX_SHOW_STATS_PATH={log}/"$id".stats {real} "$@"
rc=$?
end=$EPOCHREALTIME
{{ printf '%s %s %s\\n' "$start" "$end" "$rc"; printf '%s\\0' "$@"; }} > {log}/"$id".call
exit $rc
"""

# Subcommands that evaluate Nix (a flake's outputs, or an expression).
EVALUATING = frozenset({"build", "eval", "path-info"})


@dataclass(frozen=True, slots=True)
class NixCall:
    argv: tuple[str, ...]  # after `nix`
    start: float
    end: float
    returncode: int
    function_calls: int  # the evaluator's, from NIX_SHOW_STATS (0: no evaluator ran)
    cpu_seconds: float  # the whole process's user CPU time, as nix reports it

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def command(self) -> tuple[str, ...]:
        """The subcommand words (`build`, `flake lock`, ...), options left out."""
        words = [arg for arg in self.argv if not arg.startswith("-")]
        # `--extra-experimental-features 'nix-command flakes'` takes a value.
        values = {
            self.argv[i + 1]
            for i, arg in enumerate(self.argv[:-1])
            if arg in ("--extra-experimental-features", "--option", "--out-link", "-o")
        }
        words = [w for w in words if w not in values]
        if not words:
            # `nix --version` and the like: the first option says what it is.
            options = [arg for arg in self.argv if arg.startswith("-") and arg not in values]
            return tuple(options[-1:])
        return tuple(words[:2]) if words[0] == "flake" else (words[0],)

    @property
    def installables(self) -> tuple[str, ...]:
        return tuple(arg for arg in self.argv if "#" in arg)

    @property
    def evaluates_installables(self) -> bool:
        """A build, eval or path-info of flake installables: it evaluates a system (or
        finds it in nix's eval cache)."""
        return bool(self.command) and self.command[0] in EVALUATING and bool(self.installables)

    def describe(self) -> str:
        return f"nix {shlex.join(self.argv)} ({self.seconds:.3f} s)"


class NixShim:
    """Installed in `directory`; `active()` puts it first on PATH for the block."""

    def __init__(self, directory: Path) -> None:
        real = shutil.which("nix")
        if real is None:
            raise HivegenError("cannot find nix on PATH")
        self.real = Path(real).resolve()
        self.bin_dir = directory / "bin"
        self.log_dir = directory / "calls"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        script = self.bin_dir / "nix"
        script.write_text(
            _SCRIPT.format(log=shlex.quote(str(self.log_dir)), real=shlex.quote(str(self.real)))
        )
        script.chmod(0o755)

    @contextmanager
    def active(self) -> Iterator[None]:
        """The shim first on this process's PATH (hence every child's); put back after.

        A hivegen Host reads PATH when it is made: make the Hive inside the block."""
        before = os.environ.get("PATH", "")
        os.environ["PATH"] = f"{self.bin_dir}{os.pathsep}{before}"
        try:
            yield
        finally:
            os.environ["PATH"] = before

    def clear(self) -> None:
        for entry in self.log_dir.iterdir():
            entry.unlink()

    def calls(self) -> list[NixCall]:
        """Every call recorded since the last `clear`, by start time."""
        found = []
        for record in self.log_dir.glob("*.call"):
            head, _, rest = record.read_bytes().partition(b"\n")
            start, end, rc = head.decode().split()
            argv = tuple(part.decode() for part in rest.split(b"\0")[:-1])
            calls, cpu = 0, 0.0
            stats = record.with_suffix(".stats")
            if stats.exists():
                data = json.loads(stats.read_text())
                calls = int(data.get("nrFunctionCalls", 0))
                cpu = float(data.get("cpuTime", 0.0))
            found.append(NixCall(argv, float(start), float(end), int(rc), calls, cpu))
        return sorted(found, key=lambda call: call.start)
