"""`python -m benchmarks`: build hives of N agents, measure, print a table (see __init__)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks import hives, measure
from benchmarks import rollout as rollout_bench
from hivegen import nix

SPAWNED = "spawnee"  # the agent each hive spawns, then rebuilds
DEFAULT_SIZES = (10, 100, 1000)
DEFAULT_ROLLOUT_SIZES = (10, 50)
SUITES = ("hives", "rollout")
DEFAULT_REPEAT = 7
LARGE = 1000  # the time targets are stated at N = 1000

STATUS_SECONDS = 0.5
SYNC_SECONDS = 0.3
HELP_SECONDS = 0.15
STATUS_PROCESSES = 2
# rollout --all against N sequential rebuilds (benchmarks/rollout.py)
ROLLOUT_EVAL_RATIO = 1.5  # the whole hive's evaluation, in one agent's
ROLLOUT_WALL_RATIO = 0.3  # of the sequential rebuilds' wall time, at N = ROLLOUT_LARGE
ROLLOUT_LARGE = 50

# What a target holds: COUNT, a number of processes, calls, lock nodes or evaluator
# function calls (the same on any machine, at any load), or TIME, a wall time or a
# ratio of wall times (the machine and its load decide). tests/test_benchmarks_smoke.py
# runs every suite at its smallest and holds every COUNT target, never a TIME one.
COUNT = "count"
TIME = "time"


@dataclass(frozen=True, slots=True)
class Row:
    measure: str
    n: int | None
    figure: str
    target: str = "—"
    met: bool | None = None  # None: no target, or it is stated at another N only
    reference: str = "—"
    value: float | None = None  # the figure as a number (seconds, or a count)
    target_kind: str | None = None  # COUNT or TIME, for a row with a target
    suite: str = ""  # the suite that measured it (SUITES)

    def __post_init__(self) -> None:
        if (self.target != "—" or self.met is not None) and self.target_kind not in (COUNT, TIME):
            raise ValueError(f"{self.measure}: a target must say what it holds (COUNT or TIME)")


def _s(seconds: float) -> str:
    return f"{seconds:.3f} s"


def _check(ok: bool, applies: bool) -> bool | None:
    return ok if applies else None


def _procs(count: int, simulated: int | None = None) -> str:
    return f"{count} (+{simulated} sim)" if simulated else str(count)


def _count(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _tools(by_tool: dict[str, int]) -> str:
    return ", ".join(f"{tool} {count}" for tool, count in sorted(by_tool.items()))


def measure_hive(
    workdir: Path, base_flake: str, n: int, repeat: int, spawn_baseline: list[int]
) -> tuple[list[Row], dict[str, object]]:
    fresh = measure.Fresh.cached(workdir)
    rows: list[Row] = []
    agents = hives.agent_names(n, keep_free=[SPAWNED])
    built = hives.build_hive(workdir / f"hive-{n}", base_flake, agents)
    config, config_arg = built.config, ["--config", str(built.config_path)]
    rows.append(
        Row(
            "build: seed applied repos + confs",
            n,
            _s(built.seed_seconds),
            value=built.seed_seconds,
        )
    )
    rows.append(
        Row(
            "build: first meta sync (nix flake lock)",
            n,
            _s(built.sync_seconds),
            value=built.sync_seconds,
        )
    )
    large = n >= LARGE

    status, output = measure.repeated_cli(config, [*config_arg, "status", "--json"], repeat)
    measure.check_status(output, n)
    rows.append(
        Row(
            "status --json: time",
            n,
            f"{_s(status.median_seconds)} (median of {status.runs}; "
            f"{_s(status.simulated_tool_seconds)} in the simulated systemctl)",
            f"< {STATUS_SECONDS} s" if large else "—",
            _check(status.median_seconds < STATUS_SECONDS, large),
            value=status.median_seconds,
            target_kind=TIME,
        )
    )
    rows.append(
        Row(
            "status --json: processes",
            n,
            f"{_procs(status.max_processes, status.simulated)}: {_tools(status.by_tool)}",
            f"≤ {STATUS_PROCESSES}",
            status.max_processes <= STATUS_PROCESSES,
            f"N + 1 = {n + 1}: nixos-container list + systemctl is-active per agent",
            value=status.max_processes,
            target_kind=COUNT,
        )
    )
    fresh_status = measure.median_subprocess(
        [*config_arg, "status", "--json"], repeat, fresh, count=True
    )
    rows.append(
        Row(
            "status --json: fresh process",
            n,
            f"{_s(fresh_status.median_seconds)}, "
            f"{_count(fresh_status.processes or 0, 'process', 'processes')} "
            f"(median of {fresh_status.runs})",
            value=fresh_status.median_seconds,
        )
    )

    sync, output = measure.repeated_cli(config, [*config_arg, "meta", "sync"], repeat)
    if "up to date" not in output:
        raise RuntimeError(f"meta sync was not a no-op: {output}")
    rows.append(
        Row(
            "no-op meta sync: time",
            n,
            f"{_s(sync.median_seconds)} (median of {sync.runs})",
            f"< {SYNC_SECONDS} s" if large else "—",
            _check(sync.median_seconds < SYNC_SECONDS, large),
            value=sync.median_seconds,
            target_kind=TIME,
        )
    )
    rows.append(
        Row(
            "no-op meta sync: processes",
            n,
            _procs(sync.max_processes, sync.simulated),
            "0",
            sync.max_processes == 0,
            "≥ 1: nixos-container list for the agent set",
            value=sync.max_processes,
            target_kind=COUNT,
        )
    )
    fresh_sync = measure.median_subprocess([*config_arg, "meta", "sync"], repeat, fresh, count=True)
    rows.append(
        Row(
            "no-op meta sync: fresh process",
            n,
            f"{_s(fresh_sync.median_seconds)}, "
            f"{_count(fresh_sync.processes or 0, 'process', 'processes')} "
            f"(median of {fresh_sync.runs})",
            value=fresh_sync.median_seconds,
        )
    )

    spawned = measure.spawn(config, SPAWNED)
    if not spawn_baseline:
        spawn_baseline.append(spawned.processes)
    first_n = spawn_baseline[0]
    rows.append(
        Row(
            "spawn: processes",
            n,
            f"{_procs(spawned.processes, spawned.simulated)}: {_tools(dict(spawned.by_tool))}",
            f"= first N's ({first_n})",
            spawned.processes == first_n,
            "constant too, incl. 2 nixos-container lists",
            value=spawned.processes,
            target_kind=COUNT,
        )
    )
    rows.append(
        Row(
            "spawn: time without the nix build",
            n,
            f"{_s(spawned.seconds_without_build)} (nix flake lock {_s(spawned.flake_lock_seconds)};"
            f" build {_s(spawned.build_seconds)} excluded)",
            value=spawned.seconds_without_build,
        )
    )

    rebuilt = measure.rebuild(config, SPAWNED)
    rows.append(
        Row(
            "rebuild: nix input bumps",
            n,
            f"{_count(rebuilt.inputs_bumped, 'input', 'inputs')} asked "
            f"({_count(rebuilt.bump_calls, 'call', 'calls')}), "
            f"{_count(rebuilt.lock_nodes_changed, 'lock node', 'lock nodes')} changed",
            "1",
            rebuilt.inputs_bumped == 1 and rebuilt.lock_nodes_changed == 1,
            "1 too",
            value=rebuilt.inputs_bumped,
            target_kind=COUNT,
        )
    )
    counted = rebuilt.counted
    rows.append(
        Row(
            "rebuild: processes, time w/o nix build",
            n,
            f"{_procs(counted.processes, counted.simulated)}: {_tools(dict(counted.by_tool))}; "
            f"{_s(counted.seconds_without_build)} (nix flake lock "
            f"{_s(counted.flake_lock_seconds)}; build {_s(counted.build_seconds)} excluded)",
            reference="+ 2 nixos-container lists, daemon-reload, stop, start (always restarts)",
            value=counted.seconds_without_build,
        )
    )
    details = {
        "n": n,
        "seed_seconds": built.seed_seconds,
        "sync_seconds": built.sync_seconds,
        "status": asdict(status),
        "status_fresh_process": asdict(fresh_status),
        "sync": asdict(sync),
        "sync_fresh_process": asdict(fresh_sync),
        "spawn": _counted_json(spawned),
        "rebuild": {
            **_counted_json(counted),
            "inputs_bumped": rebuilt.inputs_bumped,
            "bump_calls": rebuilt.bump_calls,
            "lock_nodes_changed": rebuilt.lock_nodes_changed,
        },
    }
    return rows, details


def _counted_json(counted: measure.Counted) -> dict[str, object]:
    return {
        "seconds": counted.seconds,
        "seconds_without_build": counted.seconds_without_build,
        "build_seconds": counted.build_seconds,
        "flake_lock_seconds": counted.flake_lock_seconds,
        "processes": counted.processes,
        "simulated_host_processes": counted.simulated,
        "by_tool": dict(counted.by_tool),
        "tool_seconds": dict(counted.tool_seconds),
    }


def _m(count: int) -> str:
    return f"{count / 1e6:.1f} M"


def _x(ratio: float) -> str:
    return f"{ratio:.2f}x"


def measure_rollout(workdir: Path, n: int, index: int) -> tuple[list[Row], dict[str, object]]:
    bench = rollout_bench.measure_size(workdir, n, index)
    rolled, rebuilt, one = bench.rollout, bench.rebuilds, bench.one_agent
    rn, bn = rolled.nix, rebuilt.nix
    eval_target = f"≤ {ROLLOUT_EVAL_RATIO:g}x one agent's"
    large = n >= ROLLOUT_LARGE
    rows = [
        Row(
            "rollout: set-up (hive, first rollout, starts)",
            n,
            f"{_s(bench.setup_seconds)}; the heavy base computation alone: "
            f"{_s(bench.heavy_alone_seconds)} (nix eval)",
            value=bench.setup_seconds,
        ),
        Row(
            "rollout: nix evaluator processes",
            n,
            f"rollout {rn.evaluators}: {rn.system_evaluators} evaluated, "
            f"{rn.cache_hits} eval-cache hits; rebuilds {bn.evaluators}: "
            f"{bn.system_evaluators} evaluated, {bn.cache_hits} hits; the heavy base "
            f"evaluated {rn.heavy_evaluations} vs {bn.heavy_evaluations} times",
            reference=f"all nix: rollout {rn.processes} ({_tools(rn.by_command)}), "
            f"{_s(rn.nix_seconds)}; rebuilds {bn.processes} ({_tools(bn.by_command)}), "
            f"{_s(bn.nix_seconds)}",
            value=rn.evaluators,
        ),
        Row(
            "rollout: evaluation work (function calls)",
            n,
            f"rollout {_m(rn.function_calls)} = {_x(bench.eval_work_ratio)} one agent's "
            f"{_m(one.function_calls)}; N rebuilds {_m(bn.function_calls)}",
            eval_target,
            bench.eval_work_ratio <= ROLLOUT_EVAL_RATIO,
            f"one installable over all: {_m(bench.shared.function_calls)}, "
            f"{_s(bench.shared.seconds)}",
            value=bench.eval_work_ratio,
            target_kind=COUNT,
        ),
        Row(
            "rollout: evaluation time (evaluators' wall)",
            n,
            f"rollout {_s(rn.evaluator_seconds)} = {_x(bench.eval_time_ratio)} one agent's "
            f"{_s(one.evaluator_seconds)} (system evaluations {_s(rn.system_evaluator_seconds)}"
            f", {rn.cache_hits} hits {_s(rn.cache_hit_seconds)}); N rebuilds "
            f"{_s(bn.evaluator_seconds)}",
            eval_target,
            bench.eval_time_ratio <= ROLLOUT_EVAL_RATIO,
            f"rollout nix CPU {_s(rn.cpu_seconds)}, rebuilds {_s(bn.cpu_seconds)}",
            value=bench.eval_time_ratio,
            target_kind=TIME,
        ),
        Row(
            "rollout: wall time vs N sequential rebuilds",
            n,
            f"rollout {_s(rolled.seconds)} = build {_s(rolled.build_seconds)} (its evaluators "
            f"{_s(rn.system_evaluator_seconds)}) + switches "
            f"{_s(rolled.seconds - rolled.build_seconds)}; rebuilds {_s(rebuilt.seconds)}: "
            f"{_x(bench.wall_ratio)}",
            f"≤ {ROLLOUT_WALL_RATIO:g}x" if large else "—",
            _check(bench.wall_ratio <= ROLLOUT_WALL_RATIO, large),
            value=bench.wall_ratio,
            target_kind=TIME,
        ),
        Row(
            "rollout: all processes",
            n,
            f"rollout {_procs(rolled.hivegen_processes, rolled.simulated_processes)}; "
            f"rebuilds {_procs(rebuilt.hivegen_processes, rebuilt.simulated_processes)}",
            value=rolled.hivegen_processes,
        ),
    ]
    return rows, bench.as_json()


def measure_cli(config_path: Path, repeat: int, workdir: Path) -> list[Row]:
    fresh = measure.Fresh.cached(workdir)
    help_ = measure.median_subprocess(["--help"], repeat, fresh)
    port = measure.median_subprocess(["--config", str(config_path), "port", "alice"], repeat, fresh)
    imported = measure.import_seconds("hivegen.cli", repeat, fresh)
    bare = measure.median_python("pass", repeat, fresh)
    rows = [
        Row(
            "hivegen --help",
            None,
            f"{_s(help_.median_seconds)} (median of {repeat})",
            f"< {HELP_SECONDS} s",
            help_.median_seconds < HELP_SECONDS,
            value=help_.median_seconds,
            target_kind=TIME,
        ),
        Row(
            "hivegen port alice",
            None,
            f"{_s(port.median_seconds)} (median of {repeat})",
            value=port.median_seconds,
        ),
        Row(
            "import hivegen.cli (-X importtime, cumulative)",
            None,
            f"{_s(imported)} (median of {repeat})",
            value=imported,
        ),
        Row(
            "python -c pass (interpreter start-up, for scale)",
            None,
            f"{_s(bare)} (median of {repeat})",
            value=bare,
        ),
    ]
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        # This machine never writes .pyc files: what every start-up costs here as is.
        uncached = measure.median_subprocess(["--help"], repeat, measure.Fresh.inherited(workdir))
        rows.append(
            Row(
                "hivegen --help, PYTHONDONTWRITEBYTECODE=1 as set here",
                None,
                f"{_s(uncached.median_seconds)} (median of {repeat}; compiles hivegen each run)",
                value=uncached.median_seconds,
            )
        )
    return rows


def format_table(rows: Sequence[Row]) -> str:
    header = ["measure", "N", "figure", "target", "met?", "reference design cost"]
    cells = [
        [
            row.measure,
            "—" if row.n is None else str(row.n),
            row.figure,
            row.target,
            "—" if row.met is None else ("yes" if row.met else "NO"),
            row.reference,
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    rule = "  ".join("-" * width for width in widths)
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip(), rule]
    previous: str | None = None
    for line in cells:
        group = line[1]
        if previous is not None and group != previous:
            lines.append("")
        previous = group
        lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(lines)


NOTES = """\
notes:
  processes: hivegen's own, counted by hivegen.process.started_count() and broken down
    by executable; "+k sim" are those the simulated nixos-container/systemctl start
    themselves (nested systemctl calls, one nix build per create/update), from its log.
  status and no-op sync: hivegen.cli.main in this process (median after a warm-up run,
    hivegen's caches cleared before each run); the targets are checked on these. The
    "fresh process" rows run the installed script (its processes counted from -v): they
    add interpreter start-up and imports, shown for the CLI on its own at the end.
  fresh processes run with Python's bytecode cache on (in the work dir), as an
    installed hivegen has it.
  spawn and rebuild: Hive.spawn / Hive.rebuild; time inside nixos-container create/update
    (the nix build) is subtracted; the time inside `nix flake lock` is shown because it
    grows with N: on Nix 2.8 the lock-file reader is superlinear in the number of inputs.
  rebuild: after a new commit on the agent's applied main (as an approved change leaves).
  hives: applied repos written directly (real git objects + one `git read-tree` each),
    confs written as nixos-container + hivegen leave them, meta synced once by hivegen.
  rollout (benchmarks/rollout.py): a manager and N - 1 agents, running, on a base flake
    with a deliberately heavy pure computation every system forces (the heavy base's cost
    alone is shown); after a base release, Rollout(all, jobs=4).run(), then after another
    N sequential Hive.rebuild. Every nix process is recorded by a nix shim first on PATH
    (hivegen's and the simulated nixos-container's): an evaluator is a nix build / eval /
    path-info of flake installables; function calls and CPU are nix's own NIX_SHOW_STATS;
    an "eval-cache hit" made < 10% of the heavy computation's function calls. "One agent's"
    is the median rebuild's. Times are wall clock; concurrent evaluators' times add up.
    Nix 2.8 evaluates each installable of one `nix build` on its own (its flake called
    afresh: nothing shared between them), so the rollout lists every system's derivation
    with one `nix eval --apply` over nixosConfigurations and builds those; "one
    installable over all" is that evaluation measured alone, for scale."""


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive numbers")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Build simulated hives of N registered agents and measure status, "
        "no-op meta sync, spawn, rebuild and CLI start-up, and rollout --all against N "
        "sequential rebuilds, against the issue's targets. "
        "Exit status 0 when every target is met, 1 otherwise.",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=list(DEFAULT_SIZES),
        metavar="N,N,...",
        help="hive sizes (default: 10,100,1000)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=DEFAULT_REPEAT,
        metavar="K",
        help=f"runs per median (CLI start-up, status, sync; default {DEFAULT_REPEAT})",
    )
    parser.add_argument(
        "--rollout-sizes",
        type=parse_sizes,
        default=list(DEFAULT_ROLLOUT_SIZES),
        metavar="N,N,...",
        help="hive sizes for rollout --all against N sequential rebuilds (default: 10,50; "
        "each at least 2)",
    )
    parser.add_argument(
        "--only",
        choices=SUITES,
        help="run one suite: hives (status, sync, spawn, rebuild, start-up) or rollout",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="where to build the hives (default: a new temporary directory)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (default: delete it)"
    )
    return parser


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _machine() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "nix": str(nix.version()),
        "cpus": str(os.cpu_count()),
        "load": _load(),
        "platform": platform.platform(),
    }


