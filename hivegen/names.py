"""Agent names, container names and ports: the hive's naming rules in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from hivegen.errors import InvalidNameError

AGENT_PREFIX = "h-"
MAX_AGENT_NAME = 9
# nixos-container encodes the container name into network interface names.
MAX_CONTAINER_NAME = 11
DEFAULT_MANAGER = "hm1nd"
DEFAULT_MANAGER_PORT = 8000
WEB_PORT_BASE = 8100
WEB_PORT_RANGE = 900

AGENT_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,8}\Z")
MANAGER_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,10}\Z")

AGENT_RULE = (
    "an agent name is 1 to 9 characters: a lowercase letter, then lowercase letters, digits or '-'"
)
MANAGER_RULE = (
    "the manager name is 1 to 11 characters: a lowercase letter, then lowercase letters, "
    f"digits or '-', and must not start with {AGENT_PREFIX!r}"
)


class Role(StrEnum):
    AGENT = "agent"
    MANAGER = "manager"


def _shown(name: str) -> str:
    # repr() makes newlines, spaces and look-alike characters visible in the message.
    return repr(name)


def validate_manager_name(name: str) -> str:
    if not MANAGER_NAME_RE.match(name) or name.startswith(AGENT_PREFIX):
        raise InvalidNameError(f"invalid manager name {_shown(name)}: {MANAGER_RULE}")
    return name


def validate_agent_name(name: str, manager: str = DEFAULT_MANAGER) -> str:
    """Return `name` if it names the manager or a valid sub-agent; raise otherwise."""
    if name == manager:
        return name
    if not AGENT_NAME_RE.match(name):
        raise InvalidNameError(
            f"invalid agent name {_shown(name)}: {AGENT_RULE}",
            hint=f"or {manager!r}, the manager",
        )
    return name


def fnv1a_32(data: bytes) -> int:
    value = 2_166_136_261
    for byte in data:
        value ^= byte
        value = (value * 16_777_619) & 0xFFFFFFFF
    return value


def agent_port(
    name: str, manager: str = DEFAULT_MANAGER, manager_port: int = DEFAULT_MANAGER_PORT
) -> int:
    """Web UI port: fixed for the manager, FNV-1a of the name for sub-agents (as hive-c0re)."""
    if name == manager:
        return manager_port
    return WEB_PORT_BASE + fnv1a_32(name.encode()) % WEB_PORT_RANGE


def container_name(name: str, manager: str = DEFAULT_MANAGER) -> str:
    return name if name == manager else f"{AGENT_PREFIX}{name}"


def role_of(name: str, manager: str = DEFAULT_MANAGER) -> Role:
    return Role.MANAGER if name == manager else Role.AGENT


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """One agent as the meta flake and the lifecycle see it."""

    name: str
    role: Role
    port: int
    container: str

    @classmethod
    def of(
        cls, name: str, manager: str = DEFAULT_MANAGER, manager_port: int = DEFAULT_MANAGER_PORT
    ) -> AgentSpec:
        validate_agent_name(name, manager)
        return cls(
            name=name,
            role=role_of(name, manager),
            port=agent_port(name, manager, manager_port),
            container=container_name(name, manager),
        )
