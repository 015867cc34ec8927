"""`hive.toml` → frozen dataclasses, with errors that name the file, table and key."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from hivegen import names
from hivegen.errors import ConfigError, HivegenError
from hivegen.layout import Layout
from hivegen.nixlang import check_nix_string

DEFAULT_CONFIG_PATH = Path("/etc/hivegen/hive.toml")
CONFIG_ENV = "HIVEGEN_CONFIG"

# Paths reach the unquoted EXTRA_NSPAWN_FLAGS (split on spaces, ':' separates a bind's
# source from its target) and git+file URLs: only characters that survive all of them.
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+/-]*\Z")
PATH_RULE = "an absolute path of letters, digits and . _ + - / (no spaces, ':' or '..')"
# systemd MemoryMax=: bytes with an optional K/M/G/T suffix, a percentage, or infinity.
_MEMORY = re.compile(r"(?:[1-9][0-9]{0,17}[KMGT]?|(?:[1-9][0-9]?|100)%|infinity)\Z")
MEMORY_RULE = "a size like 512M, 2G or 1073741824, a percentage like 50%, or 'infinity'"
# systemd CPUQuota=: a positive percentage, above 100% for more than one CPU.
_CPU = re.compile(r"[1-9][0-9]{0,5}%\Z")
CPU_RULE = "a positive percentage like 50% or 200%"


@dataclass(frozen=True, slots=True)
class Limits:
    memory_max: str = "2G"
    cpu_quota: str = "50%"


@dataclass(frozen=True, slots=True)
class LimitOverrides:
    memory_max: str | None = None
    cpu_quota: str | None = None

    def over(self, base: Limits) -> Limits:
        return Limits(
            memory_max=self.memory_max or base.memory_max,
            cpu_quota=self.cpu_quota or base.cpu_quota,
        )


@dataclass(frozen=True, slots=True)
class Health:
    """When a started agent counts as up (health.py): its unit active for `settle`
    seconds, and its web port accepting a TCP connection at `address` within
    `port_timeout` seconds (0: the port is not checked)."""

    settle: float = 3.0
    port_timeout: float = 60.0
    address: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class HealthOverrides:
    settle: float | None = None
    port_timeout: float | None = None

    def over(self, base: Health) -> Health:
        return Health(
            settle=base.settle if self.settle is None else self.settle,
            port_timeout=base.port_timeout if self.port_timeout is None else self.port_timeout,
            address=base.address,
        )


@dataclass(frozen=True, slots=True)
class HiveSettings:
    state_root: Path = Path("/var/lib/hyperhive")
    hyperhive_flake: str = "git+https://example.org/hyperhive"
    manager: str = names.DEFAULT_MANAGER
    manager_port: int = names.DEFAULT_MANAGER_PORT
    dashboard_port: int = 7000
    operator_pronouns: str = "they/them"
    committer_name: str = "c0re"
    committer_email: str = "c0re@hyperhive"


class HostRuntime(StrEnum):
    # A NixOS host: the real nixos-container and systemctl.
    NATIVE = "native"
    # hivegen's simulated host (hivegen/simhost) first on its children's PATH: for
    # machines without NixOS, the demo and the tests. Nothing else differs.
    SIMULATED = "simulated"


@dataclass(frozen=True, slots=True)
class HostSettings:
    containers_conf_dir: Path = Path("/etc/nixos-containers")
    systemd_dir: Path = Path("/etc/systemd/system.control")
    runtime_root: Path = Path("/run/hyperhive")
    runtime: HostRuntime = HostRuntime.NATIVE
    # Private state of the simulated host (only read when runtime = "simulated").
    simulated_root: Path = Path("/var/lib/hivegen-simhost")


def _no_overrides() -> Mapping[str, LimitOverrides]:
    return MappingProxyType({})


def _no_health_overrides() -> Mapping[str, HealthOverrides]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Config:
    hive: HiveSettings = field(default_factory=HiveSettings)
    host: HostSettings = field(default_factory=HostSettings)
    limits: Limits = field(default_factory=Limits)
    agent_limits: Mapping[str, LimitOverrides] = field(default_factory=_no_overrides)
    health: Health = field(default_factory=Health)
    agent_health: Mapping[str, HealthOverrides] = field(default_factory=_no_health_overrides)
    # Where it was read from; None when built from defaults alone.
    source: Path | None = None

    def limits_for(self, agent: str) -> Limits:
        override = self.agent_limits.get(agent)
        return override.over(self.limits) if override else self.limits

    def health_for(self, agent: str) -> Health:
        override = self.agent_health.get(agent)
        return override.over(self.health) if override else self.health

    @property
    def layout(self) -> Layout:
        return Layout(self.hive.state_root)

    def agent(self, name: str) -> names.AgentSpec:
        return names.AgentSpec.of(name, self.hive.manager, self.hive.manager_port)

    def runtime_dir(self, spec: names.AgentSpec) -> Path:
        """Per-agent runtime dir, bound at /run/hive (lost at reboot: recreated on start)."""
        if spec.role is names.Role.MANAGER:
            return self.host.runtime_root / "manager"
        return self.host.runtime_root / "agents" / spec.name


def resolve_config_path(explicit: Path | None) -> tuple[Path, bool]:
    """The file to read and whether it must exist (an explicit choice must)."""
    if explicit is not None:
        return explicit, True
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env), True
    return DEFAULT_CONFIG_PATH, False


def load_config(explicit: Path | None = None) -> Config:
    path, required = resolve_config_path(explicit)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return Config()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_config(raw, path)


def parse_config(raw: bytes, path: Path) -> Config:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return _Reader(path).config(data)


T = TypeVar("T")


class _Reader:
    """Walks the parsed TOML, checking every key; errors say file, table and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(
        self, table: str, key: str | None, problem: str, hint: str | None = None
    ) -> ConfigError:
        where = f"[{table}]" if table else "top level"
        if key is not None:
            where += f" {key}"
        return ConfigError(f"{self.path}: {where}: {problem}", hint=hint)

    def table(self, data: Mapping[str, Any], table: str, key: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(table, key, f"must be a table, not {_toml_type(value)}")
        return value

    def no_unknown(self, data: Mapping[str, Any], table: str, known: set[str]) -> None:
        for key in data:
            if key not in known:
                allowed = ", ".join(sorted(known))
                raise self.fail(table, key, "unknown key", hint=f"known keys here: {allowed}")

    def get(
        self, data: Mapping[str, Any], table: str, key: str, default: T, check: Callable[[Any], T]
    ) -> T:
        if key not in data:
            return default
        try:
            return check(data[key])
        except HivegenError as exc:
            raise self.fail(table, key, exc.message, exc.hint) from None
        except _Invalid as exc:
            raise self.fail(table, key, str(exc)) from None

    def config(self, data: Mapping[str, Any]) -> Config:
        self.no_unknown(data, "", {"hive", "host", "limits", "health", "agents"})
        hive = self.hive(self.table(data, "", "hive"))
        host = self.host(self.table(data, "", "host"))
        limits_table = self.table(data, "", "limits")
        self.no_unknown(limits_table, "limits", {"memory_max", "cpu_quota"})
        defaults = Limits()
        limits = Limits(
            memory_max=self.get(limits_table, "limits", "memory_max", defaults.memory_max, _memory),
            cpu_quota=self.get(limits_table, "limits", "cpu_quota", defaults.cpu_quota, _cpu),
        )
        health = self.health(self.table(data, "", "health"))
        agents = self.table(data, "", "agents")
        overrides: dict[str, LimitOverrides] = {}
        health_overrides: dict[str, HealthOverrides] = {}
        for name in sorted(agents):
            try:
                names.validate_agent_name(name, hive.manager)
            except HivegenError as exc:
                raise self.fail("agents", name, exc.message) from None
            table = f"agents.{name}"
            entry = self.table(agents, "agents", name)
            self.no_unknown(entry, table, AGENT_KEYS)
            overrides[name] = LimitOverrides(
                memory_max=self.get(entry, table, "memory_max", None, _memory),
                cpu_quota=self.get(entry, table, "cpu_quota", None, _cpu),
            )
            health_overrides[name] = HealthOverrides(
                settle=self.get(entry, table, "health_settle", None, _seconds),
                port_timeout=self.get(entry, table, "health_port_timeout", None, _seconds),
            )
        return Config(
            hive=hive,
            host=host,
            limits=limits,
            agent_limits=MappingProxyType(overrides),
            health=health,
            agent_health=MappingProxyType(health_overrides),
            source=self.path,
        )

    def health(self, data: Mapping[str, Any]) -> Health:
        d = Health()
        self.no_unknown(data, "health", set(Health.__dataclass_fields__))
        return Health(
            settle=self.get(data, "health", "settle", d.settle, _seconds),
            port_timeout=self.get(data, "health", "port_timeout", d.port_timeout, _seconds),
            address=self.get(data, "health", "address", d.address, _ip_address),
        )

    def hive(self, data: Mapping[str, Any]) -> HiveSettings:
        d = HiveSettings()
        self.no_unknown(data, "hive", set(HiveSettings.__dataclass_fields__))
        return HiveSettings(
            state_root=self.get(data, "hive", "state_root", d.state_root, _safe_path),
            hyperhive_flake=self.get(
                data, "hive", "hyperhive_flake", d.hyperhive_flake, _flake_ref
            ),
            manager=self.get(data, "hive", "manager", d.manager, _manager_name),
            manager_port=self.get(data, "hive", "manager_port", d.manager_port, _port),
            dashboard_port=self.get(data, "hive", "dashboard_port", d.dashboard_port, _port),
            operator_pronouns=self.get(
                data, "hive", "operator_pronouns", d.operator_pronouns, _nix_text
            ),
            committer_name=self.get(
                data, "hive", "committer_name", d.committer_name, _committer_name
            ),
            committer_email=self.get(data, "hive", "committer_email", d.committer_email, _email),
        )

    def host(self, data: Mapping[str, Any]) -> HostSettings:
        d = HostSettings()
        self.no_unknown(data, "host", set(HostSettings.__dataclass_fields__))
        return HostSettings(
            containers_conf_dir=self.get(
                data, "host", "containers_conf_dir", d.containers_conf_dir, _safe_path
            ),
            systemd_dir=self.get(data, "host", "systemd_dir", d.systemd_dir, _safe_path),
            runtime_root=self.get(data, "host", "runtime_root", d.runtime_root, _safe_path),
            runtime=self.get(data, "host", "runtime", d.runtime, _runtime),
            simulated_root=self.get(data, "host", "simulated_root", d.simulated_root, _safe_path),
        )


AGENT_KEYS = {"memory_max", "cpu_quota", "health_settle", "health_port_timeout"}
# A health wait longer than this is a mistake (a unit that takes more is not healthy).
MAX_HEALTH_SECONDS = 3600


class _Invalid(Exception):
    """A value check failed; the reader adds file, table and key."""


def _toml_type(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a float"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "a table"
        case _:
            return f"a {type(value).__name__}"


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, not {_toml_type(value)}")
    return value


def _nix_text(value: object) -> str:
    text = _string(value)
    check_nix_string(text)
    return text


def _safe_path(value: object) -> Path:
    text = _string(value)
    parts = text.split("/")
    if not _SAFE_PATH.match(text) or ".." in parts or "." in parts:
        raise _Invalid(f"{text!r} is not allowed: must be {PATH_RULE}")
    normalized = "/" + "/".join(p for p in parts if p)
    return Path(normalized)


def _flake_ref(value: object) -> str:
    text = _nix_text(value)
    if not text or text.startswith("-") or any(c.isspace() for c in text):
        raise _Invalid(f"{text!r} is not a flake reference (no spaces, must not start with '-')")
    return text


def _runtime(value: object) -> HostRuntime:
    text = _string(value)
    try:
        return HostRuntime(text)
    except ValueError:
        allowed = " or ".join(repr(r.value) for r in HostRuntime)
        raise _Invalid(f"{text!r} is not a host runtime: must be {allowed}") from None


def _manager_name(value: object) -> str:
    return names.validate_manager_name(_string(value))


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"must be an integer, not {_toml_type(value)}")
    if not 1 <= value <= 65535:
        raise _Invalid(f"port {value} is out of range 1-65535")
    return value


def _committer_name(value: object) -> str:
    text = _nix_text(value)
    if not text.strip() or "<" in text or ">" in text:
        raise _Invalid(f"{text!r} is not a usable git name (non-empty, no '<' or '>')")
    return text


def _email(value: object) -> str:
    text = _nix_text(value)
    if not text or any(c.isspace() or c in "<>" for c in text):
        raise _Invalid(f"{text!r} is not a usable git email (no spaces, '<' or '>')")
    return text


def _memory(value: object) -> str:
    text = _string(value)
    if not _MEMORY.match(text):
        raise _Invalid(f"{text!r} is not a memory limit: must be {MEMORY_RULE}")
    return text


def _cpu(value: object) -> str:
    text = _string(value)
    if not _CPU.match(text):
        raise _Invalid(f"{text!r} is not a CPU quota: must be {CPU_RULE}")
    return text


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"must be a number of seconds, not {_toml_type(value)}")
    if not 0 <= value <= MAX_HEALTH_SECONDS:
        raise _Invalid(f"{value} is out of range 0-{MAX_HEALTH_SECONDS} seconds")
    return float(value)


def _ip_address(value: object) -> str:
    import ipaddress

    text = _string(value)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _Invalid(f"{text!r} is not an IP address (like 127.0.0.1 or ::1)") from None
