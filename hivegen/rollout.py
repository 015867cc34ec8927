"""`hivegen rollout`: the committed meta flake to many agents, safely.

1. **Build every target's system first, with one evaluation** (nix.build_systems): one
   `nix eval` lists every system's derivation (what the systems share, the base flake
   and its nixpkgs, is evaluated once), one `nix build` of those derivations builds
   them in parallel, and a failure stops the rollout before any container is touched.
2. **A canary first** (the first sub-agent by name unless told; never the manager),
   then the others, `jobs` at a time, **the manager last**.
3. Each switch is `activation.switch`: the container's profile set to its built system
   and a running container reloaded onto it (what `nixos-container update` ends with;
   no second evaluation), the health check, and an agent that does not come up put
   back on the system it ran (tag `unhealthy/<n>`). The rollout
   then stops, unless `keep_going`; agents not reached are left as they are.

Resumable: the record `<state>/meta/.git/hivegen-rollout` (root's; JSON) names the meta
commit being rolled out and each agent's phase, written before every step. Re-running
for the same commit skips the agents already done (up, or put back), checks an agent
interrupted mid-switch again (reloaded onto the new system, then checked), and goes on
with the rest; doctor reports a record left behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING, Any

from hivegen import activation, fsutil, nix
from hivegen.activation import Unhealthy
from hivegen.errors import HivegenError, UsageError
from hivegen.health import HealthCheck

if TYPE_CHECKING:
    from hivegen.hive import Hive

RECORD = "hivegen-rollout"


class Phase(StrEnum):
    WAITING = "waiting"
    BUILT = "built"
    ACTIVATING = "activating"
    HEALTHY = "healthy"
    # Already on the built system, or stopped (its profile was set; it boots it next).
    UNCHANGED = "unchanged"
    UPDATED = "updated (stopped)"
    ROLLED_BACK = "rolled back"
    FAILED = "failed"
    # Not activated: the rollout stopped before its turn.
    SKIPPED = "skipped"

    @property
    def done(self) -> bool:
        return self in (Phase.HEALTHY, Phase.UNCHANGED, Phase.UPDATED, Phase.ROLLED_BACK)


@dataclass(slots=True)
class AgentStep:
    name: str
    phase: Phase = Phase.WAITING
    elapsed: float = 0.0
    detail: str = ""
    # The system it ran before its activation: what an interrupted one is put back on.
    before: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "phase": str(self.phase),
            "elapsed": round(self.elapsed, 3),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class RolloutReport:
    meta_commit: str
    order: tuple[str, ...]
    steps: tuple[AgentStep, ...]
    build_seconds: float
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return all(s.phase in (Phase.HEALTHY, Phase.UNCHANGED, Phase.UPDATED) for s in self.steps)

    def as_json(self) -> dict[str, object]:
        return {
            "meta_commit": self.meta_commit,
            "order": list(self.order),
            "ok": self.ok,
            "resumed": self.resumed,
            "build_seconds": round(self.build_seconds, 3),
            "agents": [s.as_json() for s in self.steps],
        }


def plan_order(hive: Hive, names: Sequence[str], canary: str | None) -> list[str]:
    """Canary, the other sub-agents by name, the manager last."""
    manager = hive.config.hive.manager
    agents = sorted(n for n in set(names) if n != manager)
    if canary is not None:
        if canary == manager:
            raise UsageError(
                f"the manager ({manager}) cannot be the canary: it goes last",
                hint="choose a sub-agent with --canary",
            )
        if canary not in agents:
            raise UsageError(f"the canary {canary!r} is not one of the agents rolled out")
        agents.remove(canary)
        agents.insert(0, canary)
    return [*agents, *([manager] if manager in names else [])]


@dataclass
class Rollout:
    hive: Hive
    names: Sequence[str]
    canary: str | None = None
    jobs: int = 1
    keep_going: bool = False
    on_progress: Callable[[AgentStep], None] | None = None
    on_output: Callable[[str], None] | None = None
    _lock: Lock = field(default_factory=Lock)

    @property
    def _record_path(self) -> Path:
        return self.hive.layout.meta / ".git" / RECORD

    def run(self) -> RolloutReport:
        hive = self.hive
        if self.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        with hive.locked():
            for name in self.names:
                hive.registered(name)
            order = plan_order(hive, self.names, self.canary)
            # What is rolled out is what the meta flake has committed: clean and locked,
            # so that nix caches the evaluation each container's update repeats.
            hive.meta.sync()
            commit = hive.git.out(hive.layout.meta, "rev-parse", "HEAD").strip()
            steps = {name: AgentStep(name) for name in order}
            resumed = self._resume(commit, steps)
            self._save(commit, steps)
            started = time.monotonic()
            todo = [n for n in order if not steps[n].phase.done]
            built = nix.build_systems(
                hive.layout.meta, todo, env=hive.host.env, on_line=self.on_output
            )
            build_seconds = time.monotonic() - started
            for name in todo:
                if steps[name].phase is not Phase.ACTIVATING:
                    self._set(commit, steps, name, Phase.BUILT, detail=str(built[name]))
            self._activate_all(commit, order, steps, built)
            report = RolloutReport(
                commit, tuple(order), tuple(steps[n] for n in order), build_seconds, resumed
            )
            self._record_path.unlink(missing_ok=True)
        return report

    def _activate_all(
        self, commit: str, order: list[str], steps: dict[str, AgentStep], built: dict[str, Path]
    ) -> None:
        manager = self.hive.config.hive.manager
        pending = [n for n in order if not steps[n].phase.done]
        sub_agents = [n for n in pending if n != manager]
        stopped = False
        if sub_agents:
            # The canary alone first: nothing else moves until it is up.
            stopped = not self._activate(commit, steps, sub_agents[0], built)
        rest = sub_agents[1:]
        if rest and (not stopped or self.keep_going):
            with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="rollout") as pool:
                results = list(pool.map(lambda n: self._activate(commit, steps, n, built), rest))
            stopped = stopped or not all(results)
        if manager in pending and (not stopped or self.keep_going):
            stopped = not self._activate(commit, steps, manager, built) or stopped
        for name in order:
            if steps[name].phase in (Phase.WAITING, Phase.BUILT):
                self._set(commit, steps, name, Phase.SKIPPED, detail="the rollout stopped first")

    def _activate(
        self, commit: str, steps: dict[str, AgentStep], name: str, built: dict[str, Path]
    ) -> bool:
        """One agent; False if it did not come up (or failed otherwise)."""
        hive = self.hive
        spec = hive.registered(name)
        step = steps[name]
        interrupted = step.phase is Phase.ACTIVATING
        began = time.monotonic()
        system = hive.host.system(spec.container)
        if interrupted and step.before and system == built[name]:
            # Killed mid-switch after the switch: it runs the new system unchecked.
            return self._recheck(commit, steps, name, Path(step.before), began)
        if system == built[name]:
            # What it runs is what the lock builds now: its record says so too.
            hive.record_system(spec)
            self._set(
                commit, steps, name, Phase.UNCHANGED, began=began, detail="already runs this system"
            )
            return True
        self._set(commit, steps, name, Phase.ACTIVATING, began=began, before=str(system or ""))
        try:
            done = activation.switch(hive, spec, built[name], "rollout")
        except Unhealthy as exc:
            self._set(commit, steps, name, Phase.ROLLED_BACK, began=began, detail=exc.message)
            return False
        except HivegenError as exc:
            self._set(commit, steps, name, Phase.FAILED, began=began, detail=exc.message)
            return False
        phase = Phase.HEALTHY if done.checked else Phase.UPDATED
        self._set(commit, steps, name, phase, began=began, detail="; ".join(done.steps))
        return True

    def _recheck(
        self, commit: str, steps: dict[str, AgentStep], name: str, before: Path, began: float
    ) -> bool:
        hive = self.hive
        spec = hive.registered(name)
        verdict_ok, reason = False, f"{spec.container} is not running"
        if hive.host.unit_state(spec.container).running:
            try:
                # Whether the reload ran before the kill is not known: again (the same
                # system: switching to it twice changes nothing).
                hive.host.reload(spec.container)
            except HivegenError as exc:
                reason = f"its switch failed: {exc.message}"
            else:
                verdict = HealthCheck(hive).check(spec)
                verdict_ok, reason = verdict.healthy, verdict.reason
        if verdict_ok:
            hive.record_system(spec)
            self._set(
                commit,
                steps,
                name,
                Phase.HEALTHY,
                began=began,
                detail="up (checked after an interruption)",
            )
            return True
        error = activation.unhealthy(hive, spec, before, reason, "rollout (resumed)")
        self._set(commit, steps, name, Phase.ROLLED_BACK, began=began, detail=error.message)
        return False

    # -- the record ----------------------------------------------------------------------

    def _set(
        self,
        commit: str,
        steps: dict[str, AgentStep],
        name: str,
        phase: Phase,
        *,
        began: float | None = None,
        detail: str = "",
        before: str | None = None,
    ) -> None:
        with self._lock:
            step = steps[name]
            step.phase = phase
            step.detail = detail
            if before is not None:
                step.before = before
            if began is not None:
                step.elapsed = time.monotonic() - began
            self._save(commit, steps)
        if self.on_progress is not None:
            self.on_progress(step)

    def _save(self, commit: str, steps: dict[str, AgentStep]) -> None:
        data = {
            "meta_commit": commit,
            "agents": {
                n: {"phase": str(s.phase), "before": s.before, "detail": s.detail}
                for n, s in steps.items()
            },
        }
        fsutil.write_atomic(self._record_path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def _resume(self, commit: str, steps: dict[str, AgentStep]) -> bool:
        """Take over what an interrupted rollout of the same commit recorded."""
        previous = read_record(self.hive)
        if previous is None or previous.get("meta_commit") != commit:
            return False
        for name, entry in previous.get("agents", {}).items():
            if name not in steps or not isinstance(entry, dict):
                continue
            try:
                phase = Phase(str(entry.get("phase")))
            except ValueError:
                continue
            if phase.done or phase is Phase.ACTIVATING:
                steps[name].phase = phase
                steps[name].before = entry.get("before")
                steps[name].detail = str(entry.get("detail", ""))
        return True


def read_record(hive: Hive) -> dict[str, Any] | None:
    """An unfinished rollout's record, or None."""
    try:
        data = json.loads((hive.layout.meta / ".git" / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
