"""The container's nspawn flags (`<conf_dir>/<c>.conf`) and resource-limit drop-in.

Both files are rewritten idempotently (a second write changes no byte, and an unchanged
file is not touched at all) and atomically.

Every bind source is checked (`verify_binds`, see safepath.py for the design) right
before the conf is written and before every start: a real directory, reached from the
state or runtime root without a symlink, below directories only root can write. None of
them lies inside a directory a container can write, so what systemd-nspawn opens later
is what was checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hivegen import fsutil, safepath
from hivegen.config import Config
from hivegen.errors import HivegenError
from hivegen.names import AgentSpec, Role
from hivegen.render import LEGACY_DROPINS, LIMITS_DROPIN, render_limits_dropin

RUNTIME_MOUNT = "/run/hive"
CREDENTIALS_MOUNT = "/root/.claude"
MANAGER_NOTES_MOUNT = "/state"
SHARED_MOUNT = "/shared"
MANAGER_AGENTS_MOUNT = "/agents"
MANAGER_APPLIED_MOUNT = "/applied"
MANAGER_META_MOUNT = "/meta"
MANAGER_NOTES_ROOT_MOUNT = "/notes"

# Lines hivegen owns in the conf; every other line is kept, in order. A non-empty
# address (or LOCAL_MAC_ADDRESS) makes the start script add --network-veth, which would
# hide the agent's web UI port from the host: the agents share the host's network
# namespace. The start script runs under `set -o nounset` and tests "$COPY_RESOLV_CONF",
# which `nixos-container create` never writes: without it the unit fails to start
# ("unbound variable"). Sharing the host's network, a container uses its resolvers.
OWNED_KEYS = (
    "EXTRA_NSPAWN_FLAGS",
    "PRIVATE_NETWORK",
    "HOST_ADDRESS",
    "LOCAL_ADDRESS",
    "HOST_ADDRESS6",
    "LOCAL_ADDRESS6",
    "HOST_BRIDGE",
    "LOCAL_MAC_ADDRESS",
    "COPY_RESOLV_CONF",
)
# Marks a drop-in written but not yet loaded by `systemctl daemon-reload` (an interrupted
# run must reload on its next try even though the file is unchanged by then).
RELOAD_PENDING = ".hivegen-reload-pending"


@dataclass(frozen=True, slots=True)
class Bind:
    # The source is `root/rel`: `root` is a trusted root (state or runtime root) and
    # `rel` is checked component by component, never following a symlink.
    root: Path
    rel: PurePosixPath
    target: str
    read_only: bool = False
    # Mode hivegen creates the source with; credentials are forced to it every time.
    mode: int = 0o755
    enforce_mode: bool = False

    @property
    def source(self) -> Path:
        return self.root.joinpath(*self.rel.parts)

    def flag(self) -> str:
        return f"--bind{'-ro' if self.read_only else ''}={self.source}:{self.target}"


def binds(config: Config, spec: AgentSpec) -> tuple[Bind, ...]:
    state = config.layout.root
    runtime_rel = config.runtime_dir(spec).relative_to(config.host.runtime_root)
    manager = spec.role is Role.MANAGER
    notes_mount = MANAGER_NOTES_MOUNT if manager else f"/agents/{spec.name}/state"
    result = [
        Bind(config.host.runtime_root, PurePosixPath(runtime_rel), RUNTIME_MOUNT),
        Bind(
            state,
            PurePosixPath("credentials", spec.name),
            CREDENTIALS_MOUNT,
            mode=0o700,
            enforce_mode=True,
        ),
        Bind(state, PurePosixPath("notes", spec.name), notes_mount),
        Bind(state, PurePosixPath("shared"), SHARED_MOUNT),
    ]
    if manager:
        # The manager edits every proposed repo (RW), reads what was applied and the
        # meta flake (RO), and reads every agent's notes (RO: writing them would let it
        # plant instructions in another agent's memory). Credentials live outside
        # agents/, so no bind exposes another agent's.
        result += [
            Bind(state, PurePosixPath("agents"), MANAGER_AGENTS_MOUNT),
            Bind(state, PurePosixPath("applied"), MANAGER_APPLIED_MOUNT, read_only=True),
            Bind(state, PurePosixPath("meta"), MANAGER_META_MOUNT, read_only=True),
            Bind(state, PurePosixPath("notes"), MANAGER_NOTES_ROOT_MOUNT, read_only=True),
        ]
    return tuple(result)


def verify_binds(config: Config, spec: AgentSpec, *, create: bool = False) -> None:
    """Raise `safepath.UnsafePath` unless every bind source is safe to hand to nspawn.

    With `create`, missing sources are made (credentials 0700, forced every time).
    """
    for bind in binds(config, spec):
        if create and bind.root == config.host.runtime_root:
            fsutil.ensure_dir(bind.root, 0o755)  # /run is emptied at every boot
        safepath.check_dir(
            bind.root,
            bind.rel,
            create_mode=bind.mode if create else None,
            enforce_mode=bind.enforce_mode,
        )


def extra_nspawn_flags(config: Config, spec: AgentSpec) -> str:
    return " ".join(bind.flag() for bind in binds(config, spec))


def rewrite_conf(original: str, flags: str) -> str:
    """The conf with hivegen's lines replaced; every other line kept in order."""
    kept = [
        line
        for line in original.splitlines()
        if line.lstrip().split("=", 1)[0] not in OWNED_KEYS or "=" not in line
    ]
    owned = [
        "PRIVATE_NETWORK=0",
        "HOST_ADDRESS=",
        "LOCAL_ADDRESS=",
        "HOST_ADDRESS6=",
        "LOCAL_ADDRESS6=",
        "HOST_BRIDGE=",
        "LOCAL_MAC_ADDRESS=",
        "COPY_RESOLV_CONF=1",
        f'EXTRA_NSPAWN_FLAGS="{flags}"',
    ]
    return "\n".join([*kept, *owned]) + "\n"


