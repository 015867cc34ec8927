"""A second Nix for the suite: Debian trixie's nix-bin (2.26, the Nix era NixOS hosts
run), in a trixie root filesystem, beside bookworm's 2.8 on the host.

Trixie's nix needs trixie's glibc, so it runs in its own root: debootstrap (minbase,
with git and Python), then `apt-get install nix-bin` inside it (debootstrap does not
resolve nix-bin's virtual dependencies; apt also takes its recommended
nix-setup-systemd, which makes the `nixbld` group trixie's nix.conf names, as on a
real trixie host), then a venv with the test dependencies from pyproject.toml. It is
built once per machine into a cache keyed by a hash of that recipe
(tests/hostbox/harness.cached_tree, as the host-in-a-box's root).

`run_pytest` runs the checkout's Nix-facing tests (`-m nix`) in it with
systemd-nspawn: the root's own files behind `--volatile=overlay` (the cached tree is
never written: the store the tests fill is thrown away), the checkout as an overlay at
/hivegen/main (writable, nothing written back), `../shared` read-only beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.hostbox.harness import NSPAWN, HostboxError, cached_tree, debootstrap, flock

CACHE_ENV = "HIVEGEN_NIXROOT_CACHE"
DEFAULT_CACHE = Path("/var/cache/hivegen-nixroot")
# Set inside the root: the suite there knows it is the second run (and runs no root).
INSIDE_ENV = "HIVEGEN_NIX_ROOT"
CHECKOUT = Path(__file__).resolve().parent.parent.parent
# Where the checkout and ../shared are seen inside the root (made at build time: nspawn
# cannot make a mount point in a root behind --volatile=overlay).
INNER_TOP = "/hivegen"
INNER_CHECKOUT = f"{INNER_TOP}/main"
INNER_SHARED = f"{INNER_TOP}/shared"
VENV = "/opt/hivegen-venv"
BASE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class NixRootError(HostboxError):
    pass


def requirements(pyproject: Path = CHECKOUT / "pyproject.toml") -> tuple[str, ...]:
    """What the venv in the root holds: hivegen's dependencies and its [test] extra, and
    from [dev] pytest-xdist and selenium (every test module is imported to select the
    `nix` ones); hivegen itself is the checkout, on PYTHONPATH."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["test"]]
    wanted += [req for req in extras["dev"] if req.startswith(("pytest-xdist", "selenium"))]
    return tuple(wanted)


@dataclass(frozen=True, slots=True)
class Recipe:
    """Everything the cached root depends on (the mirror and PyPI's releases aside)."""

    suite: str = "trixie"
    variant: str = "minbase"
    include: tuple[str, ...] = ("git", "python3", "python3-venv", "ca-certificates")
    apt: tuple[str, ...] = ("nix-bin",)
    pip: tuple[str, ...] = ()
    # Bump when the build below changes in a way the fields do not show.
    version: int = 1

    @classmethod
    def current(cls) -> Recipe:
        return cls(pip=requirements())

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=2) + "\n"

    def key(self) -> str:
        return f"{self.suite}-{hashlib.sha256(self.as_json().encode()).hexdigest()[:16]}"


def missing_prerequisites() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root (systemd-nspawn and debootstrap need it)")
    for tool in ("debootstrap", NSPAWN):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install debootstrap systemd-container)")
    return missing


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def rootfs(cache: Path | None = None) -> Path:
    recipe = Recipe.current()
    return cached_tree(cache or cache_dir(), recipe.key(), lambda build: _build(recipe, build))


def _build(recipe: Recipe, build: Path) -> None:
    build.mkdir(mode=0o755)
    target = build / "rootfs"
    mirror = debootstrap(
        build / "debootstrap.log", target, recipe.suite, recipe.variant, recipe.include
    )
    # apt and pip fetch over HTTPS: the host's CA bundle, in case the root's is not made.
    host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_bundle.is_file():
        (target / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
        shutil.copy2(host_bundle, target / "etc/ssl/certs/ca-certificates.crt")
    with (build / "setup.log").open("w") as log:
        _in_root(target, ["apt-get", "update", "-qq"], log)
        _in_root(target, ["apt-get", "install", "-y", "-qq", *recipe.apt], log)
        _in_root(target, ["python3", "-m", "venv", VENV], log)
        _in_root(target, [f"{VENV}/bin/pip", "install", "-q", *recipe.pip], log)
    for deb in (target / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    for directory in (INNER_CHECKOUT, INNER_SHARED):
        (target / directory.lstrip("/")).mkdir(parents=True)
    (build / "recipe.json").write_text(recipe.as_json())
    (build / "mirror").write_text(mirror + "\n")


def _nspawn(root: Path, *flags: str) -> list[str]:
    # No systemd on the host to register with or to move into a unit of.
    return [NSPAWN, "-q", "--register=no", "--keep-unit", "--pipe", "-D", str(root), *flags]


def _in_root(root: Path, argv: Sequence[str], log: IO[str]) -> None:
    """One step of the root's build, in it (nspawn gives it /proc, /dev and /dev/pts)."""
    env = ["--setenv=DEBIAN_FRONTEND=noninteractive", f"--setenv=PATH={BASE_PATH}"]
    result = subprocess.run(
        [*_nspawn(root, *env), *argv],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if result.returncode != 0:
        raise NixRootError(f"in the trixie root: {' '.join(argv)} exited {result.returncode}")


def _one_at_a_time(root: Path) -> contextlib.AbstractContextManager[None]:
    """A second systemd-nspawn of the same root fails while one runs ("Failed to open
    system bus", its lock taken): runs of it wait for each other instead."""
    return flock(root.parent / "run.lock")


def nix_version(root: Path) -> str:
    with _one_at_a_time(root):
        result = subprocess.run(
            [*_nspawn(root, "--volatile=overlay"), "/usr/bin/nix", "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise NixRootError(f"nix --version in the trixie root: {result.stderr.strip()}")
    return result.stdout.strip()


def run_pytest(
    root: Path, args: Sequence[str], *, timeout: float
) -> subprocess.CompletedProcess[str]:
    """`python -m pytest ARGS` on this checkout, inside the root."""
    shared = CHECKOUT.parent / "shared"
    flags = [
        "--volatile=overlay",
        f"--overlay={CHECKOUT}::{INNER_CHECKOUT}",
        *([f"--bind-ro={shared}:{INNER_SHARED}"] if shared.is_dir() else []),
        f"--chdir={INNER_CHECKOUT}",
        f"--setenv=PATH={VENV}/bin:{BASE_PATH}",
        f"--setenv=PYTHONPATH={INNER_CHECKOUT}",
        "--setenv=PYTHONDONTWRITEBYTECODE=1",
        f"--setenv={INSIDE_ENV}=trixie",
        f"--setenv=CI={os.environ.get('CI', '')}",
        "--setenv=LANG=C.UTF-8",
    ]
    with _one_at_a_time(root):
        return subprocess.run(
            [*_nspawn(root, *flags), f"{VENV}/bin/python", "-m", "pytest", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
