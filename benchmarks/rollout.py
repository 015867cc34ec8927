"""`hivegen rollout --all` against N sequential `hivegen rebuild`s, on a heavy base flake.

The base flake is hivegen's stub hyperhive (hivegen/demo/hyperhive, as in
tests/fixtures/hyperhive) with one change: a deliberately heavy pure computation that
every agent's system depends on, standing in for what makes a real NixOS system costly to
evaluate (importing nixpkgs and evaluating the module system). It is a top-level `let` of
the base flake's outputs, as an imported nixpkgs is: one evaluator computes it once for
all the systems it evaluates, and each system forces it (it is one of the system's
`environment.variables`, hence in its toplevel derivation). Its size (HEAVY_OUTER x
HEAVY_INNER additions) makes about half a second of evaluator CPU time, about a second of
wall time with nix's own start-up, on a small machine; the benchmark measures and prints
what it costs here on its own (`nix eval` of the expression alone).

For each N, a hive of one manager and N - 1 sub-agents (ports all different: they run
side by side) is built the quick way (benchmarks/hives.py), rolled out once and started
(not measured), so that every agent runs a system of the base. Then, each time after a
new base release that changes every system (committed, then `meta update hyperhive`):

1. `Rollout(hive, every agent, jobs=4).run()`: one `nix eval` listing every system's
   derivation (one evaluation for the hive), one `nix build` of those derivations, then
   each container switched to its built system (`nix-env --set`, `systemctl reload`: no
   evaluation), a canary first, the manager last, each switch health-checked;
2. after another release, `hive.rebuild(name)` for every agent, one after the other:
   each its own `nixos-container update`, hence its own evaluation.

Every nix process is recorded by a `nix` shim first on PATH (benchmarks/nixshim.py):
hivegen's own and those the simulated nixos-container starts. An *evaluator* is a nix
process that evaluates flake installables (`nix build`, `nix eval`, `nix path-info` of
`<flake>#<attr>`); nix's own statistics (NIX_SHOW_STATS) tell how much each evaluated.
One that made fewer than a tenth of the heavy computation's function calls evaluated no
system: it found it in nix's eval cache.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from benchmarks import hives, measure
from benchmarks.nixshim import NixCall, NixShim
from hivegen import names, nix, process
from hivegen.errors import HivegenError
from hivegen.git import Git
from hivegen.hive import Hive
from hivegen.rollout import Phase, Rollout

HEAVY_OUTER = 2000
HEAVY_INNER = 1000
JOBS = 4
# The heavy computation, as it appears in the base flake (the values filled in).
HEAVY_NIX = (
    "builtins.foldl' (a: i: builtins.foldl' (b: j: b + i * j) a"
    " (builtins.genList (x: x) {inner})) 0 (builtins.genList (x: x) {outer})"
)
HEAVY_COMMENT = """\
      # The hivegen benchmark's stand-in for nixpkgs and the NixOS module system
      # (benchmarks/rollout.py): a deliberately heavy pure computation, about as costly to
      # evaluate as a small NixOS system. A top-level `let`, as an imported nixpkgs is: one
      # evaluator computes it once for every system it evaluates; each system forces it
      # (environment.variables.HYPERHIVE_HEAVY, hence its toplevel).
"""
BASE_LINE = "environment.variables.HYPERHIVE_ROLE = role;"
LET_LINE = "      base = role: {"


def heavy_expression() -> str:
    return HEAVY_NIX.format(inner=HEAVY_INNER, outer=HEAVY_OUTER)


def heavy_value() -> int:
    """What the heavy computation evaluates to: sum of i * j, i < OUTER, j < INNER."""
    return (HEAVY_OUTER * (HEAVY_OUTER - 1) // 2) * (HEAVY_INNER * (HEAVY_INNER - 1) // 2)


def heavy_function_calls() -> int:
    """The evaluator function calls of one heavy computation, as NIX_SHOW_STATS counts
    them: per element of each list, one for genList's `x: x` and two for the curried
    function foldl' applies."""
    return 3 * HEAVY_OUTER * HEAVY_INNER + 3 * HEAVY_OUTER


