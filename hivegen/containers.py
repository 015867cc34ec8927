"""nixos-container and systemctl, as on a NixOS host (or the simulated one).

Long commands stream their stderr line by line to the `on_output` callback, prefixed
`[<container>] `, so the operator sees nix build progress as it happens; a failure
raises CommandError with the command, its status and the last 32 stderr lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from hivegen import fsutil
from hivegen.config import Config, HostRuntime

if TYPE_CHECKING:
    from hivegen import process

NIXOS_CONTAINER = "nixos-container"
NATIVE_PROFILES = Path("/nix/var/nix/profiles/per-container")
SYSTEMCTL = "systemctl"
SHOW_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "Result", "MainPID")


class ActiveState(StrEnum):
    ACTIVE = "active"
    RELOADING = "reloading"
    INACTIVE = "inactive"
    FAILED = "failed"
    ACTIVATING = "activating"
    DEACTIVATING = "deactivating"
    MAINTENANCE = "maintenance"
    REFRESHING = "refreshing"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class UnitState:
    unit: str
    active: ActiveState
    sub: str
    main_pid: int
    result: str = ""
    load: str = ""

    @property
    def running(self) -> bool:
        return self.active in (ActiveState.ACTIVE, ActiveState.RELOADING)

    @property
    def settled(self) -> bool:
        """Neither running nor on its way: inactive, or failed. Anything else (starting,
        waiting to restart by itself after a crash, stopping) still needs a stop."""
        return self.active in (ActiveState.INACTIVE, ActiveState.FAILED)

    @property
    def auto_restarting(self) -> bool:
        # container@.service has Restart=on-failure: a crash brings it back by itself.
        return self.active is ActiveState.ACTIVATING and self.sub == "auto-restart"

    @property
    def hit_start_limit(self) -> bool:
        return self.active is ActiveState.FAILED and self.result == "start-limit-hit"


FLAKES = "extra-experimental-features = nix-command flakes"


def nix_config_with_flakes(current: str | None) -> str:
    """The caller's NIX_CONFIG with flakes enabled (appended: every other line kept)."""
    return f"{current}\n{FLAKES}" if current else FLAKES


def unit_name(container: str) -> str:
    return f"container@{container}.service"


