"""A throwaway demo hive: the example base flake, the simulated host, offline Nix."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hivegen import fsutil, process
from hivegen.config import PATH_RULE, parse_config
from hivegen.errors import HivegenError, UsageError
from hivegen.git import Git

MARKER = ".hivegen-demo"
DEMO_AGENTS = ("alice", "bob")

# The demo runs where NixOS is not: no sandbox (no user namespaces needed), no binary
# cache and no global flake registry (each would cost minutes of network retries).
NIX_SETTINGS = (
    "experimental-features = nix-command flakes",
    "sandbox = false",
    "substituters = ",
)


@dataclass(frozen=True, slots=True)
class Demo:
    root: Path
    config_path: Path
    nix_config: str


def prepare(directory: Path) -> Demo:
    """Lay out a demo hive in `directory` (wiping an earlier demo there, nothing else)."""
    root = directory.absolute()
    base = root / "hyperhive"
    host = root / "host"
    config_path = root / "hive.toml"
    text = "\n".join(
        [
            "# A throwaway demo hive on hivegen's simulated host.",
            "[hive]",
            f'state_root = "{root / "state"}"',
            f'hyperhive_flake = "git+file://{base}"',
            "",
            "[host]",
            'runtime = "simulated"',
            f'simulated_root = "{host}"',
            f'containers_conf_dir = "{host / "etc" / "nixos-containers"}"',
            f'systemd_dir = "{host / "etc" / "systemd" / "system.control"}"',
            f'runtime_root = "{host / "run" / "hyperhive"}"',
            "",
            "[agents.alice]",
            'memory_max = "4G"',
            "",
        ]
    )
    # Validated before anything is written: a path hivegen cannot use says so at once.
    try:
        parse_config(text.encode(), config_path)
    except HivegenError as exc:
        raise UsageError(
            f"cannot build a demo hive in {root}: {exc.message}",
            hint=f"the directory's path must be {PATH_RULE}",
        ) from None
    if shutil.which("nix") is None:
        raise HivegenError(
            "the demo needs Nix, and `nix` is not on PATH",
            hint="Debian: apt-get install nix-bin (then run the demo as root)",
        )
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise UsageError(
                f"{root} exists and is not an earlier hivegen demo: not touching it",
                hint="choose another directory: hivegen demo DIR",
            )
        shutil.rmtree(root)
    fsutil.ensure_dir(root, 0o755)
    fsutil.write_atomic(root / MARKER, "made by `hivegen demo`; safe to delete\n")

    registry = root / "nix-registry.json"
    fsutil.write_atomic(registry, '{"flakes":[],"version":2}\n')
    nix_config = "\n".join([*NIX_SETTINGS, f"flake-registry = {registry}"])

    source = resources.files("hivegen.demo") / "hyperhive"
    for entry in source.iterdir():
        if entry.name.endswith(".nix"):
            fsutil.write_atomic(base / entry.name, entry.read_text())
    system = process.run(
        [
            "nix",
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--impure",
            "--raw",
            "--expr",
            "builtins.currentSystem",
        ],
        process.RunOpts(env={"NIX_CONFIG": nix_config}),
    ).stdout.strip()
    fsutil.write_atomic(base / "system.nix", f'"{system}"\n')
    git = Git("hivegen demo", "demo@hivegen")
    git.init(base)
    git.run(base, "add", "--all")
    git.commit(base, "example hyperhive base flake")

    fsutil.write_atomic(config_path, text)
    return Demo(root, config_path, nix_config)
