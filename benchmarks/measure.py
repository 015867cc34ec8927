"""The measurements, through hivegen's real code paths. Nothing here prints.

Processes are counted two ways:

- hivegen's own: `hivegen.process.started_count()` deltas (every external command hivegen
  runs goes through that gateway), with a breakdown by executable;
- the simulated host's: the processes the simulated `nixos-container` and `systemctl`
  start themselves (the nested `systemctl` calls of `nixos-container start/update`, and
  the one `nix build` of each `create`/`update --flake`). They are read from the
  simulated host's own command log; a real NixOS host's tools would start their own.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hivegen import cli, containers, jsondoc, nix, process, render
from hivegen.config import Config
from hivegen.errors import HivegenError
from hivegen.git import Git
from hivegen.hive import Hive
from hivegen.meta import LOCK, input_name, read_lock
from hivegen.render import AGENT_NIX, render_agent_nix
from hivegen.repos import git_for
from hivegen.status import AgentState

SIMULATED_TOOLS = (containers.NIXOS_CONTAINER, containers.SYSTEMCTL)


@dataclass(slots=True)
class Counted:
    """One measured operation."""

    seconds: float = 0.0
    processes: int = 0  # started by hivegen itself
    by_tool: Counter[str] = field(default_factory=Counter)
    tool_seconds: dict[str, float] = field(default_factory=dict)
    simulated: int = 0  # started by the simulated host's tools themselves
    build_seconds: float = 0.0  # inside nixos-container create/update
    builds: int = 0
    flake_lock_seconds: float = 0.0  # inside `nix flake lock` (sync and input bumps)

    @property
    def seconds_without_build(self) -> float:
        return self.seconds - self.build_seconds


@contextlib.contextmanager
def _patched(owner: object, name: str, value: object) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _log_lines(config: Config) -> int:
    try:
        return (config.host.simulated_root / "log").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def probe(config: Config) -> Iterator[Counted]:
    """Count and time everything hivegen does inside the block."""
    result = Counted()
    original_run = process.run
    original_create = containers.Host.create
    original_update = containers.Host.update

    def run(argv: Sequence[str], opts: process.RunOpts | None = None) -> process.CmdOut:
        tool = Path(argv[0]).name
        started = time.perf_counter()
        try:
            return original_run(argv, opts)
        finally:
            elapsed = time.perf_counter() - started
            result.by_tool[tool] += 1
            result.tool_seconds[tool] = result.tool_seconds.get(tool, 0.0) + elapsed
            if tool == "nix" and "flake" in argv and "lock" in argv:
                result.flake_lock_seconds += elapsed

    def building(
        original: Callable[[containers.Host, str, str], None],
    ) -> Callable[[containers.Host, str, str], None]:
        def wrapper(host: containers.Host, container: str, flake_ref: str) -> None:
            started = time.perf_counter()
            try:
                original(host, container, flake_ref)
            finally:
                result.build_seconds += time.perf_counter() - started
                result.builds += 1

        return wrapper

    before_count = process.started_count()
    before_log = _log_lines(config)
    with (
        _patched(process, "run", run),
        _patched(containers.Host, "create", building(original_create)),
        _patched(containers.Host, "update", building(original_update)),
    ):
        started = time.perf_counter()
        yield result
        result.seconds = time.perf_counter() - started
    result.processes = process.started_count() - before_count
    ours = sum(result.by_tool[tool] for tool in SIMULATED_TOOLS)
    # Every create/update here passes --flake: the simulation runs one `nix build` for it.
    result.simulated = _log_lines(config) - before_log - ours + result.builds


def fresh_process_state() -> None:
    """Forget what a new hivegen process would not have cached yet (imports aside)."""
    nix.version.cache_clear()
    render._environment.cache_clear()  # the Jinja environment and its compiled templates


# -- status and no-op sync, through the CLI's own entry point -------------------------------


def run_cli(argv: Sequence[str]) -> str:
    """`hivegen ARGV` in this process (cli.main); returns its stdout."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    if code != 0:
        raise HivegenError(f"hivegen {' '.join(argv)} exited {code}: {err.getvalue().strip()}")
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class Repeated:
    median_seconds: float
    max_processes: int
    simulated: int
    runs: int
    by_tool: dict[str, int]
    # Median time spent waiting for the simulated host's tools (their own start-up included).
    simulated_tool_seconds: float


def repeated_cli(config: Config, argv: Sequence[str], repeat: int) -> tuple[Repeated, str]:
    """Median wall time of `repeat` in-process runs, after one untimed warm-up."""
    run_cli(argv)  # warm-up: the simulated host's bytecode cache, the page cache
    times: list[float] = []
    counts: list[Counted] = []
    output = ""
    for _ in range(repeat):
        fresh_process_state()
        with probe(config) as counted:
            output = run_cli(argv)
        times.append(counted.seconds)
        counts.append(counted)
    worst = max(counts, key=lambda c: c.processes)
    return (
        Repeated(
            statistics.median(times),
            worst.processes,
            max(c.simulated for c in counts),
            repeat,
            dict(worst.by_tool),
            statistics.median(
                sum(c.tool_seconds.get(tool, 0.0) for tool in SIMULATED_TOOLS) for c in counts
            ),
        ),
        output,
    )


def document(output: str, kind: jsondoc.Kind) -> dict[str, Any]:
    """A `--json` document of `kind`, as docs/json.md gives it: one object whose
    `schema` is the version this benchmark reads. Another shape (a top-level array, a
    new version) raises: the benchmark must then be taught it, not misread it."""
    parsed = json.loads(output)
    wanted = jsondoc.schema_id(kind)
    found = parsed.get("schema") if isinstance(parsed, dict) else type(parsed).__name__
    if found != wanted:
        raise HivegenError(f"expected a {wanted} document, got {found!r}")
    assert isinstance(parsed, dict)
    return parsed


