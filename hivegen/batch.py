"""One lifecycle verb over several agents (`hivegen start alice bob`, `stop --all`).

Every name is checked before any agent is touched (an unknown one is a usage error and
nothing is done); the whole batch holds the hive lock once; the manager comes first
where the agents need it up (spawn, start, restart) and last where they answer to it
until the end (stop, rebuild, destroy); and one agent's failure does not stop the
others: each outcome is kept, as `systemctl start a b` tries both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, assert_never

from hivegen import registry
from hivegen.errors import HivegenError, UsageError

if TYPE_CHECKING:
    from hivegen.hive import Hive, StepLog


class Verb(StrEnum):
    SPAWN = "spawn"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    REBUILD = "rebuild"
    DESTROY = "destroy"

    @property
    def manager_first(self) -> bool:
        match self:
            case Verb.SPAWN | Verb.START | Verb.RESTART:
                return True
            case Verb.STOP | Verb.REBUILD | Verb.DESTROY:
                return False
            case _:
                assert_never(self)

    @property
    def takes_all(self) -> bool:
        """`--all` means every registered agent: not for spawn (they are spawned) nor
        destroy (a hive is not destroyed by one flag)."""
        return self not in (Verb.SPAWN, Verb.DESTROY)


@dataclass(frozen=True, slots=True)
class Outcome:
    agent: str
    steps: tuple[str, ...] = ()
    error: HivegenError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def chosen(hive: Hive, verb: str, names: Sequence[str], *, everyone: bool) -> list[str]:
    """`names`, each once and in order, or with `everyone` every registered agent
    (sorted): what a verb taking `NAME...|--all` acts on. Both or neither: exit 2."""
    if everyone and names:
        raise UsageError("name agents or give --all, not both")
    if everyone:
        return list(registry.registered_agents(hive.config))
    if not names:
        raise UsageError(f"{verb} needs an agent name, or --all for every agent")
    return list(dict.fromkeys(names))


def targets(hive: Hive, verb: Verb, names: Sequence[str], *, everyone: bool) -> list[str]:
    """The agents the batch acts on, in the order it acts; every name checked first."""
    if everyone and not verb.takes_all:
        raise UsageError(f"{verb} takes no --all", hint=f"name the agents: hivegen {verb} NAME...")
    if not verb.takes_all and not names:
        raise UsageError(f"{verb} needs an agent name")
    wanted = chosen(hive, str(verb), names, everyone=everyone)
    if not everyone:
        # All of them before any agent is touched (each verb checks its agent again as
        # it runs; the registry's own names need no check).
        for name in wanted:
            _check(hive, verb, name)
    manager = [n for n in wanted if n == hive.config.hive.manager]
    others = [n for n in wanted if n != hive.config.hive.manager]
    return [*manager, *others] if verb.manager_first else [*others, *manager]


def _check(hive: Hive, verb: Verb, name: str) -> None:
    match verb:
        case Verb.SPAWN | Verb.DESTROY:
            hive.spec(name)  # a valid name; they say themselves what they find
        case Verb.START | Verb.STOP | Verb.RESTART | Verb.REBUILD:
            hive.registered(name)
        case _:
            assert_never(verb)


def run_each(hive: Hive, verb: Verb, names: Sequence[str], *, purge: bool = False) -> list[Outcome]:
    """Run `verb` on each of `names` (in that order, from `targets`), under one lock."""
    outcomes = []
    with hive.locked():
        for name in names:
            try:
                log = run_one(hive, verb, name, purge=purge)
            except HivegenError as error:
                outcomes.append(Outcome(name, error=error))
            else:
                outcomes.append(Outcome(name, tuple(log.steps)))
    return outcomes


def run_one(hive: Hive, verb: Verb, name: str, *, purge: bool = False) -> StepLog:
    match verb:
        case Verb.SPAWN:
            return hive.spawn(name)
        case Verb.START:
            return hive.start(name)
        case Verb.STOP:
            return hive.stop(name)
        case Verb.RESTART:
            return hive.restart(name)
        case Verb.REBUILD:
            return hive.rebuild(name)
        case Verb.DESTROY:
            return hive.destroy(name, purge=purge)
        case _:
            assert_never(verb)
