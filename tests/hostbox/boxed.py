"""A hivegen hive whose containers run under the real systemd of a box.

hivegen runs on the host as in production (`[host] runtime = "native"`): it finds
`nixos-container` and `systemctl` on its PATH. There, this puts the simulated
`nixos-container` (which builds each system with real nix, writes the conf, and hands
start/stop/reload and "is it running?" to whatever `systemctl` comes first on PATH, as
nixpkgs' script does) and `Box.install_systemctl`'s wrapper for the box's real one.

The box sees the hive's directory at the same path (the conf's bind sources are host
paths), the conf dir at /etc/nixos-containers, the drop-in dir at
/etc/systemd/system.control, and the simulated host's containers dir at
/var/lib/nixos-containers, where the unit makes each container's root and where
`nixos-container destroy` removes it; with `nixos_profiles=True`, also the simulated
host's profiles at /nix/var/nix/profiles/per-container and the host's /nix/store
(read-only), which a container whose system has an init boots from
(box/container-start).

hivegen itself reads each container's profile at /nix/var/nix/profiles/per-container,
as on NixOS. A hive made with `nixos_profiles=True` runs hivegen in a mount namespace
of its own where that path is the simulated host's profiles dir: the health checks and
the put-back on the previous system then see, and set, the profiles the box's
containers boot. (Without it hivegen finds no profile there, and checks no switch.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hivegen import simhost
from tests import jsonschemas
from tests.hostbox.harness import Bind, Box

MACHINECTL = "/usr/bin/machinectl"
BUSYBOX = "/usr/bin/busybox"


class HivegenFailed(AssertionError):
    pass


@dataclass(frozen=True, slots=True)
class Dirs:
    top: Path

    @property
    def state(self) -> Path:
        return self.top / "state"

    @property
    def host(self) -> Path:
        return self.top / "host"

    @property
    def conf_dir(self) -> Path:
        return self.host / "etc/nixos-containers"

    @property
    def systemd_dir(self) -> Path:
        return self.host / "etc/systemd/system.control"

    @property
    def runtime_root(self) -> Path:
        return self.host / "run/hyperhive"

    @property
    def containers(self) -> Path:
        """The simulated host's /var/lib/nixos-containers: the box's, too."""
        return self.host / "containers"

    @property
    def profiles(self) -> Path:
        """The simulated host's /nix/var/nix/profiles/per-container."""
        return self.host / "profiles" / "per-container"

    @property
    def bin(self) -> Path:
        return self.top / "bin"

    def config_text(self, hyperhive_flake: str, extra: str = "") -> str:
        return (
            f'[hive]\nstate_root = "{self.state}"\nhyperhive_flake = "{hyperhive_flake}"\n'
            f'[host]\nruntime = "native"\n'
            f'containers_conf_dir = "{self.conf_dir}"\n'
            f'systemd_dir = "{self.systemd_dir}"\n'
            f'runtime_root = "{self.runtime_root}"\n{extra}'
        )


def document_of(stdout: str) -> dict[str, Any]:
    """A `--json` stdout's document, checked against the schema it names."""
    document: dict[str, Any] = json.loads(stdout)
    jsonschemas.validate(document)
    return document


