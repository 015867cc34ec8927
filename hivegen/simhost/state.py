"""Where the simulated host keeps its state, and the helpers both tools share.

The environment names the three places a NixOS host spreads this over:

- `HIVEGEN_SIMHOST_ROOT` (required): the machine's private state. Under it:
  `containers/<c>/` plays /var/lib/nixos-containers/<c>, `profiles/per-container/<c>/`
  plays /nix/var/nix/profiles/per-container/<c>/ (nix-env generation links included),
  `gcroots/<c>` is the build's out-link (the real profile dir is a GC root, ours is not),
  `systemd/units/<unit>.json` is systemd's memory of each unit, `systemd/journal/<unit>`
  says why a start failed, and `log` gets one line per simulated command. A container's
  own journal is `containers/<c>/var/log/journal/simulated.journal` (journalctl.py).
- `HIVEGEN_SIMHOST_CONF_DIR`: plays /etc/nixos-containers (default `ROOT/etc/nixos-containers`).
- `HIVEGEN_SIMHOST_SYSTEMD_DIR`: plays /etc/systemd/system.control, where drop-ins live
  (default `ROOT/etc/systemd/system.control`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ENV_ROOT = "HIVEGEN_SIMHOST_ROOT"
ENV_CONF_DIR = "HIVEGEN_SIMHOST_CONF_DIR"
ENV_SYSTEMD_DIR = "HIVEGEN_SIMHOST_SYSTEMD_DIR"

PROFILE_NAME = "system"
_GENERATION = re.compile(rf"^{PROFILE_NAME}-(\d+)-link$")


class SimhostError(Exception):
    """The simulated host itself is misconfigured (not a simulated command's failure)."""


@dataclass(frozen=True, slots=True)
class Host:
    root: Path
    conf_dir: Path
    systemd_dir: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Host:
        root = environ.get(ENV_ROOT, "")
        if not root:
            raise SimhostError(
                f"{ENV_ROOT} is not set: this is hivegen's simulated host, and it needs "
                "a state directory (hivegen sets it when host.runtime is simulated)"
            )
        base = Path(root).absolute()
        conf_dir = environ.get(ENV_CONF_DIR) or str(base / "etc" / "nixos-containers")
        systemd_dir = environ.get(ENV_SYSTEMD_DIR) or str(
            base / "etc" / "systemd" / "system.control"
        )
        return cls(base, Path(conf_dir).absolute(), Path(systemd_dir).absolute())

    @property
    def containers_dir(self) -> Path:
        return self.root / "containers"

    @property
    def profiles_dir(self) -> Path:
        return self.root / "profiles" / "per-container"

    @property
    def gcroots_dir(self) -> Path:
        return self.root / "gcroots"

    @property
    def units_dir(self) -> Path:
        return self.root / "systemd" / "units"

    @property
    def journal_dir(self) -> Path:
        return self.root / "systemd" / "journal"

    @property
    def pid_counter(self) -> Path:
        return self.root / "systemd" / "last-pid"

    @property
    def log_path(self) -> Path:
        return self.root / "log"

    @property
    def lock_path(self) -> Path:
        # systemd's state: every read-modify-write of a unit holds it.
        return self.root / "lock"

    @property
    def create_lock_path(self) -> Path:
        # Plays /run/lock/nixos-container: `create` picks a name and addresses under it.
        return self.root / "nixos-container.lock"

    def conf(self, container: str) -> Path:
        return self.conf_dir / f"{container}.conf"

    def container_root(self, container: str) -> Path:
        return self.containers_dir / container

    def profile_dir(self, container: str) -> Path:
        return self.profiles_dir / container

    def profile(self, container: str) -> Path:
        return self.profile_dir(container) / PROFILE_NAME

    def gcroot(self, container: str) -> Path:
        return self.gcroots_dir / container

    def unit_file(self, unit: str) -> Path:
        return self.units_dir / f"{unit}.json"

    def dropin_dir(self, unit: str) -> Path:
        return self.systemd_dir / f"{unit}.d"

    def run_dropin_dir(self, unit: str) -> Path:
        """The unit's drop-ins in the simulated /run/systemd/system (lower precedence)."""
        return self.root / "run" / "systemd" / "system" / f"{unit}.d"

    def journal(self, unit: str) -> Path:
        return self.journal_dir / unit

    def container_journal(self, container: str) -> Path:
        """Plays the container's /var/log/journal: what it logs, inside its own root."""
        return self.container_root(container) / "var" / "log" / "journal" / "simulated.journal"


def log_command(host: Host, argv: Sequence[str]) -> None:
    """Append this command's argv to `ROOT/log` as one shell-quoted line.

    One write(2) on an O_APPEND descriptor: concurrent commands never interleave lines.
    """
    host.root.mkdir(parents=True, exist_ok=True)
    line = shlex.join([Path(argv[0]).name, *argv[1:]]) + "\n"
    append_line(host.log_path, line)


def append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def parse_env_file(text: str) -> dict[str, str]:
    """A conf read as systemd reads an EnvironmentFile: KEY=VALUE, quotes, comments.

    Double-quoted values keep backslash escapes of `"`, `\\`, `$` and a backslash-newline
    continuation; single-quoted ones are literal; unquoted ones are stripped.
    """
    result: dict[str, str] = {}
    for raw in _logical_lines(text):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        result[key] = _unquote(value.strip())
    return result


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending += line[:-1]
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\([\"\\$`])", r"\1", value[1:-1])
    return value


# -- nix-env profiles ----------------------------------------------------------------------


def set_profile(profile_dir: Path, store_path: str) -> None:
    """Point `<profile_dir>/system` at `store_path` as `nix-env -p … --set` does.

    A new `system-<N>-link` generation is made only when the path differs from the
    newest one; `system` then points at it (relative), each link swapped in atomically.
    """
    profile_dir.mkdir(parents=True, exist_ok=True)
    generations = _generations(profile_dir)
    if generations and str((profile_dir / _link_name(generations[-1])).readlink()) == store_path:
        number = generations[-1]
    else:
        number = (generations[-1] if generations else 0) + 1
        _symlink_atomic(profile_dir / _link_name(number), store_path)
    _symlink_atomic(profile_dir / PROFILE_NAME, _link_name(number))


def profile_target(profile: Path) -> Path | None:
    """The store path a profile resolves to, or None if it is missing or dangling."""
    try:
        target = profile.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        return None
    return target


def _generations(profile_dir: Path) -> list[int]:
    numbers = []
    for entry in profile_dir.iterdir():
        match = _GENERATION.match(entry.name)
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def _link_name(number: int) -> str:
    return f"{PROFILE_NAME}-{number}-link"


def _symlink_atomic(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def remove_tree(path: Path) -> None:
    """Remove a file, symlink or directory tree; a missing path is fine."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


ENV_FAULT = "HIVEGEN_SIMHOST_FAULT"
FAULT_EXIT = 1
_FAULT = re.compile(r"^(?:(nixos-container|systemctl):)?([1-9][0-9]*)(?::(fail|hang))?$")


def injected_fault(host: Host, tool: str, environ: Mapping[str, str]) -> str | None:
    """Fault injection for hivegen's reliability tests.

    `HIVEGEN_SIMHOST_FAULT=[TOOL:]K[:fail|hang]` makes the K-th simulated command (of
    TOOL, or of both tools, counted across processes in `ROOT/fault-calls`) fail at once
    with exit status 1, or hang until it is killed. Returns "fail" or "hang" when this
    call is the one, else None.
    """
    spec = environ.get(ENV_FAULT, "")
    if not spec:
        return None
    match = _FAULT.match(spec)
    if match is None:
        raise SimhostError(
            f"{ENV_FAULT}={spec!r}: expected [nixos-container:|systemctl:]K[:fail|hang]"
        )
    only_tool, nth, mode = match.group(1), int(match.group(2)), match.group(3) or "fail"
    if only_tool is not None and only_tool != tool:
        return None
    import fcntl

    counter = host.root / f"fault-calls-{only_tool or 'all'}"
    host.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(counter, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        count = int(os.read(fd, 32) or b"0") + 1
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(count).encode())
    finally:
        os.close(fd)
    return mode if count == nth else None


def act_on_fault(
    host: Host, tool: str, argv: Sequence[str], environ: Mapping[str, str]
) -> int | None:
    """Carry out an injected fault: the exit status to return, or None to go on."""
    import sys
    import time

    mode = injected_fault(host, tool, environ)
    if mode is None:
        return None
    append_line(host.log_path, f"# injected fault ({mode}): {shlex.join(argv)}\n")
    if mode == "hang":
        while True:  # until the test kills us (or hivegen's caller does)
            time.sleep(3600)
    print(f"{tool} (simulated): injected fault: this call fails", file=sys.stderr)
    return FAULT_EXIT
