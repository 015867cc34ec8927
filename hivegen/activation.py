"""Switching a running agent to a new system, and back when it does not come up.

`activate` is the one way a system built from the meta flake as it is reaches a running
agent outside an approve (rebuild, rollout): build and switch (`nixos-container
update`), then the health check (health.py). An agent that was running and is not up on
its new system is put back on the one it ran (its profile set back, no build, and the
container restarted on it), the reason kept as the annotated tag `unhealthy/<n>` in its
applied repo, and `Unhealthy` raised. Its system record is only written for a system
that came up: what it runs and what it was built from stay true.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hivegen import registry
from hivegen.errors import HivegenError
from hivegen.health import HealthCheck
from hivegen.names import AgentSpec

if TYPE_CHECKING:
    from hivegen.hive import Hive


class Unhealthy(HivegenError):
    """An agent did not come up on a new system and was put back on the one it ran."""


@dataclass(frozen=True, slots=True)
class Activated:
    steps: tuple[str, ...]
    # True: it was running and is up on its new system; False: nothing was checked (it
    # is stopped, or its system did not change).
    checked: bool


def activate(hive: Hive, spec: AgentSpec, why: str) -> Activated:
    """Build the agent's system from the meta flake as it is and switch to it; if the
    agent was running and does not come up on it (health.py), put it back on the
    system it ran, record why (tag unhealthy/<n>) and raise `Unhealthy`."""
    steps, changed, before, was_running = _prepare(hive, spec)
    hive.host.update(spec.container, hive.host.flake_ref(spec.name))
    steps.append(f"rebuilt {spec.container}")
    # `update` reloads a running container, which does not apply bind mounts or
    # limits: restart only when those changed.
    if changed and was_running:
        hive.restart_container(spec)
        steps.append(f"restarted {spec.container} to apply them")
    elif hive.finish_restart(spec):
        steps.append(f"started {spec.container}: an earlier restart was interrupted")
        was_running = True
    new = hive.host.system(spec.container)
    return _checked(hive, spec, before, new, was_running=was_running, steps=steps, why=why)


def _prepare(hive: Hive, spec: AgentSpec) -> tuple[list[str], bool, Path | None, bool]:
    """Before a switch: bind sources made (a reboot empties the runtime root), conf and
    limits written; (steps, whether those changed, the system it runs, whether it runs)."""
    changed = hive.refresh_host_files(spec)
    steps = ["nspawn flags or limits changed"] if changed else []
    before = hive.host.system(spec.container)
    return steps, changed, before, hive.host.unit_state(spec.container).running


def _checked(
    hive: Hive,
    spec: AgentSpec,
    before: Path | None,
    new: Path | None,
    *,
    was_running: bool,
    steps: list[str],
    why: str,
) -> Activated:
    """The health check of an agent that ran and now runs another system (else none),
    `unhealthy` when it is not up; its system record written when it is."""
    checked = False
    if was_running and before is not None and new != before:
        verdict = HealthCheck(hive).check(spec)
        if not verdict.healthy:
            raise unhealthy(hive, spec, before, verdict.reason, why)
        steps.append(f"{spec.name} is up ({verdict.elapsed:.1f}s)")
        checked = True
    hive.record_system(spec)
    return Activated(tuple(steps), checked)


def switch(hive: Hive, spec: AgentSpec, system: Path, why: str) -> Activated:
    """Switch the agent to `system`, built already (a rollout's): its profile set and a
    running container reloaded onto it, as `nixos-container update` ends, with no
    evaluation. Then as `activate`: the health check, and back on failure."""
    steps, changed, before, was_running = _prepare(hive, spec)
    try:
        hive.host.set_system(spec.container, system)
        if was_running and changed:
            # A reload applies neither bind mounts nor limits.
            hive.restart_container(spec)
            steps.append(f"restarted {spec.container} on {system}")
        elif was_running:
            hive.host.reload(spec.container)
            steps.append(f"switched {spec.container} to {system}")
        else:
            steps.append(f"set {spec.container}'s system (it boots it at its next start)")
    except HivegenError as exc:
        if before is None:
            raise
        raise unhealthy(hive, spec, before, f"its switch failed: {exc.message}", why) from exc
    if hive.finish_restart(spec):
        was_running = True
    return _checked(hive, spec, before, system, was_running=was_running, steps=steps, why=why)


def unhealthy(hive: Hive, spec: AgentSpec, before: Path, reason: str, why: str) -> Unhealthy:
    """Put an agent that did not come up back on `before` (restarted on it), record
    it in its applied repo as the annotated tag unhealthy/<n>, and say so."""
    new = hive.host.system(spec.container)
    put_back = put_back_system(hive, spec, before)
    applied = hive.layout.applied(spec.name)
    main = registry.read_ref(applied / ".git", "refs/heads/main")
    tag = f"unhealthy/{registry.next_number(applied / '.git', registry.UNHEALTHY_PREFIX)}"
    message = (
        f"{why}: {spec.name} did not come up: {reason}\n"
        f"new system: {new}\nput back on: {before}{put_back}\n"
    )
    if main is not None:
        hive.git.tag(applied, tag, main, message)
    return Unhealthy(
        f"{spec.name} did not come up on its new system: {reason}; it is back on the "
        f"system it ran ({before}){put_back}",
        hint=f"the reason is kept in tag {tag} of {applied}; "
        f"hivegen status {spec.name} shows it now",
    )


def put_back_system(hive: Hive, spec: AgentSpec, before: Path) -> str:
    """The container's profile back on `before`, and the container restarted on it
    (a crashed one is not trusted to reload). Words for a message ("" if it runs)."""
    hive.host.set_system(spec.container, before)
    try:
        hive.restart_container(spec)
    except HivegenError as exc:
        return f", but it did not start again: {exc.message}"
    return ""