def cache_hit_limit() -> int:
    """Fewer function calls than this: the evaluator evaluated no system."""
    return heavy_function_calls() // 10


# -- the heavy base flake ------------------------------------------------------------------


def heavy_flake_text(version: str) -> str:
    """The demo base flake, made heavy, at base release `version`."""
    text = (resources.files("hivegen.demo") / "hyperhive" / "flake.nix").read_text()
    if LET_LINE not in text or BASE_LINE not in text:
        raise HivegenError("hivegen/demo/hyperhive/flake.nix changed: update benchmarks/rollout.py")
    text = text.replace(
        LET_LINE, f"{HEAVY_COMMENT}      heavy = {heavy_expression()};\n{LET_LINE}", 1
    )
    return text.replace(
        BASE_LINE,
        f"{BASE_LINE}\n        environment.variables.HYPERHIVE_HEAVY = toString heavy;"
        f'\n        environment.variables.BASE_VERSION = "{version}";',
        1,
    )


def write_heavy_base(dest: Path) -> str:
    """The heavy base flake at release "1", committed at `dest`; its git+file URL."""
    url = hives.write_base_flake(dest)
    release_base(dest, "1")
    return url


def release_base(dest: Path, version: str) -> None:
    """Commit base release `version`: it changes every agent's system."""
    (dest / "flake.nix").write_text(heavy_flake_text(version))
    git = Git("hivegen bench", "bench@hivegen")
    git.run(dest, "add", "--all")
    git.commit(dest, f"base release {version}")


def heavy_alone_seconds() -> float:
    """Wall time of `nix eval` of the heavy computation by itself (for scale)."""
    started = time.perf_counter()
    out = process.run([*hives.NIX, "eval", "--expr", heavy_expression()]).stdout.strip()
    elapsed = time.perf_counter() - started
    if out != str(heavy_value()):
        raise HivegenError(f"the heavy computation gave {out}, not {heavy_value()}")
    return elapsed


