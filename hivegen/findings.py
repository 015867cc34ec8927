"""What `hivegen doctor` reports: findings, their checks and severities, the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    PROBLEM = "problem"
    # Worth knowing, not wrong: does not make doctor exit 3.
    NOTE = "note"


class Check(StrEnum):
    PROPOSED_REPO = "proposed-repo"
    APPLIED_REPO = "applied-repo"
    APPLIED_MAIN = "applied-main"
    APPLIED_TREE = "applied-tree"
    INTERRUPTED_APPROVE = "interrupted-approve"
    META = "meta"
    META_LOCK = "meta-lock"
    CONTAINER = "container"
    CONF = "conf"
    DROPIN = "dropin"
    CREDENTIALS_MODE = "credentials-mode"
    PORT_CLASH = "port-clash"
    FOREIGN = "foreign"
    LEFTOVER = "leftover"
    RESTART = "restart"
    DESIRED = "desired-state"
    INDEX = "index"
    GIT_LOCK = "git-lock"
    PATHS = "paths"
    ROLLOUT = "interrupted-rollout"
    NIX = "nix"


@dataclass(frozen=True, slots=True)
class Finding:
    check: Check
    agent: str | None
    message: str
    severity: Severity = Severity.PROBLEM
    hint: str | None = None
    # How to fix it safely; None when only the operator can decide.
    repair: Callable[[], str] | None = field(default=None, compare=False, repr=False)

    @property
    def repairable(self) -> bool:
        return self.repair is not None


@dataclass(frozen=True, slots=True)
class Report:
    findings: tuple[Finding, ...]
    repaired: tuple[str, ...] = ()

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.PROBLEM)
