"""Large simulated hives, built quickly but for real.

A hive of N registered agents is what `hivegen spawn` would leave behind N times, minus
the N container builds:

- each agent's *applied repo* is a real git repository holding hivegen's own rendered
  `flake.nix` and `agent.nix` (`hivegen.render.render_agent_repo`) in one commit on `main`,
  tagged `deployed/0`. Its objects, refs and HEAD are written directly (zlib-compressed
  loose objects, as git writes them: no process), then one `git read-tree --reset -u
  main` per repo checks the files out and writes the index, so that nix sees a clean
  work tree. These run a few at a time in parallel. (`hivegen spawn` costs about 15
  processes and a container build per agent; this costs one process.)
- each agent's container conf is written into the simulated conf dir as
  `nixos-container create` and hivegen's nspawn rewrite would leave it, so the agent
  counts as an existing, stopped container. Nothing is built for it.
- the meta flake is then synced once through hivegen itself (`Hive.meta_sync`): one real
  `nix flake lock` of N + 1 inputs, which fetches every applied repo into the store.

The proposed repos (`agents/<n>/config`) are not made: nothing measured reads them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hivegen import names, nspawn, process, render
from hivegen.config import Config, load_config
from hivegen.git import Git
from hivegen.hive import Hive
from hivegen.repos import INIT_MESSAGE, git_for

# Nix 2.8 offline, as the tests run it: no daemon, no sandbox (no user namespaces as
# root), no binary caches and no global flake registry (each would cost minutes of
# network retries on a machine without network).
NIX_SETTINGS = (
    "experimental-features = nix-command flakes",
    "sandbox = false",
    "substituters = ",
    "warn-dirty = false",
)
NIX = ("nix", "--extra-experimental-features", "nix-command flakes")


def offline_nix_config(workdir: Path) -> str:
    """The NIX_CONFIG text for offline Nix, with an empty flake registry in `workdir`."""
    registry = workdir / "nix-registry.json"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text('{"flakes":[],"version":2}\n')
    return "\n".join([*NIX_SETTINGS, f"flake-registry = {registry}"])


def use_offline_nix(workdir: Path) -> str:
    """Set NIX_CONFIG for this process and every child; returns the text."""
    text = offline_nix_config(workdir)
    os.environ["NIX_CONFIG"] = text
    os.environ.pop("HIVEGEN_CONFIG", None)
    return text


# -- the hyperhive base flake and hive.toml ------------------------------------------------


def write_base_flake(dest: Path) -> str:
    """hivegen's demo base flake (agent-base and manager on a stub module evaluator),
    committed to a git repo at `dest`; returns its git+file URL."""
    dest.mkdir(parents=True, exist_ok=True)
    source = resources.files("hivegen.demo") / "hyperhive"
    for entry in source.iterdir():
        if entry.name.endswith(".nix"):
            (dest / entry.name).write_text(entry.read_text())
    system = process.run(
        [*NIX, "eval", "--impure", "--raw", "--expr", "builtins.currentSystem"]
    ).stdout.strip()
    (dest / "system.nix").write_text(f'"{system}"\n')
    git = Git("hivegen bench", "bench@hivegen")
    git.init(dest)
    git.run(dest, "add", "--all")
    git.commit(dest, "hyperhive base flake for the benchmark")
    return f"git+file://{dest}"


def write_config(root: Path, hyperhive_flake: str, health_address: str = "127.0.0.99") -> Path:
    """A hive.toml for a hive at `root/state` on a simulated host at `root/host`; its
    simulated agents' web ports listen on `health_address` (a loopback address: two
    hives with running agents of one name need two)."""
    host = root / "host"
    path = root / "hive.toml"
    path.write_text(
        f'[hive]\nstate_root = "{root / "state"}"\nhyperhive_flake = "{hyperhive_flake}"\n'
        f'[host]\nruntime = "simulated"\nsimulated_root = "{host}"\n'
        f'containers_conf_dir = "{host / "etc/nixos-containers"}"\n'
        f'systemd_dir = "{host / "etc/systemd/system.control"}"\n'
        f'runtime_root = "{host / "run/hyperhive"}"\n'
        # The simulated agents come up at once: a short settle, their own loopback.
        f'[health]\nsettle = 0.2\nport_timeout = 5\naddress = "{health_address}"\n'
    )
    return path


# -- names ---------------------------------------------------------------------------------


def agent_names(count: int, keep_free: Iterable[str] = ()) -> list[str]:
    """`count` valid agent names none of which shares a port with a `keep_free` name.

    Ports are 8100 + FNV-1a % 900: a hive of 1000 must reuse ports among its own agents
    (such a hive could not be spawned one by one; it is built directly here), but the
    agent the benchmark spawns next must find its port free.
    """
    reserved = {names.agent_port(name) for name in keep_free}
    result: list[str] = []
    index = 0
    while len(result) < count:
        name = f"a{index:04d}"
        index += 1
        if names.agent_port(name) not in reserved and name not in keep_free:
            result.append(name)
    return result


def agent_names_own_ports(count: int) -> list[str]:
    """`count` valid agent names, no two sharing a port: agents that run side by side
    (a port taken by a running agent stops a rebuild), at most 900."""
    taken: set[int] = set()
    result: list[str] = []
    index = 0
    while len(result) < count:
        if index >= 100_000:
            raise ValueError(f"cannot find {count} agent names with ports of their own")
        name = f"a{index:04d}"
        index += 1
        if names.agent_port(name) not in taken:
            taken.add(names.agent_port(name))
            result.append(name)
    return result


# -- applied repos -------------------------------------------------------------------------


def _write_object(objects: Path, kind: str, body: bytes) -> str:
    data = f"{kind} {len(body)}\0".encode() + body
    sha = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    path = objects / sha[:2] / sha[2:]
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(zlib.compress(data))
    return sha


def _write_applied_git(git_dir: Path, files: dict[str, str], git: Git, when: int) -> str:
    """An applied repo's .git: one commit of `files` on main, tagged deployed/0."""
    objects = git_dir / "objects"
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags/deployed"):
        (git_dir / sub).mkdir(parents=True, exist_ok=True)
    (git_dir / "HEAD").write_text("ref: refs/heads/main\n")
    (git_dir / "config").write_text(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n"
    )
    tree = b"".join(
        f"100644 {name}\0".encode()
        + bytes.fromhex(_write_object(objects, "blob", files[name].encode()))
        for name in sorted(files)
    )
    tree_sha = _write_object(objects, "tree", tree)
    who = f"{git.committer_name} <{git.committer_email}> {when} +0000"
    commit = f"tree {tree_sha}\nauthor {who}\ncommitter {who}\n\n{INIT_MESSAGE}\n"
    sha = _write_object(objects, "commit", commit.encode())
    (git_dir / "refs/heads/main").write_text(sha + "\n")
    (git_dir / "refs/tags/deployed/0").write_text(sha + "\n")
    return sha


