"""A real systemd for the lifecycle tests: a Debian box booted with systemd-nspawn.

The simulated host proves the commands; only a real systemd proves that the conf, the
nspawn flags and the drop-ins do what they claim. This machine's PID 1 is not systemd,
but a Debian root filesystem boots a real systemd in under a second inside
`systemd-nspawn`, and a `container@.service` there (tests/hostbox/box/, NixOS's unit cut
down) starts each agent container as a nested `systemd-nspawn` that really applies
`EXTRA_NSPAWN_FLAGS`.

- `rootfs()` builds the box's root filesystem once (debootstrap, about a minute) into a
  cache outside the repository, keyed by a hash of the recipe, atomically (a temporary
  directory renamed into place, under a lock); later runs reuse it. The agent
  containers' root, a static busybox and an init that exits cleanly on SIGTERM, lives
  inside it at `/usr/local/share/hostbox/inner`.
- `Box` boots it with `--volatile=overlay` (the cached tree is never written; concurrent
  boxes may share it), with the test's directories bound in, and powers it off.
- `Box.install_systemctl()` writes the `systemctl` hivegen finds on its PATH: the box's
  own, run inside the box with nsenter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CACHE_ENV = "HIVEGEN_HOSTBOX_CACHE"
DEFAULT_CACHE = Path("/var/cache/hivegen-hostbox")
MIRROR_ENV = "HIVEGEN_HOSTBOX_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# The host's tools: Debian's debootstrap, systemd-container (nspawn), util-linux (nsenter)
# and busybox-static (the agent containers' only program).
DEBOOTSTRAP = "debootstrap"
NSPAWN = "systemd-nspawn"
NSENTER = "/usr/bin/nsenter"
BUSYBOX = Path("/usr/bin/busybox")
TOOLS = (DEBOOTSTRAP, NSPAWN, NSENTER)

# Files bound into the box read-only: the unit and its scripts (not part of the cache).
BOX_FILES = Path(__file__).parent / "box"
UNIT = "container@.service"
BOX_LIB = "/usr/local/lib/hostbox"
INNER_ROOT = "usr/local/share/hostbox/inner"

# Inside the box: absolute paths and a clean PATH only. The test's directory (and so
# the host-side wrappers in it) is visible in the box at the same path: a PATH lookup
# that finds a wrapper there would run it again, in the wrong PID namespace.
BOX_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BOX_ENV = ("/usr/bin/env", "-i", f"PATH={BOX_PATH}", "LANG=C.UTF-8", "SYSTEMD_COLORS=0")
BOX_SYSTEMCTL = "/usr/bin/systemctl"

BOOT_TIMEOUT = 60.0
# Numbers the boxes this process boots (each gets a cgroup of its own: Box._in_own_cgroup).
_BOOTS = itertools.count(1)
POWEROFF_TIMEOUT = 30.0

# The agent containers' init: NixOS runs the container's systemd here. A shell that is
# PID 1 ignores SIGTERM unless it traps it: this one exits 0, so that `systemctl stop`
# (nspawn's --kill-signal=SIGTERM) leaves the unit inactive, not failed.
INNER_INIT = """\
#!/usr/bin/busybox sh
trap 'exit 0' TERM INT
while :; do
    /usr/bin/busybox sleep 3600 &
    wait $!
done
"""
INNER_OS_RELEASE = 'ID=hostbox-inner\nNAME="hostbox agent container"\n'


class HostboxError(Exception):
    pass


def missing_prerequisites() -> list[str]:
    """What this machine lacks to run a box (empty when it has everything)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (systemd-nspawn and debootstrap need it)")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install debootstrap systemd-container)")
    if not BUSYBOX.is_file():
        missing.append(f"{BUSYBOX} (apt-get install busybox-static)")
    elif not is_static_elf(BUSYBOX):
        missing.append(f"a static {BUSYBOX} (apt-get install busybox-static)")
    return missing


def is_static_elf(path: Path) -> bool:
    """An ELF file without a PT_INTERP program header: it runs without a libc around."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    order = "<" if data[5] == 1 else ">"
    (phoff,) = struct.unpack_from(f"{order}Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(f"{order}HH", data, 0x36)
    pt_interp = 3
    return all(
        struct.unpack_from(f"{order}I", data, phoff + i * phentsize)[0] != pt_interp
        for i in range(phnum)
    )


# -- the root filesystem -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipe:
    """Everything the cached root filesystem depends on (the mirror aside)."""

    suite: str = "bookworm"
    variant: str = "minbase"
    include: tuple[str, ...] = ("systemd", "systemd-sysv", "dbus", "systemd-container")
    # Bump when the build below changes in a way the fields do not show.
    version: int = 1
    inner_init: str = INNER_INIT
    busybox_sha256: str = ""

    @classmethod
    def current(cls) -> Recipe:
        return cls(busybox_sha256=hashlib.sha256(BUSYBOX.read_bytes()).hexdigest())

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=2) + "\n"

    def key(self) -> str:
        return f"{self.suite}-{hashlib.sha256(self.as_json().encode()).hexdigest()[:16]}"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def rootfs(cache: Path | None = None) -> Path:
    """The box's root filesystem: from the cache, or built into it first."""
    recipe = Recipe.current()
    return cached_tree(cache or cache_dir(), recipe.key(), lambda build: _build(recipe, build))