def parse_show(text: str) -> list[dict[str, str]]:
    """`systemctl show` output: one block of KEY=VALUE lines per unit, blank-separated."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    if current:
        blocks.append(current)
    return blocks


class Host:
    """The host's containers and units. What it reads from files (confs, profiles)
    needs no process: the tools' environment (on the simulated host, its tools
    installed first) and the process gateway are made on the first command it runs."""

    def __init__(self, config: Config, on_output: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.on_output = on_output

    @cached_property
    def env(self) -> Mapping[str, str | None]:
        """The environment of every command it runs."""
        from hivegen.git import CHILD_GIT_ENV

        # nixos-container builds with nix, whose git fetcher runs git in the applied repos,
        # and runs plain `nix build <flake>#…`: flakes must be enabled for it even on a
        # host whose nix.conf does not (NIX_CONFIG adds to nix.conf, it replaces nothing).
        base = {**CHILD_GIT_ENV, "NIX_CONFIG": nix_config_with_flakes(os.environ.get("NIX_CONFIG"))}
        match self.config.host.runtime:
            case HostRuntime.NATIVE:
                return base
            case HostRuntime.SIMULATED:
                from hivegen import simhost

                root = self.config.host.simulated_root
                bin_dir = simhost.install(root)
                env = simhost.environment(
                    root, self.config.host.containers_conf_dir, self.config.host.systemd_dir
                )
                env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
                # Where its containers' web ports listen: where health checks look.
                env["HIVEGEN_SIMHOST_LISTEN"] = self.config.health.address
                return {**base, **env}

    def _run(
        self, argv: list[str], container: str | None = None, check: bool = True
    ) -> process.CmdOut:
        from hivegen import nix, process

        sink = None
        if container is not None and self.on_output is not None:
            on_output = self.on_output
            prefix = f"[{container}] "

            def sink(line: str) -> None:
                on_output(prefix + line)

        # nixos-container builds with `nix build -o .tmp` in its working directory: run
        # it from a private one, never from wherever the operator happens to be.
        work = self.config.layout.root / ".hivegen-work"
        fsutil.ensure_dir(work, 0o700)
        return process.run(
            argv,
            # nixos-container's stderr is nix's too: its noise goes (an approve builds
            # with the meta flake's lock staged, a dirty tree).
            process.RunOpts(
                cwd=work, env=self.env, on_stderr_line=sink, check=check, is_noise=nix.is_noise
            ),
        )

    # -- nixos-container ----------------------------------------------------------------

    def create(self, container: str, flake_ref: str) -> None:
        self._run([NIXOS_CONTAINER, "create", container, "--flake", flake_ref], container)

    def update(self, container: str, flake_ref: str) -> None:
        self._run([NIXOS_CONTAINER, "update", container, "--flake", flake_ref], container)

    def start(self, container: str) -> None:
        self._run([NIXOS_CONTAINER, "start", container], container)

    def stop(self, container: str) -> None:
        self._run([NIXOS_CONTAINER, "stop", container], container)

    def destroy(self, container: str) -> None:
        # nixos-container exits 0 for an unknown container: every failure is real.
        self._run([NIXOS_CONTAINER, "destroy", container], container)

    def list_containers(self) -> list[str]:
        out = self._run([NIXOS_CONTAINER, "list"])
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def conf_names(self) -> list[str]:
        """Containers that have a conf, read from the conf dir itself (no process)."""
        try:
            entries = list(self.config.host.containers_conf_dir.iterdir())
        except FileNotFoundError:
            return []
        return sorted(p.name[: -len(".conf")] for p in entries if p.name.endswith(".conf"))

    def profile(self, container: str) -> Path:
        """The profile nixos-container sets, whose target is the container's system."""
        match self.config.host.runtime:
            case HostRuntime.NATIVE:
                base = NATIVE_PROFILES
            case HostRuntime.SIMULATED:
                base = self.config.host.simulated_root / "profiles" / "per-container"
        return base / container / "system"

    def system(self, container: str) -> Path | None:
        """The system the container's profile points at now (what it boots), or None."""
        try:
            return self.profile(container).resolve(strict=True)
        except (FileNotFoundError, RuntimeError):
            return None

    def other_dropin_roots(self) -> tuple[Path, ...]:
        """Unit directories besides hivegen's where a drop-in could override its limits."""
        match self.config.host.runtime:
            case HostRuntime.NATIVE:
                from hivegen.nspawn import NATIVE_DROPIN_ROOTS

                return NATIVE_DROPIN_ROOTS
            case HostRuntime.SIMULATED:
                return (self.config.host.simulated_root / "run" / "systemd" / "system",)

    def set_system(self, container: str, system: Path) -> None:
        """Point the container's profile at `system` (a store path built before), as
        `nixos-container update` does after its build: the way back to a system that
        ran, with no evaluation and no build."""
        self._run(["nix-env", "-p", str(self.profile(container)), "--set", str(system)], container)

    def has_profile(self, container: str) -> bool:
        # A dangling link (its system garbage-collected) cannot boot either.
        return self.profile(container).exists()

    def conf_exists(self, container: str) -> bool:
        return (self.config.host.containers_conf_dir / f"{container}.conf").is_file()

    # -- systemctl ----------------------------------------------------------------------

    def reload(self, container: str) -> None:
        """`systemctl reload container@<c>`: a running container switches to the system
        its profile points at (as the end of `nixos-container update`)."""
        self._run([SYSTEMCTL, "reload", unit_name(container)], container)

    def daemon_reload(self) -> None:
        self._run([SYSTEMCTL, "daemon-reload"])

    def unit_states(self, containers: Iterable[str]) -> dict[str, UnitState]:
        """State of every container's unit in one `systemctl show` call."""
        wanted = list(dict.fromkeys(containers))
        if not wanted:
            return {}
        argv = [
            SYSTEMCTL,
            "show",
            f"--property={','.join(SHOW_PROPERTIES)}",
            *(unit_name(c) for c in wanted),
        ]
        blocks = parse_show(self._run(argv).stdout)
        by_unit = {block.get("Id", ""): block for block in blocks}
        states = {}
        for container in wanted:
            block = by_unit.get(unit_name(container), {})
            try:
                active = ActiveState(block.get("ActiveState", "unknown"))
            except ValueError:
                active = ActiveState.UNKNOWN
            pid = block.get("MainPID", "0")
            states[container] = UnitState(
                unit=unit_name(container),
                active=active,
                sub=block.get("SubState", ""),
                main_pid=int(pid) if pid.isdigit() else 0,
                result=block.get("Result", ""),
                load=block.get("LoadState", ""),
            )
        return states

    def reset_failed(self, container: str) -> None:
        """Clear a failed state and the start limit's counter ("start request repeated
        too quickly"): an operator's start is deliberate, whatever happened before."""
        self._run([SYSTEMCTL, "reset-failed", unit_name(container)])

    def unit_state(self, container: str) -> UnitState:
        return self.unit_states([container])[container]

    def flake_ref(self, agent: str) -> str:
        return f"{self.config.layout.meta}#{agent}"
