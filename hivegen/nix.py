"""The nix command line, through the process gateway."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hivegen import process
from hivegen.errors import HivegenError
from hivegen.git import CHILD_GIT_ENV

# Every call enables flakes itself: the host's nix.conf may not.
NIX = ("nix", "--extra-experimental-features", "nix-command flakes")


@dataclass(frozen=True, slots=True, order=True)
class NixVersion:
    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


# `nix flake lock --update-input` is deprecated from here on, `nix flake update X` replaces it.
FLAKE_UPDATE_INPUT_SINCE = NixVersion(2, 19)
# `nix build /nix/store/…drv^out` names a derivation's output from here on. From 2.15 a
# bare `….drv` means the derivation file itself: `nix build` of it exits 0 and builds
# nothing (2.8 alone would build its outputs, and does not know `^`).
DRV_OUTPUT_SYNTAX_SINCE = NixVersion(2, 13)


# The Nix versions hivegen supports: from OLDEST_SUPPORTED on. The suite runs on each
# of TESTED (Debian bookworm's 2.8 on the host, trixie's 2.26 in a trixie root, the
# 2.2x era NixOS hosts run); another version is expected to work, and doctor says so.
OLDEST_SUPPORTED = NixVersion(2, 8)
TESTED = (NixVersion(2, 8), NixVersion(2, 26))


def support_problem(found: NixVersion) -> str | None:
    """Why `found` is not a Nix hivegen supports, or None."""
    if found < OLDEST_SUPPORTED:
        return f"nix {found} is older than the oldest hivegen supports ({OLDEST_SUPPORTED})"
    return None


def is_tested(found: NixVersion) -> bool:
    return any((found.major, found.minor) == (t.major, t.minor) for t in TESTED)


def tested_text() -> str:
    return ", ".join(f"{t.major}.{t.minor}" for t in TESTED)


# What nix warns on a healthy run (2.8 and 2.26 alike), and nothing else: the meta flake
# is evaluated while a deploy is staged in it (a dirty tree, by design), and a host's
# nix.conf may carry settings or features of another nix version. Never shown to the
# operator nor kept in an error; every other line of nix's is, whole.
_NOISE = re.compile(
    r"warning: (?:"
    r"Git tree '[^']*' is dirty"
    r"|unknown setting '[^']*'"
    r"|unknown experimental feature '[^']*'"
    r"|Ignoring setting '[^']*' because experimental feature '[^']*' is not enabled"
    r")\s*"
)


def is_noise(line: str) -> bool:
    return _NOISE.fullmatch(line) is not None


def parse_version(text: str) -> NixVersion:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise HivegenError(f"cannot read nix's version from {text.strip()!r}")
    major, minor, patch = match.groups()
    return NixVersion(int(major), int(minor), int(patch or 0))


@functools.cache
def version() -> NixVersion:
    """Asked once per hivegen process."""
    return parse_version(process.run([*NIX, "--version"]).stdout)


def run(*args: str, cwd: Path | None = None) -> process.CmdOut:
    return process.run(
        [*NIX, *args], process.RunOpts(cwd=cwd, env=CHILD_GIT_ENV, is_noise=is_noise)
    )


def flake_lock(flake_dir: Path) -> None:
    run("flake", "lock", str(flake_dir))


def update_inputs(flake_dir: Path, inputs: list[str]) -> None:
    """Re-lock only `inputs` of the flake, leaving every other lock node as it is."""
    if not inputs:
        return
    if version() >= FLAKE_UPDATE_INPUT_SINCE:
        run("flake", "update", *inputs, "--flake", str(flake_dir))
    else:
        flags = [arg for name in inputs for arg in ("--update-input", name)]
        run("flake", "lock", *flags, str(flake_dir))


def prefetch(flake_ref: str) -> dict[str, Any]:
    """Fetch `flake_ref` into the store; a fetch failure surfaces here, before any lock."""
    out = run("flake", "prefetch", "--json", "--", flake_ref)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def parse_files(paths: list[Path]) -> process.CmdOut:
    """`nix-instantiate --parse` every file (stops at the first that does not parse)."""
    return process.run(
        ["nix-instantiate", "--parse", *map(str, paths)], process.RunOpts(check=False)
    )


def build_systems(
    flake_dir: Path,
    names: list[str],
    env: Mapping[str, str | None] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Every `names`' system, built: the out paths by name.

    ONE evaluation for all of them: `nix eval` of the flake's `nixosConfigurations`
    with a function that lists each system's derivation, so that what the systems share
    (the base flake and its nixpkgs) is evaluated once. Nix 2.8 evaluates each
    installable of a `nix build` from scratch, so naming the N attributes there would
    cost N evaluations. Then ONE `nix build` of those derivations, which evaluates
    nothing and builds them in parallel. A failure of either raises with nix's error."""
    if not names:
        return {}
    from hivegen.nixlang import nix_str

    child_env = {**CHILD_GIT_ENV, **(env or {})}
    wanted = " ".join(nix_str(name) for name in names)
    apply = (
        "cs: map (n: let t = cs.${n}.config.system.build.toplevel; in "
        f"{{ drv = t.drvPath; out = t.outPath; }}) [ {wanted} ]"
    )
    listed = process.run(
        [*NIX, "eval", "--json", f"{flake_dir}#nixosConfigurations", "--apply", apply],
        process.RunOpts(env=child_env, on_stderr_line=on_line, is_noise=is_noise),
    )
    systems = json.loads(listed.stdout)
    if not isinstance(systems, list) or len(systems) != len(names):
        raise HivegenError(f"nix eval listed {len(systems)} systems for {len(names)} agents")
    drvs = [str(s["drv"]) for s in systems]
    process.run(
        [*NIX, "build", "--no-link", "--", *map(drv_output, drvs)],
        process.RunOpts(env=child_env, on_stderr_line=on_line, is_noise=is_noise),
    )
    built = {name: Path(str(s["out"])) for name, s in zip(names, systems, strict=True)}
    # A `nix build` that exits 0 has built what it was asked for: check it was asked for
    # the systems, not their derivation files (the meaning of an argument changed once).
    missing = sorted(str(out) for out in built.values() if not out.exists())
    if missing:
        raise HivegenError(
            f"nix build exited 0 but did not build {', '.join(missing)}",
            hint=f"hivegen does not know how nix {version()} builds a derivation's output",
        )
    return built


def drv_output(drv: str) -> str:
    """The installable of `drv`'s `out` output, as this nix spells it."""
    return f"{drv}^out" if version() >= DRV_OUTPUT_SYNTAX_SINCE else drv