def _hive_suite(
    workdir: Path, sizes: Sequence[int], repeat: int
) -> tuple[list[Row], list[dict[str, object]]]:
    """status, sync, spawn, rebuild at each size, then CLI start-up (none without sizes)."""
    rows: list[Row] = []
    details: list[dict[str, object]] = []
    if not sizes:
        return rows, details
    base = hives.write_base_flake(workdir / "hyperhive")
    spawn_baseline: list[int] = []
    for n in sizes:
        print(f"N = {n}: building and measuring ...", flush=True)
        hive_started = time.perf_counter()
        hive_rows, hive_details = measure_hive(workdir, base, n, repeat, spawn_baseline)
        rows += hive_rows
        details.append(hive_details)
        print(f"N = {n}: done in {time.perf_counter() - hive_started:.1f} s", flush=True)
    rows += measure_cli(workdir / f"hive-{sizes[0]}" / "hive.toml", repeat, workdir)
    return [replace(row, suite="hives") for row in rows], details


def _rollout_suite(
    workdir: Path, sizes: Sequence[int]
) -> tuple[list[Row], list[dict[str, object]]]:
    """rollout --all against N sequential rebuilds at each size."""
    rows: list[Row] = []
    details: list[dict[str, object]] = []
    for index, n in enumerate(sizes):
        print(f"rollout, N = {n}: building and measuring ...", flush=True)
        hive_started = time.perf_counter()
        hive_rows, hive_details = measure_rollout(workdir, n, index)
        rows += hive_rows
        details.append(hive_details)
        print(f"rollout, N = {n}: done in {time.perf_counter() - hive_started:.1f} s", flush=True)
    return [replace(row, suite="rollout") for row in rows], details


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeat < 1:
        print("--repeat must be at least 1", file=sys.stderr)
        return 2
    if any(size < 2 for size in args.rollout_sizes):
        print("--rollout-sizes must be at least 2 (a manager and an agent)", file=sys.stderr)
        return 2
    suites = [args.only] if args.only else list(SUITES)
    started = time.perf_counter()
    if args.workdir is not None:
        workdir = args.workdir.absolute()
        if workdir.exists() and any(workdir.iterdir()):
            print(f"--workdir {workdir} is not empty", file=sys.stderr)
            return 2
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="hivegen-bench-"))
    machine = _machine()
    sizes = args.sizes if "hives" in suites else []
    rollout_sizes = args.rollout_sizes if "rollout" in suites else []
    print(
        f"hivegen benchmark: sizes {sizes}, rollout sizes {rollout_sizes}, "
        f"repeat {args.repeat}, workdir {workdir}\n"
        f"nix {machine['nix']}, python {machine['python']}, {machine['cpus']} CPUs, "
        f"load average {machine['load']}",
        flush=True,
    )
    try:
        hives.use_offline_nix(workdir)
        rows, details = _hive_suite(workdir, sizes, args.repeat)
        rollout_rows, rollout_details = _rollout_suite(workdir, rollout_sizes)
        rows += rollout_rows
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.perf_counter() - started
    print()
    print(format_table(rows))
    print()
    print(NOTES)
    missed = [row for row in rows if row.met is False]
    checked = [row for row in rows if row.met is not None]
    print(
        f"\n{len(checked) - len(missed)} of {len(checked)} targets met; "
        f"total run time {total:.1f} s; load average now {_load()}"
        + (f"; workdir kept at {workdir}" if args.keep else "")
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "sizes": sizes,
                    "rollout_sizes": rollout_sizes,
                    "repeat": args.repeat,
                    "total_seconds": total,
                    "load_at_end": _load(),
                    "rows": [asdict(row) for row in rows],
                    "hives": details,
                    "rollouts": rollout_details,
                },
                indent=2,
                ensure_ascii=False,
            )
            + "\n"
        )
    return 1 if missed else 0