def conf_path(config: Config, container: str) -> Path:
    return config.host.containers_conf_dir / f"{container}.conf"


def is_declarative(path: Path) -> bool:
    """A conf NixOS generates (`containers.<name>` in configuration.nix): a link into
    /etc/static, not writable. hivegen never rewrites, starts or destroys such a one."""
    return path.is_symlink() or (path.exists() and not os.access(path, os.W_OK))


def refuse_declarative(path: Path, container: str) -> None:
    if is_declarative(path):
        raise HivegenError(
            f"container {container} is declarative ({path} is managed by NixOS): "
            "hivegen does not manage it",
            hint="choose another agent name, or remove containers."
            f"{container} from configuration.nix",
        )


def write_conf(config: Config, spec: AgentSpec) -> bool:
    """Rewrite the container's conf; True if it changed. The container must exist.

    Every bind source is checked first: an unsafe one leaves the conf untouched.
    """
    path = conf_path(config, spec.container)
    refuse_declarative(path, spec.container)
    verify_binds(config, spec)
    try:
        original = path.read_text()
    except FileNotFoundError:
        raise HivegenError(
            f"{path} does not exist: container {spec.container} was not created",
            hint=f"hivegen spawn {spec.name}",
        ) from None
    return fsutil.write_atomic(path, rewrite_conf(original, extra_nspawn_flags(config, spec)))


def dropin_dir(config: Config, container: str) -> Path:
    return config.host.systemd_dir / f"container@{container}.service.d"


def write_dropin(config: Config, spec: AgentSpec) -> bool:
    """Write the limits drop-in; True when systemd must reload (changed, or pending)."""
    directory = dropin_dir(config, spec.container)
    text = render_limits_dropin(config.limits_for(spec.name))
    pending = directory / RELOAD_PENDING
    current = directory / LIMITS_DROPIN
    legacy = _legacy_dropins(config, spec.container)
    if current.is_file() and not pending.exists() and not legacy and current.read_text() == text:
        return False
    fsutil.write_atomic(pending, "")
    fsutil.write_atomic(directory / LIMITS_DROPIN, text)
    for path in legacy:
        path.unlink()
    return True


def _legacy_dropins(config: Config, container: str) -> list[Path]:
    directory = dropin_dir(config, container)
    return [directory / name for name in LEGACY_DROPINS if (directory / name).exists()]


def has_legacy_dropin(config: Config, container: str) -> bool:
    return bool(_legacy_dropins(config, container))


# Where else systemd looks for a container unit's drop-ins (systemd.unit(5)), highest
# precedence first; hivegen's own dir (`[host] systemd_dir`) comes before all of them.
NATIVE_DROPIN_ROOTS = (
    Path("/run/systemd/system.control"),
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
)
_LIMIT_KEYS = ("MemoryMax", "CPUQuota")


def overriding_dropins(roots: tuple[Path, ...], container: str) -> list[Path]:
    """Drop-ins of other programs (the reference left one in /run/systemd/system) that set
    a limit and sort after hivegen's, so that theirs wins; a same-named one is masked by
    hivegen's and harmless. Read-only: hivegen never removes another program's files."""
    found = []
    for root in roots:
        for unit_dir in (f"container@{container}.service.d", "container@.service.d"):
            directory = root / unit_dir
            try:
                entries = sorted(directory.iterdir())
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            for path in entries:
                if not path.name.endswith(".conf") or path.name <= LIMITS_DROPIN:
                    continue
                try:
                    text = path.read_text(errors="replace")
                except OSError:
                    continue
                if any(line.strip().startswith(_LIMIT_KEYS) for line in text.splitlines()):
                    found.append(path)
    return found


def remove_dropin(config: Config, container: str) -> bool:
    """Remove hivegen's drop-in; True when systemd must reload."""
    directory = dropin_dir(config, container)
    if not directory.exists():
        return False
    fsutil.write_atomic(directory / RELOAD_PENDING, "")
    for name in (LIMITS_DROPIN, *LEGACY_DROPINS):
        (directory / name).unlink(missing_ok=True)
    return True


def reloaded(config: Config, container: str) -> None:
    """After a successful daemon-reload: clear the pending mark (and an emptied dir)."""
    directory = dropin_dir(config, container)
    (directory / RELOAD_PENDING).unlink(missing_ok=True)
    if directory.is_dir() and not any(directory.iterdir()):
        import shutil

        shutil.rmtree(directory)


def reload_pending(config: Config, container: str) -> bool:
    return (dropin_dir(config, container) / RELOAD_PENDING).exists()
