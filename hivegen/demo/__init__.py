"""A throwaway demo hive: the example base flake, the simulated host, offline Nix."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hivegen import fsutil, process
from hivegen.config import PATH_RULE, Config, parse_config
from hivegen.errors import HivegenError, UsageError
from hivegen.git import Git

MARKER = ".hivegen-demo"
DEMO_AGENTS = ("alice", "bob")
DEMO_GOOD_CHANGE = """{ config, pkgs, lib, ... }:
{
  environment.variables.GREETING = "hello from alice";
  environment.systemPackages = [ pkgs.hello ];
}
"""
DEMO_BROKEN_CHANGE = """{ config, pkgs, lib, ... }:
{
  environment.variables.GREETING = throw "alice forgot how to greet";
}
"""

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
            "# An agent counts as up when its unit stays active this long after a start and",
            "# its web port answers (the simulated agents listen on a loopback of their own).",
            "[health]",
            "settle = 1",
            "port_timeout = 10",
            'address = "127.0.0.77"',
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


def manager_commit(config: Config, agent: str, agent_nix: str, message: str) -> str:
    """Commit `agent_nix` to the agent's proposed repo as the manager would; its sha."""
    proposed = config.layout.proposed(agent)
    manager = config.hive.manager
    git = Git(manager, f"{manager}@{config.hive.committer_email.rpartition('@')[2]}")
    fsutil.write_atomic(proposed / "agent.nix", agent_nix)
    git.run(proposed, "commit", "--quiet", "-am", message)
    return git.out(proposed, "rev-parse", "HEAD")


def latest_proposal(config: Config) -> int:
    from hivegen.store import Store

    pending = Store(config.layout.database).pending()
    if not pending:
        raise HivegenError("the demo's proposal was not recorded")
    return pending[-1].id


# A new release of the demo's base flake: every agent's system changes, and the agents
# named crash soon after they start (the simulated host's SIMHOST_BOOT), as a release
# with a bug would.
_ROLE_LINE = "environment.variables.HYPERHIVE_ROLE = role;"


def release_base(root: Path, version: str, crash: tuple[str, ...] = ()) -> str:
    """Commit base flake release `version` in the demo at `root`; its commit."""
    base = root / "hyperhive"
    crashing = " || ".join(f'label == "{n}"' for n in crash) or "false"
    text = (base / "flake.nix").read_text()
    text = text.replace(
        "base = role: {",
        'base = role: { config, ... }: let label = config.environment.variables.HIVE_LABEL or ""; '
        "in {",
        1,
    )
    text = text.replace(
        _ROLE_LINE,
        f'{_ROLE_LINE}\n        environment.variables.BASE_VERSION = "{version}";\n'
        f'        environment.variables.SIMHOST_BOOT = if {crashing} then "crash" else "no";',
        1,
    )
    fsutil.write_atomic(base / "flake.nix", text)
    git = Git("hivegen demo", "demo@hivegen")
    git.run(base, "commit", "--quiet", "-am", f"base release {version}")
    return git.out(base, "rev-parse", "HEAD")
