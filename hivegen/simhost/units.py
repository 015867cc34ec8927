"""systemd's memory of the simulated `container@<c>.service` units.

Only `container@.service` exists as a unit file (NixOS's template), so every
`container@<c>.service` is loadable and any other unit is not-found. A unit's record in
`ROOT/systemd/units/<unit>.json` holds its run state and the drop-in properties systemd
loaded for it. Loading follows systemd: a dead (inactive) unit is garbage-collected and
re-read from disk when next referenced, while an active or failed one keeps what it
loaded until `daemon-reload` — so a changed drop-in shows in `show` for a running unit
only after a daemon-reload, exactly as on a real host.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from hivegen.simhost.state import Host

CONTAINER_PREFIX = "container@"
SERVICE_SUFFIX = ".service"
UNIT_TYPES = (
    ".service",
    ".socket",
    ".target",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".timer",
    ".path",
    ".slice",
    ".scope",
)

# The simulated machine's RAM, for percentage memory limits.
PHYSICAL_MEMORY = 16 * 1024**3
PAGE_SIZE = 4096
USEC_PER_SEC = 1_000_000
FIRST_PID = 1000


class ActiveState(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    FAILED = "failed"
    # Only as `Restart=on-failure` leaves it: waiting to start again by itself.
    ACTIVATING = "activating"


SUB_STATE = {
    ActiveState.ACTIVE: "running",
    ActiveState.INACTIVE: "dead",
    ActiveState.FAILED: "failed",
    ActiveState.ACTIVATING: "auto-restart",
}
# container@.service on NixOS: Restart=on-failure, systemd's default start limit.
RESTART_SEC = 0.1
START_LIMIT_INTERVAL = 10.0
START_LIMIT_BURST = 5


class LoadState(StrEnum):
    LOADED = "loaded"
    NOT_FOUND = "not-found"


@dataclass(frozen=True, slots=True)
class Limits:
    """The drop-in properties systemd loaded for a unit (None means infinity)."""

    memory_max: int | None = None
    cpu_quota_usec: int | None = None
    drop_in_paths: tuple[str, ...] = ()
    # The drop-in files' names and text as loaded: differs from disk → NeedDaemonReload=yes.
    fingerprint: str = ""


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    active: ActiveState = ActiveState.INACTIVE
    result: str = "success"
    main_pid: int = 0
    invocation_id: str = ""
    # What the container runs: its system at start (or last reload), its conf at start.
    system: str = ""
    conf: str = ""
    extra_nspawn_flags: str = ""
    loaded: Limits = Limits()
    # When an auto-restart is due, and when the unit started lately (the start limit).
    restart_due: float = 0.0
    starts: tuple[float, ...] = ()
    # When its init exits by itself (a system asking SIMHOST_BOOT = "crash"); 0: never.
    crash_due: float = 0.0


def mangle(name: str) -> str:
    """`container@c` → `container@c.service`, as systemctl completes a bare unit name."""
    if name.endswith(UNIT_TYPES):
        return name
    return name + SERVICE_SUFFIX


def container_of(unit: str) -> str | None:
    """The container a `container@<c>.service` unit runs, or None for any other unit."""
    if unit.startswith(CONTAINER_PREFIX) and unit.endswith(SERVICE_SUFFIX):
        instance = unit[len(CONTAINER_PREFIX) : -len(SERVICE_SUFFIX)]
        return instance or None
    return None


def load_state(unit: str) -> LoadState:
    if container_of(unit) is None or not containers_enabled():
        return LoadState.NOT_FOUND
    return LoadState.LOADED


def containers_enabled() -> bool:
    """False plays a NixOS host with `boot.enableContainers = false`: no container@.service."""
    import os

    return os.environ.get("HIVEGEN_SIMHOST_CONTAINERS") != "disabled"


# -- the store -----------------------------------------------------------------------------


def read_unit(host: Host, unit: str) -> Unit:
    try:
        data: dict[str, Any] = json.loads(host.unit_file(unit).read_text())
    except FileNotFoundError:
        return Unit(unit)
    loaded = data.pop("loaded", {})
    loaded["drop_in_paths"] = tuple(loaded.get("drop_in_paths", ()))
    data["active"] = ActiveState(data["active"])
    data["starts"] = tuple(data.get("starts", ()))
    return Unit(**data, loaded=Limits(**loaded))


def write_unit(host: Host, unit: Unit) -> None:
    # Imported here: read-only verbs (show, is-active) need not pay for tempfile.
    from hivegen.fsutil import write_atomic

    data = {
        "name": unit.name,
        "active": str(unit.active),
        "result": unit.result,
        "main_pid": unit.main_pid,
        "invocation_id": unit.invocation_id,
        "system": unit.system,
        "conf": unit.conf,
        "extra_nspawn_flags": unit.extra_nspawn_flags,
        "restart_due": unit.restart_due,
        "starts": list(unit.starts),
        "crash_due": unit.crash_due,
        "loaded": {
            "memory_max": unit.loaded.memory_max,
            "cpu_quota_usec": unit.loaded.cpu_quota_usec,
            "drop_in_paths": list(unit.loaded.drop_in_paths),
            "fingerprint": unit.loaded.fingerprint,
        },
    }
    write_atomic(host.unit_file(unit.name), json.dumps(data, indent=2, sort_keys=True) + "\n")


def known_units(host: Host) -> list[str]:
    try:
        entries = list(host.units_dir.iterdir())
    except FileNotFoundError:
        return []
    return sorted(p.name[: -len(".json")] for p in entries if p.name.endswith(".json"))


def next_pid(host: Host) -> int:
    """A fresh MainPID (the caller holds the systemd lock)."""
    from hivegen.fsutil import write_atomic

    try:
        last = int(host.pid_counter.read_text())
    except FileNotFoundError:
        last = FIRST_PID - 1
    write_atomic(host.pid_counter, f"{last + 1}\n")
    return last + 1


def effective_limits(host: Host, unit: Unit) -> Limits:
    """What systemd reports now: a dead unit is re-read from disk, others keep theirs."""
    if unit.active is ActiveState.INACTIVE:
        return read_limits(host, unit.name)[0]
    return unit.loaded


def needs_daemon_reload(host: Host, unit: Unit) -> bool:
    if unit.active is ActiveState.INACTIVE:
        return False
    return unit.loaded.fingerprint != read_limits(host, unit.name)[0].fingerprint


def with_limits(unit: Unit, limits: Limits) -> Unit:
    return replace(unit, loaded=limits)


# -- drop-ins ------------------------------------------------------------------------------


def read_limits(host: Host, unit: str) -> tuple[Limits, list[str]]:
    """The unit's drop-ins, in file-name order (a later file wins), and any warnings.

    An invalid value is ignored with a warning, keeping what came before, as systemd does.
    """
    # As systemd merges them: every unit directory's drop-ins by file name, a name in a
    # directory of higher precedence (system.control before /run/systemd/system) masking
    # the same name further down.
    by_name: dict[str, Path] = {}
    for directory in (host.dropin_dir(unit), host.run_dropin_dir(unit)):
        try:
            entries = sorted(p for p in directory.iterdir() if p.name.endswith(".conf"))
        except FileNotFoundError:
            continue
        for path in entries:
            by_name.setdefault(path.name, path)
    files = [by_name[name] for name in sorted(by_name)]
    memory: int | None = None
    cpu: int | None = None
    warnings: list[str] = []
    seen: list[str] = []
    for path in files:
        text = path.read_text()
        seen.append(f"{path.name}\0{text}\0")
        for key, value in _service_assignments(text):
            try:
                if key == "MemoryMax":
                    memory = parse_memory_limit(value)
                elif key == "CPUQuota":
                    cpu = parse_cpu_quota(value)
            except ValueError as exc:
                warnings.append(f"{path}: {exc}, ignoring.")
    fingerprint = "".join(seen)
    paths = tuple(str(p) for p in files)
    return Limits(memory, cpu, paths, fingerprint), warnings


def _service_assignments(text: str) -> list[tuple[str, str]]:
    section = ""
    result: list[tuple[str, str]] = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep and section == "Service":
            result.append((key.strip(), value.strip()))
    return result


_SIZE = re.compile(r"^\s*(\d+)(?:\.(\d+))?\s*([KMGTPE]|B|)\s*$")
_SIZE_FACTORS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_FACTORS |= {"P": 1024**5, "E": 1024**6}
_PERCENT = re.compile(r"^(\d+)(?:\.(\d{1,2}))?%$")


def parse_memory_limit(value: str) -> int | None:
    """`MemoryMax=` as systemd reads it: bytes with base-1024 suffixes, a percentage of
    physical memory (rounded down to whole pages), `infinity` or empty (the default)."""
    if value in ("", "infinity"):
        return None
    percent = _parse_permyriad(value)
    if percent is not None:
        if percent > 10_000:
            raise ValueError(f"Invalid memory limit '{value}'")
        size = (PHYSICAL_MEMORY // PAGE_SIZE) * percent // 10_000 * PAGE_SIZE
    else:
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"Invalid memory limit '{value}'")
        whole, frac, suffix = match.groups()
        factor = _SIZE_FACTORS[suffix]
        frac = frac or ""
        size = int(whole) * factor + int(frac or "0") * factor // 10 ** len(frac)
    if size <= 0:
        raise ValueError(f"Memory limit '{value}' out of range")
    return size


def parse_cpu_quota(value: str) -> int | None:
    """`CPUQuota=` as systemd reads it: a positive percentage (may exceed 100%), or empty
    for no quota. Returns CPU time per second in microseconds."""
    if value == "":
        return None
    permyriad = _parse_permyriad(value)
    if permyriad is None or permyriad <= 0:
        raise ValueError(f"Invalid CPU quota '{value}'")
    return permyriad * USEC_PER_SEC // 10_000


def _parse_permyriad(value: str) -> int | None:
    match = _PERCENT.match(value)
    if not match:
        return None
    whole, frac = match.groups()
    return int(whole) * 100 + int((frac or "0").ljust(2, "0"))


# systemd's format_timespan() table, largest unit first.
_TIMESPAN_UNITS = (
    ("y", 31_557_600 * USEC_PER_SEC),
    ("month", 2_629_800 * USEC_PER_SEC),
    ("w", 7 * 86_400 * USEC_PER_SEC),
    ("d", 86_400 * USEC_PER_SEC),
    ("h", 3_600 * USEC_PER_SEC),
    ("min", 60 * USEC_PER_SEC),
    ("s", USEC_PER_SEC),
    ("ms", 1_000),
    ("us", 1),
)


def format_timespan(usec: int | None) -> str:
    """systemd's format_timespan(usec, 0), which `systemctl show` uses for *USec values:
    500000 → "500ms", 2000000 → "2s", 1500000 → "1.500000s", 90s → "1min 30s"."""
    if usec is None:
        return "infinity"
    if usec <= 0:
        return "0"
    parts: list[str] = []
    rest = usec
    for suffix, size in _TIMESPAN_UNITS:
        if rest <= 0:
            break
        if rest < size:
            continue
        whole, frac = divmod(rest, size)
        # Under a minute, a remainder is shown as decimals of this unit and ends the span.
        digits = len(str(size)) - 1
        if rest < 60 * USEC_PER_SEC and frac > 0 and digits > 0:
            parts.append(f"{whole}.{frac:0{digits}d}{suffix}")
            break
        parts.append(f"{whole}{suffix}")
        rest = frac
    return " ".join(parts)


# -- show ----------------------------------------------------------------------------------


def properties(host: Host, unit: Unit) -> list[tuple[str, str]]:
    """`systemctl show` properties in systemd's own order (service, cgroup, then unit
    interface), whatever order `-p` asked for them in; Sim* ones are the simulation's."""
    limits = effective_limits(host, unit)
    container = container_of(unit.name)
    description = f"Container '{container}'" if container is not None else ""
    return [
        ("Result", unit.result),
        ("MainPID", str(unit.main_pid)),
        ("CPUQuotaPerSecUSec", format_timespan(limits.cpu_quota_usec)),
        ("MemoryMax", "infinity" if limits.memory_max is None else str(limits.memory_max)),
        ("Id", unit.name),
        ("Description", description),
        ("LoadState", str(load_state(unit.name))),
        ("ActiveState", str(unit.active)),
        ("SubState", SUB_STATE[unit.active]),
        ("DropInPaths", " ".join(limits.drop_in_paths)),
        ("NeedDaemonReload", "yes" if needs_daemon_reload(host, unit) else "no"),
        ("InvocationID", unit.invocation_id),
        ("SimSystem", unit.system),
        ("SimExtraNspawnFlags", unit.extra_nspawn_flags),
    ]