def cached_tree(cache: Path, key: str, build: Callable[[Path], None]) -> Path:
    """`<cache>/<key>/rootfs`, made by `build(directory)` the first time: into a temporary
    directory renamed into place under a lock, so that an interrupted build is never
    taken for a finished one and concurrent runs build it once."""
    final = cache / key
    done = final / "rootfs"
    if (done / "usr").is_dir():
        return done
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    with flock(cache / ".lock"):
        if (done / "usr").is_dir():
            return done  # another run built it while this one waited
        # Leftovers of an interrupted build (the lock is ours: no build is running).
        for stale in [*cache.glob(f".build-{key}-*"), final]:
            remove_build(stale)
        directory = cache / f".build-{key}-{os.getpid()}"
        try:
            build(directory)
            directory.rename(final)
        except BaseException:
            remove_build(directory)
            raise
    return done


@contextlib.contextmanager
def flock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def debootstrap(log: Path, target: Path, suite: str, variant: str, include: Sequence[str]) -> str:
    """Debian `suite` into `target`, from $HIVEGEN_HOSTBOX_MIRROR or Debian's mirror
    (the one returned); debootstrap's output goes to `log`."""
    mirror = os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    argv = [DEBOOTSTRAP, f"--variant={variant}", f"--include={','.join(include)}"]
    argv += [suite, str(target), mirror]
    with log.open("w") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise HostboxError(f"{' '.join(argv)} exited {result.returncode}:\n{tail}")
    # The downloaded packages are not needed to run.
    for deb in (target / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    return mirror


def _build(recipe: Recipe, build: Path) -> None:
    build.mkdir(mode=0o755)
    target = build / "rootfs"
    mirror = debootstrap(
        build / "debootstrap.log", target, recipe.suite, recipe.variant, recipe.include
    )
    _make_inner_root(target / INNER_ROOT)
    (build / "recipe.json").write_text(recipe.as_json())
    (build / "mirror").write_text(mirror + "\n")


def _make_inner_root(inner: Path) -> None:
    """The agent containers' root: busybox and its applets, a merged /usr, the init."""
    (inner / "usr/bin").mkdir(parents=True)
    (inner / "usr/lib").mkdir()
    shutil.copy2(BUSYBOX, inner / "usr/bin/busybox")
    (inner / "bin").symlink_to("usr/bin")
    (inner / "sbin").symlink_to("usr/bin")
    (inner / "usr/sbin").symlink_to("bin")
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (inner / "usr/bin" / applet).symlink_to("busybox")
    for directory in ("etc", "proc", "sys", "dev", "run", "tmp", "var", "root"):
        (inner / directory).mkdir()
    (inner / "usr/lib/os-release").write_text(INNER_OS_RELEASE)
    init = inner / "init"
    init.write_text(INNER_INIT)
    init.chmod(0o755)


def remove_build(path: Path) -> None:
    """Remove a failed build (or an incomplete cache entry); debootstrap may have left
    /proc or /sys mounted in it."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)
    shutil.rmtree(path)


# -- the box -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bind:
    source: Path
    target: str
    read_only: bool = False

    def flag(self) -> str:
        return f"--bind{'-ro' if self.read_only else ''}={self.source}:{self.target}"


class Box:
    """A booted Debian with a real systemd as its PID 1. Use as a context manager: the
    box is powered off on exit, whatever happened."""

    def __init__(self, root: Path, binds: Sequence[Bind], log_path: Path) -> None:
        self.root = root
        self.binds = (
            *binds,
            Bind(BOX_FILES, BOX_LIB, read_only=True),
            Bind(BOX_FILES / UNIT, f"/etc/systemd/system/{UNIT}", read_only=True),
        )
        self.log_path = log_path
        self.machine = f"hostbox-{os.getpid()}"
        self._cgroup: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._pid = 0

    def __enter__(self) -> Box:
        try:
            self.boot()
        except BaseException:
            self.poweroff()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.poweroff()

    @property
    def pid(self) -> int:
        """The box's init, as the host numbers it."""
        if not self._pid:
            raise HostboxError("the box is not running")
        return self._pid

    def boot(self) -> None:
        argv = [
            NSPAWN,
            "-q",
            # No systemd on the host: nothing to register with, no unit to move into.
            "--register=no",
            "--keep-unit",
            "-b",
            "--console=pipe",
            "--volatile=overlay",
            "-M",
            self.machine,
            "-D",
            str(self.root),
            *(bind.flag() for bind in self.binds),
        ]
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self._in_own_cgroup(argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + BOOT_TIMEOUT
        self._pid = self._wait_for_init(deadline)
        self._wait_for_boot(deadline)

    def _in_own_cgroup(self, argv: list[str]) -> list[str]:
        """Start nspawn in a cgroup of its own on a cgroup-v1 (hybrid) host. Without a
        systemd on the host, every box would otherwise put its systemd's cgroups
        (`payload/system.slice/container@hm1nd.service` ...) at the same paths as the
        box before it, and a box booted right after another one was seen to fail a
        unit's start at step CGROUP (ENOENT) as the old tree went away."""
        hierarchy = Path("/sys/fs/cgroup/systemd")
        if not (hierarchy / "cgroup.procs").is_file():
            return argv  # cgroup v2 only: nspawn nests under our own cgroup already
        group = hierarchy / f"{self.machine}-{next(_BOOTS)}"  # never one a box used before
        group.mkdir(exist_ok=True)
        self._cgroup = group
        script = 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"'
        return ["/bin/sh", "-c", script, "sh", str(group), *argv]

    def _wait_for_init(self, deadline: float) -> int:
        assert self._process is not None
        nspawn = self._process.pid
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise HostboxError(
                    f"systemd-nspawn exited {self._process.returncode}{self._tail()}"
                )
            for child in _children(nspawn):
                if _is_namespace_init(child) and _comm(child) == "systemd":
                    return child
            time.sleep(0.02)
        raise HostboxError(f"the box's systemd did not start in {BOOT_TIMEOUT}s{self._tail()}")

    def _wait_for_boot(self, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            try:
                result = self.run(
                    [BOX_SYSTEMCTL, "is-system-running", "--wait"],
                    check=False,
                    timeout=max(1.0, deadline - time.monotonic()),
                )
            except subprocess.TimeoutExpired:
                break
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.run([BOX_SYSTEMCTL, "--failed", "--no-pager"], check=False)
                    self._note(f"box booted degraded:\n{failed.stdout}")
                return
            last = f"{state} {result.stderr.strip()}"
            time.sleep(0.05)
        raise HostboxError(f"the box did not finish booting: {last}{self._tail()}")

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the box (all its namespaces, a clean environment)."""
        full = [NSENTER, "-t", str(self.pid), "-a", "--", *BOX_ENV, *argv]
        result = subprocess.run(
            full, capture_output=True, text=True, check=False, timeout=timeout, input=input_text
        )
        if check and result.returncode != 0:
            raise HostboxError(
                f"in the box: {' '.join(argv)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run([BOX_SYSTEMCTL, *args], check=check)

    def journal(self, lines: int = 80) -> str:
        result = self.run(
            ["/usr/bin/journalctl", "--no-pager", "-o", "short-precise", "-n", str(lines)],
            check=False,
        )
        return result.stdout + result.stderr

    def install_systemctl(self, bin_dir: Path) -> Path:
        """`<bin_dir>/systemctl`: the box's systemctl, for processes on the host."""
        bin_dir.mkdir(parents=True, exist_ok=True)
        path = bin_dir / "systemctl"
        words = " ".join([NSENTER, "-t", str(self.pid), "-a", "--", *BOX_ENV, BOX_SYSTEMCTL])
        path.write_text(
            "#!/bin/sh\n"
            f"# hostbox: the real systemctl of the box whose init is host PID {self.pid}.\n"
            "# By absolute path with a clean PATH: this file is visible inside the box too.\n"
            f'exec {words} "$@"\n'
        )
        path.chmod(0o755)
        return path

    def poweroff(self) -> None:
        """Power the box off and wait for it; kill it if it does not go. Idempotent."""
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None and self._pid:
                with contextlib.suppress(HostboxError, subprocess.SubprocessError, OSError):
                    self.run([BOX_SYSTEMCTL, "poweroff", "--no-block"], check=False, timeout=10)
            elif process.poll() is None:
                # Not booted far enough to be asked: nspawn turns SIGTERM into a halt.
                process.terminate()
            try:
                process.wait(timeout=POWEROFF_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._note(f"box did not power off in {POWEROFF_TIMEOUT}s: killing it")
                if self._pid:
                    # PID 1 of the box's PID namespace: every process in it dies with it.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self._pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=POWEROFF_TIMEOUT)
        finally:
            self._process = None
            self._pid = 0
            self._remove_cgroup()
            if self._log is not None:
                self._log.close()
                self._log = None

    def _remove_cgroup(self) -> None:
        """Remove the box's cgroup tree, deepest first; a cgroup still in use stays."""
        group, self._cgroup = self._cgroup, None
        if group is None or not group.is_dir():
            return
        for directory, _, _ in sorted(os.walk(group), key=lambda d: -len(d[0])):
            with contextlib.suppress(OSError):
                Path(directory).rmdir()

    def _note(self, text: str) -> None:
        if self._log is not None:
            self._log.write(f"\n[hostbox] {text}\n".encode())
            self._log.flush()

    def _tail(self, lines: int = 30) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- {self.log_path} ---\n{tail}" if tail else ""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return _children_by_scan(pid)  # a kernel without CONFIG_PROC_CHILDREN
    return [int(word) for word in text.split()]


def _children_by_scan(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children


def _is_namespace_init(pid: int) -> bool:
    """PID 1 of its own PID namespace (NSpid lists it as 1 in the innermost one)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            ids = line.split()[1:]
            return len(ids) > 1 and ids[-1] == "1"
    return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""