def seed_applied_repos(config: Config, agents: Sequence[str], jobs: int | None = None) -> None:
    """Make each agent's applied repo (see the module's docstring)."""
    git = git_for(config)
    root = config.layout.applied_root
    root.mkdir(parents=True, exist_ok=True)
    flake = render.render_agent_flake()
    when = int(time.time())
    for name in agents:
        files = {render.AGENT_NIX: render.render_agent_nix(name), render.FLAKE_NIX: flake}
        repo = root / name
        if repo.exists():
            shutil.rmtree(repo)
        _write_applied_git(repo / ".git", files, git, when)

    def checkout(name: str) -> None:
        git.run(root / name, "read-tree", "--reset", "-u", "refs/heads/main")

    with ThreadPoolExecutor(max_workers=jobs or 2 * (os.cpu_count() or 1)) as pool:
        list(pool.map(checkout, agents))


def write_confs(config: Config, agents: Sequence[str]) -> None:
    """Container confs as `nixos-container create` + hivegen's rewrite leave them."""
    conf_dir = config.host.containers_conf_dir
    conf_dir.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(agents):
        spec = config.agent(name)
        subnet = f"10.{234 + index // 254}.{index % 254 + 1}"
        created = (
            f"PRIVATE_NETWORK=1\nHOST_ADDRESS={subnet}.1\nLOCAL_ADDRESS={subnet}.2\n"
            f"HOST_BRIDGE=\nHOST_PORT=\nAUTO_START=0\nFLAKE={config.layout.meta}\n"
        )
        text = nspawn.rewrite_conf(created, nspawn.extra_nspawn_flags(config, spec))
        nspawn.conf_path(config, spec.container).write_text(text)


def make_bind_sources(config: Config, agents: Sequence[str]) -> None:
    """Each agent's bind sources (notes, credentials, runtime dirs), as `spawn` leaves
    them: a rollout switches agents without making them (a rebuild or start does)."""
    for name in agents:
        nspawn.verify_binds(config, config.agent(name), create=True)


# -- a whole hive --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BuiltHive:
    config_path: Path
    config: Config
    agents: tuple[str, ...]
    seed_seconds: float
    sync_seconds: float


def build_hive(
    root: Path, hyperhive_flake: str, agents: Sequence[str], health_address: str = "127.0.0.99"
) -> BuiltHive:
    """A hive at `root` of `agents`, registered, with stopped containers; meta synced."""
    root.mkdir(parents=True, exist_ok=True)
    config_path = write_config(root, hyperhive_flake, health_address)
    config = load_config(config_path)
    Hive(config).init()
    started = time.perf_counter()
    seed_applied_repos(config, agents)
    write_confs(config, agents)
    seeded = time.perf_counter()
    Hive(config).meta_sync()
    synced = time.perf_counter()
    return BuiltHive(config_path, config, tuple(agents), seeded - started, synced - seeded)