# -- figures -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NixFigures:
    """The nix processes of one measured operation."""

    processes: int  # every nix process
    by_command: dict[str, int]
    evaluators: int
    evaluator_seconds: float  # sum of their wall times
    function_calls: int  # sum of their evaluator function calls
    cpu_seconds: float  # sum of their user CPU time
    cache_hits: int  # evaluators that evaluated no system
    cache_hit_seconds: float
    system_evaluators: int  # the others: each evaluated at least one system
    system_evaluator_seconds: float
    # How many times the heavy base computation was evaluated, all evaluators together.
    heavy_evaluations: int
    nix_seconds: float  # every nix process's wall time, summed

    @classmethod
    def of(cls, calls: Sequence[NixCall]) -> NixFigures:
        evaluators = [c for c in calls if c.evaluates_installables]
        hits = [c for c in evaluators if c.function_calls < cache_hit_limit()]
        systems = [c for c in evaluators if c.function_calls >= cache_hit_limit()]
        return cls(
            processes=len(calls),
            by_command=dict(Counter(" ".join(c.command) or "?" for c in calls)),
            evaluators=len(evaluators),
            evaluator_seconds=sum(c.seconds for c in evaluators),
            function_calls=sum(c.function_calls for c in evaluators),
            cpu_seconds=sum(c.cpu_seconds for c in evaluators),
            cache_hits=len(hits),
            cache_hit_seconds=sum(c.seconds for c in hits),
            system_evaluators=len(systems),
            system_evaluator_seconds=sum(c.seconds for c in systems),
            heavy_evaluations=sum(c.function_calls // heavy_function_calls() for c in evaluators),
            nix_seconds=sum(c.seconds for c in calls),
        )


@dataclass(frozen=True, slots=True)
class Measured:
    seconds: float
    hivegen_processes: int  # started by hivegen itself (nix among them)
    simulated_processes: int  # started by the simulated host's tools themselves
    nix: NixFigures
    # Sequential rebuilds only: each rebuild's own nix figures, in order.
    per_agent: tuple[NixFigures, ...] = ()
    build_seconds: float = 0.0  # the rollout's evaluation and build (nix eval + nix build)


@dataclass(frozen=True, slots=True)
class RolloutBench:
    n: int
    heavy_alone_seconds: float
    setup_seconds: float
    rollout: Measured
    rebuilds: Measured
    shared: NixCall  # for scale: one installable over every system
    slowest_calls: dict[str, list[str]] = field(default_factory=dict)

    @property
    def one_agent(self) -> NixFigures:
        """The median rebuild's (by evaluator time): one agent's evaluation."""
        ordered = sorted(self.rebuilds.per_agent, key=lambda f: f.evaluator_seconds)
        return ordered[len(ordered) // 2]

    @property
    def eval_time_ratio(self) -> float:
        return self.rollout.nix.evaluator_seconds / self.one_agent.evaluator_seconds

    @property
    def eval_work_ratio(self) -> float:
        return self.rollout.nix.function_calls / self.one_agent.function_calls

    @property
    def wall_ratio(self) -> float:
        return self.rollout.seconds / self.rebuilds.seconds

    def as_json(self) -> dict[str, object]:
        return {
            "n": self.n,
            "heavy_alone_seconds": self.heavy_alone_seconds,
            "setup_seconds": self.setup_seconds,
            "rollout": asdict(self.rollout),
            "rebuilds": asdict(self.rebuilds),
            "one_agent": asdict(self.one_agent),
            "shared_one_installable": {
                "seconds": self.shared.seconds,
                "function_calls": self.shared.function_calls,
                "cpu_seconds": self.shared.cpu_seconds,
            },
            "eval_time_ratio": self.eval_time_ratio,
            "eval_work_ratio": self.eval_work_ratio,
            "wall_ratio": self.wall_ratio,
            "median_rebuild_seconds": statistics.median(
                f.evaluator_seconds for f in self.rebuilds.per_agent
            ),
            "slowest_calls": self.slowest_calls,
        }


# -- the hive ------------------------------------------------------------------------------


def hive_agents(n: int) -> list[str]:
    """The manager and n - 1 sub-agents, every port its own."""
    return [names.DEFAULT_MANAGER, *hives.agent_names_own_ports(n - 1)]


def _versions(hive: Hive, agents: Sequence[str]) -> Counter[str | None]:
    found: Counter[str | None] = Counter()
    for name in agents:
        system = hive.host.system(hive.spec(name).container)
        if system is None:
            found[None] += 1
            continue
        variables = json.loads((system / "variables.json").read_text())
        if variables.get("HYPERHIVE_HEAVY") != str(heavy_value()):
            raise HivegenError(f"{name}'s system {system} does not hold the heavy value")
        found[variables.get("BASE_VERSION")] += 1
    return found


def _require(hive: Hive, agents: Sequence[str], version: str, what: str) -> None:
    versions = _versions(hive, agents)
    if versions != Counter({version: len(agents)}):
        raise HivegenError(f"after {what}, the agents run base releases {dict(versions)}")
    states = hive.host.unit_states(hive.spec(n).container for n in agents)
    down = [name for name in agents if not states[hive.spec(name).container].running]
    if down:
        raise HivegenError(f"after {what}, {len(down)} agents are not running: {down[:5]}")


def _slowest(calls: Sequence[NixCall], count: int = 3) -> list[str]:
    return [c.describe() for c in sorted(calls, key=lambda c: -c.seconds)[:count]]


def measure_size(workdir: Path, n: int, index: int) -> RolloutBench:
    """The whole comparison for a hive of `n` agents (see the module's docstring)."""
    if n < 2:
        raise HivegenError("the rollout benchmark needs at least 2 agents (a manager and one)")
    root = workdir / f"rollout-{n}"
    base_dir = root / "hyperhive"
    base_url = write_heavy_base(base_dir)
    alone = heavy_alone_seconds()
    shim = NixShim(root / "nixshim")
    started = time.perf_counter()
    # A loopback address of its own: another size's agents of the same names run too.
    address = f"127.0.{101 + index}.1"
    agents = hive_agents(n)
    built = hives.build_hive(root / "hive", base_url, agents, health_address=address)
    config = built.config
    if config.hive.manager != agents[0]:
        raise HivegenError(f"the benchmark hive's manager is {config.hive.manager!r}")
    hives.make_bind_sources(config, agents)
    with shim.active():
        hive = Hive(config)
        # Every agent on a system of release 1, running: what a rollout meets.
        Rollout(hive, agents, jobs=JOBS).run()
        for name in agents:
            hive.start(name)
        _require(hive, agents, "1", "the set-up")
        setup_seconds = time.perf_counter() - started

        release_base(base_dir, "2")
        hive.meta_update(["hyperhive"])
        rolled, rollout_calls = _measure_rollout(hive, agents, shim)
        _require(hive, agents, "2", "the rollout")

        release_base(base_dir, "3")
        hive.meta_update(["hyperhive"])
        rebuilt, rebuild_calls = _measure_rebuilds(hive, agents, shim)
        _require(hive, agents, "3", "the rebuilds")
        shared = shared_evaluation(hive, shim)
    return RolloutBench(
        n,
        alone,
        setup_seconds,
        rolled,
        rebuilt,
        shared,
        {"rollout": _slowest(rollout_calls), "rebuilds": _slowest(rebuild_calls)},
    )


SHARED_APPLY = "cs: builtins.mapAttrs (n: c: c.config.system.build.toplevel.drvPath) cs"


def shared_evaluation(hive: Hive, shim: NixShim) -> NixCall:
    """For scale: every system's derivation from ONE installable (`nix eval --apply` over
    `nixosConfigurations`), i.e. what one evaluator costs when it shares the base."""
    shim.clear()
    nix.run("eval", "--json", f"{hive.layout.meta}#nixosConfigurations", "--apply", SHARED_APPLY)
    calls = [c for c in shim.calls() if c.evaluates_installables]
    if len(calls) != 1:
        raise HivegenError(f"expected one evaluating nix call, found {len(calls)}")
    return calls[0]


def _measure_rollout(
    hive: Hive, agents: Sequence[str], shim: NixShim
) -> tuple[Measured, list[NixCall]]:
    measure.fresh_process_state()
    shim.clear()
    with measure.probe(hive.config) as counted:
        report = Rollout(hive, agents, jobs=JOBS).run()
    if not report.ok or any(step.phase is not Phase.HEALTHY for step in report.steps):
        phases = Counter(str(step.phase) for step in report.steps)
        raise HivegenError(f"the measured rollout did not switch every agent: {dict(phases)}")
    calls = shim.calls()
    return (
        Measured(
            counted.seconds,
            counted.processes,
            counted.simulated,
            NixFigures.of(calls),
            build_seconds=report.build_seconds,
        ),
        calls,
    )


def _measure_rebuilds(
    hive: Hive, agents: Sequence[str], shim: NixShim
) -> tuple[Measured, list[NixCall]]:
    measure.fresh_process_state()
    shim.clear()
    windows: list[tuple[float, float]] = []
    with measure.probe(hive.config) as counted:
        for name in agents:
            began = time.time()
            hive.rebuild(name)
            windows.append((began, time.time()))
    calls = shim.calls()
    per_agent = tuple(
        NixFigures.of([c for c in calls if began <= c.start < ended]) for began, ended in windows
    )
    if sum(f.processes for f in per_agent) != len(calls):
        raise HivegenError("a nix call of the rebuilds fell outside every rebuild")
    return (
        Measured(
            counted.seconds, counted.processes, counted.simulated, NixFigures.of(calls), per_agent
        ),
        calls,
    )
