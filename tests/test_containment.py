"""Containment and privilege: what a full cycle may touch, and what each container sees."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from hivegen import nspawn
from hivegen.config import load_config
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from tests.conftest import commit_dir, git, sim_config

# Host areas a misdirected write would land in. Nix's own store, database and caches
# are nix's business (a build writes there by design) and are left out.
WATCHED = [
    Path("/etc"),
    Path("/var/lib"),
    Path("/run"),
    Path("/tmp"),
    Path.home(),
    Path("/var/tmp"),
]
IGNORED_PREFIXES = (
    str(Path.home() / ".cache" / "nix"),
    "/var/lib/apt",
    "/var/lib/dpkg",
    "/tmp/pytest-of-",
    "/run/user",
    "/var/lib/systemd",
)


def snapshot(exclude: Path) -> set[str]:
    seen = set()
    for area in WATCHED:
        for directory, dirs, files in os.walk(area):
            if directory.startswith(str(exclude)) or directory.startswith(IGNORED_PREFIXES):
                dirs[:] = []
                continue
            for name in files:
                seen.add(os.path.join(directory, name))  # noqa: PTH118
            if directory.count("/") > 6:
                dirs[:] = []
    return seen


def flags_of(hive: Hive, container: str) -> list[tuple[str, str, bool]]:
    conf = nspawn.conf_path(hive.config, container).read_text()
    line = next(x for x in conf.splitlines() if x.startswith("EXTRA_NSPAWN_FLAGS="))
    binds = []
    for flag in shlex.split(line.split("=", 1)[1])[0].split():
        kind, _, spec = flag.partition("=")
        source, target = spec.split(":")
        binds.append((source, target, kind == "--bind-ro"))
    return binds


# It watches /etc, /run, /tmp ...: never beside the hostbox tests (nspawn writes there).
@pytest.mark.xdist_group("host")
def test_full_cycle_writes_nothing_outside_the_configured_roots(
    tmp_path: Path, hyperhive_flake: str
) -> None:
    roots = tmp_path / "world"
    roots.mkdir()
    hive = Hive(load_config(sim_config(roots, hyperhive_flake)))
    before = snapshot(roots)
    hive.spawn("hm1nd")
    hive.spawn("alice")
    proposed = hive.layout.proposed("alice")
    (proposed / "agent.nix").write_text('{ ... }: { environment.variables.X = "1"; }\n')
    proposals = Proposals(hive)
    proposals.propose("alice", commit_dir(proposed, "change"))
    proposals.approve(1)
    hive.stop("alice")
    hive.start("alice")
    hive.rebuild("alice")
    proposals.rollback("alice", "deployed/0")
    hive.destroy("alice")
    hive.spawn("alice")
    hive.destroy("alice", purge=True)
    created = snapshot(roots) - before
    assert sorted(created) == []


def test_binds_expose_only_what_each_agent_may_see(tmp_path: Path, hyperhive_flake: str) -> None:
    hive = Hive(load_config(sim_config(tmp_path, hyperhive_flake)))
    for name in ("hm1nd", "alice", "bob"):
        hive.spawn(name)
    layout = hive.layout
    credentials = str(layout.credentials_root)
    for name in ("alice", "bob"):
        binds = flags_of(hive, f"h-{name}")
        sources = {source for source, _, _ in binds}
        assert sources == {
            str(hive.config.runtime_dir(hive.spec(name))),
            str(layout.credentials(name)),
            str(layout.notes(name)),
            str(layout.shared),
        }
        other = "bob" if name == "alice" else "alice"
        assert not any(other in source for source in sources)
    manager = flags_of(hive, "hm1nd")
    for source, target, read_only in manager:
        # The manager sees its own credentials only, and nobody else's through /agents.
        assert not source.startswith(credentials) or source == str(layout.credentials("hm1nd"))
        if target in ("/applied", "/meta"):
            assert read_only
        if target == "/agents":
            assert not read_only
            assert not any(
                Path(source, n).resolve() == layout.credentials(n).resolve()
                for n in ("alice", "bob")
            )
    # Credentials really are outside what the manager's /agents bind shows.
    assert not str(layout.credentials("alice")).startswith(str(layout.agents) + "/")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("core.sshCommand", "{canary}"),
        ("core.pager", "{canary}"),
        ("core.editor", "{canary}"),
        ("diff.external", "{canary}"),
        ("core.askPass", "{canary}"),
        ("core.fsmonitor", "{canary}"),
        ("core.hooksPath", "{hooks}"),
        ("uploadpack.packObjectsHook", "{canary}"),
        ("core.gitProxy", "{canary}"),
        ("filter.evil.smudge", "{canary}"),
    ],
)
def test_planted_git_config_never_executes(
    tmp_path: Path, hyperhive_flake: str, key: str, value: str
) -> None:
    hive = Hive(load_config(sim_config(tmp_path, hyperhive_flake)))
    hive.spawn("alice")
    canary = tmp_path / "pwned"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {canary}\ncat >/dev/null\n")
    script.chmod(0o755)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for hook in (
        "pre-commit",
        "post-commit",
        "reference-transaction",
        "post-checkout",
        "pre-push",
        "post-index-change",
    ):
        (hooks / hook).write_text(script.read_text())
        (hooks / hook).chmod(0o755)
    proposed = hive.layout.proposed("alice")
    (proposed / "agent.nix").write_text("{ ... }: { }\n")
    (proposed / ".gitattributes").write_text("*.nix filter=evil diff=evil\n")
    sha = commit_dir(proposed, "manager change")
    for repo in (proposed, hive.layout.applied("alice")):
        git(repo, "config", key, value.format(canary=script, hooks=hooks))
    canary.unlink(missing_ok=True)
    proposals = Proposals(hive)
    proposals.propose("alice", sha)
    proposals.diff(1)
    proposals.approve(1)
    proposals.history("alice")
    hive.rebuild("alice")
    proposals.rollback("alice", "deployed/0")
    assert not canary.exists(), f"{key} ran planted code"