def check_status(output: str, agents: int) -> None:
    rows = document(output, jsondoc.Kind.STATUS)["agents"]
    if len(rows) != agents or any(row["state"] != str(AgentState.STOPPED) for row in rows):
        raise HivegenError(f"status did not report {agents} stopped agents")


# -- fresh hivegen processes --------------------------------------------------------------


def hivegen_argv() -> list[str]:
    """The installed `hivegen` script beside this interpreter, else `python -m hivegen`."""
    script = Path(sys.executable).parent / "hivegen"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "hivegen"]


@dataclass(frozen=True, slots=True)
class Fresh:
    """How fresh processes run: from `cwd`, with exactly `env`."""

    cwd: Path
    env: Mapping[str, str]

    @classmethod
    def cached(cls, workdir: Path) -> Fresh:
        """With Python's bytecode cache on, as an installed hivegen has it.

        Under PYTHONDONTWRITEBYTECODE (set on some machines) no .pyc is ever written, and
        every start-up would compile hivegen from source; the cache goes to `workdir`.
        """
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
        return cls(workdir, env)

    @classmethod
    def inherited(cls, workdir: Path) -> Fresh:
        return cls(workdir, dict(os.environ))


@dataclass(frozen=True, slots=True)
class Subprocessed:
    median_seconds: float
    runs: int
    processes: int | None = None  # hivegen's, from its -v log


def _timed(argv: Sequence[str], fresh: Fresh) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=fresh.cwd, env=fresh.env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise HivegenError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return elapsed, done


def median_subprocess(
    args: Sequence[str], repeat: int, fresh: Fresh, *, count: bool = False
) -> Subprocessed:
    """Median wall time of a fresh `hivegen ARGS` (after one warm-up run).

    With `count`, hivegen runs with -v, which logs each external command as one `$ ...`
    line on stderr: their number is the fresh process's own process count.
    """
    argv = [*hivegen_argv(), *(["-v"] if count else []), *args]
    _timed(argv, fresh)
    times: list[float] = []
    processes = 0
    for _ in range(repeat):
        elapsed, done = _timed(argv, fresh)
        times.append(elapsed)
        if count:
            started = sum(1 for line in done.stderr.splitlines() if line.startswith("$ "))
            processes = max(processes, started)
    return Subprocessed(statistics.median(times), repeat, processes if count else None)


def median_python(code: str, repeat: int, fresh: Fresh) -> float:
    argv = [sys.executable, "-c", code]
    _timed(argv, fresh)
    return statistics.median(_timed(argv, fresh)[0] for _ in range(repeat))


_IMPORT_LINE = re.compile(r"^import time:\s*\d+\s*\|\s*(\d+)\s*\|\s*(\S+)\s*$")


def import_seconds(module: str, repeat: int, fresh: Fresh) -> float:
    """Median cumulative import time of `module` in a fresh interpreter (-X importtime)."""
    argv = [sys.executable, "-X", "importtime", "-c", f"import {module}"]
    _timed(argv, fresh)
    samples = []
    for _ in range(repeat):
        _, done = _timed(argv, fresh)
        for line in done.stderr.splitlines():
            match = _IMPORT_LINE.match(line)
            if match and match.group(2) == module:
                samples.append(int(match.group(1)) / 1e6)
    if not samples:
        raise HivegenError(f"-X importtime reported no line for {module}")
    return statistics.median(samples)


# -- spawn and rebuild ----------------------------------------------------------------------


def spawn(config: Config, name: str) -> Counted:
    fresh_process_state()
    with probe(config) as counted:
        Hive(config).spawn(name)
    return counted


@dataclass(frozen=True, slots=True)
class Rebuilt:
    counted: Counted
    inputs_bumped: int  # inputs hivegen asked nix to update
    bump_calls: int
    lock_nodes_changed: int


def commit_change(config: Config, name: str) -> None:
    """A new commit on the agent's applied main, as an approved proposal would leave."""
    git: Git = git_for(config)
    applied = config.layout.applied(name)
    text = render_agent_nix(name) + "# changed by the hivegen benchmark\n"
    (applied / AGENT_NIX).write_text(text)
    git.run(applied, "add", "--", AGENT_NIX)
    git.commit(applied, "benchmark: a change to deploy")


def _changed_nodes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> int:
    old = (before or {}).get("nodes", {})
    new = (after or {}).get("nodes", {})
    return sum(1 for key in set(old) | set(new) if old.get(key) != new.get(key))


def rebuild(config: Config, name: str) -> Rebuilt:
    """Rebuild `name` after a change to its applied repo: how much of the lock moved."""
    commit_change(config, name)
    asked: list[int] = []
    original = nix.update_inputs

    def update_inputs(flake_dir: Path, inputs: list[str]) -> None:
        asked.append(len(inputs))
        original(flake_dir, inputs)

    meta_dir = config.layout.meta
    before = read_lock(meta_dir)
    fresh_process_state()
    with _patched(nix, "update_inputs", update_inputs), probe(config) as counted:
        Hive(config).rebuild(name)
    after = read_lock(meta_dir)
    node = input_name(name)
    if after is None or node not in after.get("nodes", {}):
        raise HivegenError(f"{meta_dir / LOCK} does not lock {node} after the rebuild")
    return Rebuilt(counted, sum(asked), len(asked), _changed_nodes(before, after))