@dataclass(frozen=True, slots=True)
class BoxedHive:
    box: Box
    dirs: Dirs
    config: Path
    env: dict[str, str]
    nixos_profiles: bool = False

    def run_hivegen(
        self, *args: str, config: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the hivegen CLI on the host, whatever it exits with."""
        argv = [sys.executable, "-m", "hivegen", "--config", str(config or self.config), *args]
        if self.nixos_profiles:
            argv = [*in_profiles_namespace(self.dirs.profiles), *argv]
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, check=False, timeout=300
        )

    def hivegen(self, *args: str, config: Path | None = None) -> str:
        """Run the hivegen CLI on the host; its stdout. A failure shows the box's journal."""
        result = self.run_hivegen(*args, config=config)
        if result.returncode != 0:
            raise HivegenFailed(
                f"hivegen {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
                f"box journal:\n{self.box.journal()}"
            )
        return result.stdout

    def document(self, *args: str, config: Path | None = None) -> dict[str, Any]:
        """`hivegen ARGS --json`: its document, checked against the schema it names."""
        return document_of(self.hivegen(*args, "--json", config=config))

    def status(self) -> dict[str, dict[str, Any]]:
        """`hivegen status --json`, by container."""
        rows: list[dict[str, Any]] = self.document("status")["agents"]
        return {row["container"]: row for row in rows}

    def show(self, *containers: str, props: str) -> dict[str, dict[str, str]]:
        """`systemctl show -p <props>` for each container's unit, from the box's systemd."""
        units = [f"container@{c}.service" for c in containers]
        out = self.box.systemctl("show", f"--property=Id,{props}", *units).stdout
        blocks: dict[str, dict[str, str]] = {}
        for text in out.strip().split("\n\n"):
            block = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
            blocks[block["Id"]] = block
        return {c: blocks[u] for c, u in zip(containers, units, strict=True)}

    def is_active(self, container: str) -> str:
        result = self.box.systemctl("is-active", f"container@{container}.service", check=False)
        return result.stdout.strip()

    def machines(self) -> set[str]:
        out = self.box.run([MACHINECTL, "list", "--no-legend", "--no-pager"]).stdout
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def leader(self, container: str) -> int:
        out = self.box.run([MACHINECTL, "show", "-p", "Leader", "--value", container]).stdout
        return int(out.strip())

    def in_container(self, container: str, script: str) -> subprocess.CompletedProcess[str]:
        """Run a busybox shell script inside a running agent container (via its leader)."""
        leader = self.leader(container)
        argv = ["/usr/bin/nsenter", "-t", str(leader), "-a", "--", BUSYBOX, "sh", "-c", script]
        return self.box.run(argv, check=False)

    def bind_mounts(self, container: str) -> dict[str, tuple[str, str]]:
        """The container's mounts of the hive's host directories: target → (source, rw|ro)."""
        out = self.in_container(container, "cat /proc/self/mountinfo")
        assert out.returncode == 0, out.stderr
        top = str(self.dirs.top)
        mounts = {}
        for line in out.stdout.splitlines():
            fields = line.split()
            root, target, options = fields[3], fields[4], fields[5].split(",")
            if root.startswith(top + "/") and target != "/":
                mounts[target] = (root, "ro" if "ro" in options else "rw")
        return mounts

    def find_text(self, container: str, text: str) -> list[str]:
        """Every file in the container holding `text` (/proc, /sys and /dev left out),
        sorted. `find` follows no symlink: a file is found where it really is."""
        script = (
            "find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune"
            f" -o -type f -exec grep -lF -- {text} {{}} +"
        )
        out = self.in_container(container, script)
        assert out.returncode in (0, 1), out.stderr
        return sorted(out.stdout.split())

    def reloads(self, container: str) -> int:
        """How many times the unit's ExecReload ran (what `nixos-container update` does)."""
        path = self.dirs.containers / container / "var/log/hostbox-reloads"
        return len(path.read_text().splitlines()) if path.exists() else 0


def assert_status_agrees(hive: BoxedHive) -> dict[str, dict[str, object]]:
    """`hivegen status --json` says what the real systemd says, for every container."""
    rows = hive.status()
    units = hive.show(*rows, props="ActiveState,SubState,MainPID,Result")
    machines = hive.machines()
    expected = {
        "running": "active",
        "stopped": "inactive",
        "failed": "failed",
        "tombstone": "inactive",
    }
    for container, row in rows.items():
        unit = units[container]
        state = str(row["state"])
        if state == "foreign":  # hivegen names it, whatever its unit does
            assert row["main_pid"] == int(unit["MainPID"]), (row, unit)
            continue
        assert state in expected, row
        assert unit["ActiveState"] == expected[state], (row, unit)
        assert row["main_pid"] == int(unit["MainPID"]), (row, unit)
        assert (container in machines) == (state == "running"), (row, machines)
        if state != "running":
            assert unit["Result"] == "success", unit  # stopped cleanly, never "failed"
    return rows


def hivegen_env(dirs: Dirs) -> dict[str, str]:
    """The host environment hivegen runs in: our two tools first on PATH."""
    env = dict(os.environ)
    for key, value in simhost.environment(dirs.host, dirs.conf_dir, dirs.systemd_dir).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PATH"] = f"{dirs.bin}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def install_nixos_container(dirs: Dirs) -> None:
    """The simulated `nixos-container`, alone: its `systemctl` is the box's."""
    scratch = simhost.install(dirs.top / "simhost-install")
    dirs.bin.mkdir(parents=True, exist_ok=True)
    shutil.copy2(scratch / "nixos-container", dirs.bin / "nixos-container")
    shutil.rmtree(scratch.parent)


NATIVE_PROFILES = Path("/nix/var/nix/profiles/per-container")


def in_profiles_namespace(profiles: Path) -> list[str]:
    """An argv prefix: run the command in a private mount namespace where NixOS's
    profiles dir is `profiles` (the host's own, made by boxed_hive, is left as it
    was)."""
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    return [
        "/usr/bin/unshare",
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        script,
        "sh",
        str(profiles),
        str(NATIVE_PROFILES),
    ]


@contextlib.contextmanager
def boxed_hive(
    rootfs: Path,
    top: Path,
    hyperhive_flake: str,
    extra_config: str = "",
    *,
    nixos_profiles: bool = False,
) -> Iterator[BoxedHive]:
    dirs = Dirs(top)
    dirs.profiles.mkdir(mode=0o755, parents=True, exist_ok=True)
    for path in (dirs.conf_dir, dirs.systemd_dir, dirs.runtime_root, dirs.state):
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
    dirs.containers.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = top / "hive.toml"
    config.write_text(dirs.config_text(hyperhive_flake, extra_config))
    install_nixos_container(dirs)
    binds = [
        Bind(top, str(top)),
        Bind(dirs.conf_dir, "/etc/nixos-containers"),
        Bind(dirs.systemd_dir, "/etc/systemd/system.control"),
        Bind(dirs.containers, "/var/lib/nixos-containers"),
    ]
    if nixos_profiles:
        # Only then: the other boxes stay as they were before systems had an init.
        # The mount point on the host: an empty dir, made if it is missing, is the only
        # trace there.
        NATIVE_PROFILES.mkdir(mode=0o755, parents=True, exist_ok=True)
        binds += [
            Bind(dirs.profiles, str(NATIVE_PROFILES)),
            Bind(Path("/nix/store"), "/nix/store", read_only=True),
        ]
    with Box(rootfs, binds, top / "box.log") as box:
        box.install_systemctl(dirs.bin)
        yield BoxedHive(box, dirs, config, hivegen_env(dirs), nixos_profiles)


def expected_binds(boxed: BoxedHive, name: str, *, manager: bool) -> dict[str, tuple[str, str]]:
    """What hivegen's conf binds into a container, as `bind_mounts` shows it."""
    state, run = boxed.dirs.state, boxed.dirs.runtime_root
    common = {
        "/run/hive": (str(run / "manager") if manager else str(run / "agents" / name), "rw"),
        "/root/.claude": (str(state / "credentials" / name), "rw"),
        "/shared": (str(state / "shared"), "rw"),
    }
    if not manager:
        return {**common, f"/agents/{name}/state": (str(state / "notes" / name), "rw")}
    return {
        **common,
        "/state": (str(state / "notes" / name), "rw"),
        "/agents": (str(state / "agents"), "rw"),
        "/applied": (str(state / "applied"), "ro"),
        "/meta": (str(state / "meta"), "ro"),
        "/notes": (str(state / "notes"), "ro"),
    }
