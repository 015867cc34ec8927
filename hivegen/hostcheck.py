"""doctor's checks of the host around the containers: the paths a container could plant,
what systemd says of each unit, and what each container boots against its last deploy."""

from __future__ import annotations

from typing import assert_never

from hivegen import desired, nix, pathcheck, registry
from hivegen.containers import UnitState
from hivegen.desired import Desired
from hivegen.errors import HivegenError
from hivegen.findings import Check, Finding, Severity
from hivegen.hive import Hive
from hivegen.names import AgentSpec


def path_findings(hive: Hive, names: tuple[str, ...]) -> list[Finding]:
    """Planted links, wrong types and owners, old notes (pathcheck.py); --repair only
    migrates old notes."""
    found = []
    for item in pathcheck.survey(hive.config, names):
        match item.issue:
            case pathcheck.PathIssue.LEGACY_NOTES:

                def migrate(n: str = item.agent or "") -> str:
                    hive.migrate_notes(hive.spec(n))
                    return f"{n}: notes moved to {hive.layout.notes(n)}"

                found.append(Finding(Check.PATHS, item.agent, item.message, repair=migrate))
            case pathcheck.PathIssue.LEGACY_LEFT:
                found.append(Finding(Check.PATHS, item.agent, item.message, Severity.NOTE))
            case (
                pathcheck.PathIssue.UNSAFE
                | pathcheck.PathIssue.PLANTED
                | pathcheck.PathIssue.BORROWING
            ):
                found.append(
                    Finding(
                        Check.PATHS,
                        item.agent,
                        item.message,
                        hint="look at it and remove it by hand (from inside the manager "
                        "if it is under /agents); --repair never follows, moves or "
                        "deletes it, and hivegen refuses to bind or read through it",
                    )
                )
            case _ as unreachable:
                assert_never(unreachable)
    return found


def nix_findings() -> list[Finding]:
    """The Nix on PATH (the one every lock, build and nixos-container call runs): one
    hivegen supports, and one its tests ran on, or a note that it is not."""
    try:
        found = nix.version()
    except HivegenError as exc:
        return [Finding(Check.NIX, None, exc.message, hint=exc.hint)]
    problem = nix.support_problem(found)
    if problem is not None:
        return [
            Finding(
                Check.NIX,
                None,
                problem,
                hint=f"upgrade Nix; hivegen is tested with {nix.tested_text()} (NixOS: "
                "nix.package; Debian: apt-get install nix-bin)",
            )
        ]
    if not nix.is_tested(found):
        return [
            Finding(
                Check.NIX,
                None,
                f"nix {found} is supported, but hivegen's tests ran on {nix.tested_text()} only",
                Severity.NOTE,
            )
        ]
    return []


def unit_findings(hive: Hive, specs: list[AgentSpec]) -> list[Finding]:
    """What systemd says of the containers' units (one `systemctl show` for all)."""
    states = hive.host.unit_states(s.container for s in specs)
    if any(u.load == "not-found" for u in states.values()):
        return [
            Finding(
                Check.CONTAINER,
                None,
                "container@.service is not loadable on this host: no container can start",
                hint="set boot.enableContainers = true in configuration.nix and "
                "nixos-rebuild switch",
            )
        ]
    found = []
    for spec in specs:
        found += system_findings(hive, spec)
        unit = states[spec.container]
        found += desired_findings(hive, spec, unit)
        if unit.auto_restarting:
            found.append(
                Finding(
                    Check.CONTAINER,
                    spec.name,
                    f"{spec.container} crashed and systemd is restarting it by itself "
                    "(Restart=on-failure)",
                    hint=f"journalctl -u container@{spec.container} shows why; "
                    f"hivegen stop {spec.name} keeps it down",
                )
            )
        elif unit.hit_start_limit:
            found.append(
                Finding(
                    Check.CONTAINER,
                    spec.name,
                    f"{spec.container} failed too often and hit systemd's start limit",
                    hint=f"journalctl -u container@{spec.container} shows why; "
                    f"hivegen start {spec.name} resets the limit and starts it",
                )
            )
    return found


def system_findings(hive: Hive, spec: AgentSpec) -> list[Finding]:
    """The profile (what the container boots) against the system its last deploy
    installed, as recorded then: no Nix evaluation."""
    recorded = hive.recorded_system(spec)
    if recorded is None:
        return []
    tag, system = recorded
    actual = hive.host.system(spec.container)
    if actual == system:
        return []
    current = registry.deployed(hive.layout.applied(spec.name) / ".git").tag

    def put_back(s: AgentSpec = spec) -> str:
        hive.put_back_deployed_system(s)
        return f"{s.name}: rebuilt from the meta flake, back on its last deploy's system"

    return [
        Finding(
            Check.CONTAINER,
            spec.name,
            f"{spec.container} boots {actual or 'nothing (no profile)'}, not the system "
            f"its last deploy ({tag}) installed ({system})",
            hint=f"hivegen rebuild {spec.name} builds and installs what is deployed",
            # Only where the record is of the deploy git says is current: an approve
            # killed between its activation and its tag. Else the record is stale.
            repair=put_back if current == tag else None,
        )
    ]


def desired_findings(hive: Hive, spec: AgentSpec, unit: UnitState) -> list[Finding]:
    """An agent with no record of whether it should run (a hive from before hivegen
    kept one): after a reboot, reconcile would leave it stopped. --repair records what
    it is doing now, which is what the operator last had it do."""
    path = desired.record_path(hive.layout, spec.name)
    if desired.read(hive.layout, spec.name) is not None:
        return []
    now = Desired.RUNNING if unit.running or unit.auto_restarting else Desired.STOPPED

    def record(name: str = spec.name, state: Desired = now) -> str:
        desired.record(hive.layout, name, state)
        return f"{name}: recorded as wanted {state} (reconcile keeps it so after a reboot)"

    return [
        Finding(
            Check.DESIRED,
            spec.name,
            f"{path} is missing or unreadable: whether {spec.name} should run after a "
            f"reboot is not recorded (it is {now} now)",
            hint=f"hivegen start {spec.name} or hivegen stop {spec.name} records it",
            repair=record,
        )
    ]
