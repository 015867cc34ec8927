"""`hivegen reconcile`: bring the hive back to what the operator wants (at boot, or
after restoring a backup of the state root).

Under the hive lock, held once from start to end:
1. the state root's directories, made or checked (as `init`);
2. interrupted approves settled (finished or undone, as `doctor --repair` does);
3. every registered agent, the manager first, then the others by name: its bind sources
   checked and made (the runtime dirs live in /run, which a reboot empties), its conf
   and limits drop-in rewritten where they drifted, and, if the operator wants it
   running (desired.py), it is started. Its system is put back first if its profile is
   not the one hivegen last deployed: nixos-container changed it, and the deploy that
   did so was never recorded;
4. nothing else: a running agent recorded as stopped is left running, a foreign h-*
   container is not looked at beyond its name, a destroyed agent stays destroyed.

One agent's failure does not stop the others; every failure is in the report, and the
verb exits 1. Each step checks what is already done, so a reconcile killed by its unit's
timeout is finished by running it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hivegen import desired, registry
from hivegen.containers import UnitState
from hivegen.desired import Desired
from hivegen.errors import HivegenError
from hivegen.hive import Hive
from hivegen.names import AGENT_PREFIX, AgentSpec, Role
from hivegen.proposals import Proposals
from hivegen.store import ProposalStatus


class Outcome(StrEnum):
    STARTED = "started"
    ALREADY_RUNNING = "already running"
    # The operator stopped it (or destroyed and nothing revived it): left stopped.
    LEFT_STOPPED = "left stopped"
    # No intent recorded (a hive from before hivegen recorded it): left as it is.
    NOT_RECORDED = "no desired state recorded"
    # Running although the operator's last word was stop: reported, not stopped.
    RUNNING_UNWANTED = "running, recorded as stopped"
    # Created: its container was missing (an interrupted spawn, a restored backup).
    CREATED = "created"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AgentResult:
    name: str
    outcome: Outcome
    steps: tuple[str, ...] = ()
    error: str | None = None
    hint: str | None = None


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    # Interrupted work finished before any agent was started, one line each.
    settled: tuple[str, ...]
    agents: tuple[AgentResult, ...]
    # h-* containers hivegen did not create: named, never touched.
    foreign: tuple[str, ...]
    # Failures that are not one agent's (an approve that could not be settled).
    errors: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(a.outcome is Outcome.FAILED for a in self.agents)


def boot_order(hive: Hive, names: tuple[str, ...]) -> list[AgentSpec]:
    """The manager first (the agents it runs may call it), then the others by name."""
    specs = [hive.spec(n) for n in sorted(names)]
    return sorted(specs, key=lambda s: s.role is not Role.MANAGER)


class Reconciler:
    def __init__(self, hive: Hive) -> None:
        self.hive = hive
        self.proposals = Proposals(hive)

    def run(self) -> ReconcileReport:
        hive = self.hive
        with hive.locked():
            hive.init()
            settled, errors = self._settle_approves()
            scan = registry.scan(hive.config)
            ours = {hive.spec(n).container for n in (*scan.registered, *scan.tombstones)}
            foreign = tuple(
                c for c in hive.host.conf_names() if c.startswith(AGENT_PREFIX) and c not in ours
            )
            order = boot_order(hive, scan.registered)
            existing = [s.container for s in order if hive.host.conf_exists(s.container)]
            # One `systemctl show` for the hive; each agent's start changes only its own.
            units = hive.host.unit_states(existing)
            results = [self._agent(spec, units.get(spec.container)) for spec in order]
        return ReconcileReport(tuple(settled), tuple(results), foreign, tuple(errors))

    def _settle_approves(self) -> tuple[list[str], list[str]]:
        settled: list[str] = []
        errors: list[str] = []
        for proposal in self.proposals.store.in_status(ProposalStatus.BUILDING):
            try:
                result = self.proposals.recover(proposal)
            except HivegenError as exc:
                errors.append(
                    f"proposal {proposal.id} ({proposal.agent}): its interrupted approve "
                    f"could not be settled: {exc.message}"
                )
                continue
            settled.append(
                f"proposal {proposal.id} ({proposal.agent}): interrupted approve settled "
                f"as {result.status}"
            )
        return settled, errors

    def _agent(self, spec: AgentSpec, unit: UnitState | None) -> AgentResult:
        steps: list[str] = []
        try:
            return self._reconcile(spec, unit, steps)
        except HivegenError as exc:
            return AgentResult(spec.name, Outcome.FAILED, tuple(steps), exc.message, exc.hint)

    def _reconcile(self, spec: AgentSpec, unit: UnitState | None, steps: list[str]) -> AgentResult:
        hive = self.hive
        wanted = desired.read(hive.layout, spec.name)
        if wanted is None and hive.restart_pending(spec):
            wanted = Desired.RUNNING  # it was running when its restart was interrupted
        if unit is None:
            if wanted is not Desired.RUNNING:
                return AgentResult(
                    spec.name,
                    Outcome.LEFT_STOPPED if wanted else Outcome.NOT_RECORDED,
                    hint=f"its container {spec.container} does not exist: "
                    f"hivegen spawn {spec.name} creates it",
                )
            # The spawn is finished from the repos it left (they are the record).
            log = hive.spawn(spec.name)
            return AgentResult(spec.name, Outcome.CREATED, log.steps)
        if hive.refresh_host_files(spec):
            again = f" (hivegen restart {spec.name} applies them)" if unit.running else ""
            steps.append(f"nspawn flags or limits rewritten{again}")
        if unit.running:
            if wanted is Desired.STOPPED:
                return AgentResult(
                    spec.name,
                    Outcome.RUNNING_UNWANTED,
                    tuple(steps),
                    hint=f"left running; hivegen stop {spec.name} stops it",
                )
            if hive.restart_pending(spec):
                hive.finish_restart(spec)  # it is up: only the mark is left to clear
            return AgentResult(spec.name, Outcome.ALREADY_RUNNING, tuple(steps))
        if wanted is not Desired.RUNNING:
            if wanted is None:
                return AgentResult(
                    spec.name,
                    Outcome.NOT_RECORDED,
                    tuple(steps),
                    hint=f"left stopped; hivegen start {spec.name} starts it and records "
                    "that it should run",
                )
            hive.clear_restart_mark(spec)
            return AgentResult(spec.name, Outcome.LEFT_STOPPED, tuple(steps))
        if hive.put_back_deployed_system(spec):
            steps.append(
                "its profile was not its last deploy's system: rebuilt from the meta flake"
            )
        hive.check_port(spec, running_only=True)
        hive.start_container(spec, unit)
        hive.clear_restart_mark(spec)
        steps.append(f"started {spec.container}")
        return AgentResult(spec.name, Outcome.STARTED, tuple(steps))
