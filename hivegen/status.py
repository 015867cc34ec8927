"""`hivegen status`: every agent's state, read with at most one process."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from hivegen import desired, registry
from hivegen.config import Limits
from hivegen.containers import ActiveState, UnitState
from hivegen.desired import Desired
from hivegen.names import AGENT_PREFIX, Role
from hivegen.store import Store

if TYPE_CHECKING:
    from hivegen.hive import Hive


class AgentState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    # Not running, and systemd says the unit failed (a crash, or a start that failed).
    FAILED = "failed"
    # On its way up: starting, or waiting to restart by itself after a crash.
    STARTING = "starting"
    RESTARTING = "restarting"
    # Registered, but its container does not exist (not created yet, or removed).
    MISSING = "missing"
    # Destroyed: out of the meta flake, repos/credentials/notes kept; spawn revives it.
    TOMBSTONE = "tombstone"
    # An h-* container hivegen did not create: reported, never touched.
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class AgentStatus:
    name: str
    container: str
    role: Role | None
    port: int | None
    state: AgentState
    deployed_tag: str | None
    deployed_sha: str | None
    limits: Limits | None
    main_pid: int = 0
    pending: int = 0
    # What the operator last asked for (spawn/start: running, stop: stopped); None when
    # nothing is recorded, as for a foreign container.
    desired: Desired | None = None
    # Inputs locked differently now than when its system was built (empty: up to date;
    # None: nothing recorded to compare, as for a hive from before or a foreign one).
    stale_inputs: tuple[str, ...] | None = None
    # Commits on the manager's main for it that were never proposed (unproposed.py has
    # the definition); None when they cannot be told (no proposed repo, or unreadable).
    unproposed: int | None = None

    @property
    def needs_rebuild(self) -> bool | None:
        return None if self.stale_inputs is None else bool(self.stale_inputs)


def collect(hive: Hive) -> list[AgentStatus]:
    """Every agent, tombstone and foreign h-* container: at most one process."""
    scan = registry.scan(hive.config)
    specs = [hive.spec(n) for n in (*scan.registered, *scan.tombstones)]
    containers = set(hive.host.conf_names())
    ours = {s.container for s in specs}
    foreign = sorted(c for c in containers if c.startswith(AGENT_PREFIX) and c not in ours)
    live = [s.container for s in specs if s.name in scan.registered and s.container in containers]
    states = hive.host.unit_states([*live, *foreign])
    pending = Store(hive.layout.database).pending_counts()
    lock = _lock(hive) if specs else None  # only an agent's figures need it
    result = []
    for spec in specs:
        deployed = registry.deployed(hive.layout.applied(spec.name) / ".git")
        unit: UnitState | None = states.get(spec.container)
        if spec.name in scan.tombstones:
            state = AgentState.TOMBSTONE
        elif unit is None:
            state = AgentState.MISSING
        elif unit.running:
            state = AgentState.RUNNING
        elif unit.active is ActiveState.FAILED:
            state = AgentState.FAILED
        elif unit.auto_restarting:
            state = AgentState.RESTARTING
        elif unit.active is ActiveState.ACTIVATING:
            state = AgentState.STARTING
        else:
            state = AgentState.STOPPED
        result.append(
            AgentStatus(
                name=spec.name,
                container=spec.container,
                role=spec.role,
                port=spec.port,
                state=state,
                deployed_tag=deployed.tag,
                deployed_sha=deployed.sha,
                limits=hive.config.limits_for(spec.name),
                main_pid=unit.main_pid if unit else 0,
                pending=pending.get(spec.name, 0),
                desired=desired.read(hive.layout, spec.name),
                stale_inputs=_stale(hive, spec.name, lock, scan),
                unproposed=_unproposed(hive, spec.name, scan),
            )
        )
    for container in foreign:
        unit = states.get(container)
        result.append(
            AgentStatus(
                name=container[len(AGENT_PREFIX) :],
                container=container,
                role=None,
                port=None,
                state=AgentState.FOREIGN,
                deployed_tag=None,
                deployed_sha=None,
                limits=None,
                main_pid=unit.main_pid if unit else 0,
            )
        )
    return result


def _lock(hive: Hive) -> dict[str, Any] | None:
    from hivegen.meta import read_lock  # the meta flake's module: for agents only

    return read_lock(hive.layout.meta)


def _unproposed(hive: Hive, name: str, scan: registry.Registry) -> int | None:
    if name not in scan.registered:
        return None
    from hivegen import unproposed  # an agent's git objects: imported for an agent only

    # Read in Python, no process (the whole of status stays one).
    return unproposed.of_agent(hive.layout, name).count


def _stale(
    hive: Hive, name: str, lock: dict[str, Any] | None, scan: registry.Registry
) -> tuple[str, ...] | None:
    if name not in scan.registered:
        return None  # a tombstone runs nothing
    from hivegen import builtfrom

    stale = builtfrom.stale_inputs(hive.layout, name, lock)
    return None if stale is None else tuple(stale)


def status_json(s: AgentStatus) -> dict[str, object]:
    """The `--json` shape of one agent's status (CLI and `hivegen serve` alike)."""
    return {
        "name": s.name,
        "container": s.container,
        "role": str(s.role) if s.role else None,
        "port": s.port,
        "state": str(s.state),
        "deployed_tag": s.deployed_tag,
        "deployed_sha": s.deployed_sha,
        "main_pid": s.main_pid,
        "pending": s.pending,
        "unproposed": s.unproposed,
        "desired": str(s.desired) if s.desired else None,
        "needs_rebuild": s.needs_rebuild,
        "stale_inputs": list(s.stale_inputs) if s.stale_inputs is not None else None,
        "limits": {"memory_max": s.limits.memory_max, "cpu_quota": s.limits.cpu_quota}
        if s.limits
        else None,
    }
