"""Did a started (or switched) agent come up? Its unit stays active, and its web port
answers.

An agent counts as up when:
- its container's unit is active now and still is, with the same main process, after
  `settle` seconds: a crash in between shows as another MainPID, or as a unit that is no
  longer active (systemd's Restart=on-failure may already be bringing it back);
- its web port (the agent's HIVE_PORT) accepts a TCP connection at `address` within
  `port_timeout` seconds; 0 skips this.
Both come from hive.toml's [health] and, per agent, [agents.<n>] health_settle and
health_port_timeout. Two `systemctl show` calls whatever the settle time.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hivegen.containers import UnitState
from hivegen.names import AgentSpec

if TYPE_CHECKING:
    from hivegen.hive import Hive

# Between connection attempts to the web port.
PORT_RETRY = 0.25


@dataclass(frozen=True, slots=True)
class Verdict:
    healthy: bool
    # Why not, in words for a failed/<id> tag and the operator ("" when healthy).
    reason: str = ""
    elapsed: float = 0.0


class HealthCheck:
    def __init__(
        self,
        hive: Hive,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hive = hive
        self.sleep = sleep
        self.clock = clock

    def check(self, spec: AgentSpec) -> Verdict:
        health = self.hive.config.health_for(spec.name)
        host = self.hive.host
        started = self.clock()
        first = host.unit_state(spec.container)
        if not first.running:
            return self._bad(started, f"{spec.container} is not running ({_state(first)})")
        if health.settle > 0:
            self.sleep(health.settle)
            now = host.unit_state(spec.container)
            if not now.running:
                return self._bad(
                    started,
                    f"{spec.container} stopped within {health.settle:g}s of its start "
                    f"({_state(now)})",
                )
            if now.main_pid != first.main_pid:
                return self._bad(
                    started,
                    f"{spec.container} restarted within {health.settle:g}s of its start "
                    f"(main process {first.main_pid}, then {now.main_pid})",
                )
        if health.port_timeout > 0 and spec.port:
            problem = self._port(health.address, spec.port, health.port_timeout)
            if problem:
                return self._bad(started, problem)
        return Verdict(True, elapsed=self.clock() - started)

    def _port(self, address: str, port: int, timeout: float) -> str:
        deadline = self.clock() + timeout
        while True:
            try:
                with socket.create_connection((address, port), timeout=min(1.0, timeout)):
                    return ""
            except OSError as exc:
                error = exc.strerror or str(exc)
            if self.clock() >= deadline:
                shown = f"[{address}]" if ":" in address else address
                return (
                    f"its web port {shown}:{port} accepted no connection within "
                    f"{timeout:g}s ({error})"
                )
            self.sleep(PORT_RETRY)

    def _bad(self, started: float, reason: str) -> Verdict:
        return Verdict(False, reason, self.clock() - started)


def _state(unit: UnitState) -> str:
    return f"{unit.active}/{unit.sub}" if unit.sub else str(unit.active)
