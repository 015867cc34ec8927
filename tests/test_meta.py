from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hivegen import meta as meta_mod
from hivegen import nix, process, repos
from hivegen.cli import main
from hivegen.config import load_config
from hivegen.errors import CommandError, UsageError
from hivegen.hive import Hive
from tests.conftest import commit_dir, files_of, git, write_config

pytestmark = pytest.mark.nix  # run on Nix 2.8 here and on 2.26 in tests/nixroot


@pytest.fixture
def hive(tmp_path: Path, hyperhive_flake: str) -> Hive:
    hive = Hive(load_config(write_config(tmp_path, hyperhive_flake)))
    hive.init()
    return hive


def spawn_repos(hive: Hive, *names: str) -> None:
    for name in names:
        repos.seed(hive.config, hive.git, name)


def labels(meta_dir: Path) -> dict[str, str]:
    """HIVE_LABEL of every nixosConfiguration, in one nix evaluation."""
    out = subprocess.run(
        [
            "nix",
            "eval",
            "--json",
            f"{meta_dir}#nixosConfigurations",
            "--apply",
            "cs: builtins.mapAttrs (n: c: c.config.environment.variables.HIVE_LABEL) cs",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, str] = json.loads(out.stdout)
    return result


def lock_inputs(meta_dir: Path) -> set[str]:
    return meta_mod.locked_inputs(meta_mod.read_lock(meta_dir))


def meta_log(meta_dir: Path) -> list[str]:
    return git(meta_dir, "log", "--format=%s").splitlines()


def advance(hive: Hive, name: str, agent_nix: str) -> str:
    """A manager change to `name`, deployed into its applied repo by hand; returns sha."""
    proposed = hive.config.layout.proposed(name)
    (proposed / "agent.nix").write_text(agent_nix)
    sha = commit_dir(proposed, f"change {name}")
    applied = hive.config.layout.applied(name)
    git(applied, "fetch", "-q", str(proposed), "main")
    git(applied, "reset", "-q", "--hard", "FETCH_HEAD")
    return sha


@pytest.mark.parametrize("count", [0, 1, 5])
def test_sync_locks_and_evaluates(hive: Hive, count: int) -> None:
    names = ["hm1nd", "alice", "bob", "carol", "dave"][:count]
    spawn_repos(hive, *names)
    result = hive.meta_sync()
    assert result.commit is not None
    meta_dir = hive.layout.meta
    assert meta_log(meta_dir) == [f"seed meta from {count} agents"]
    assert lock_inputs(meta_dir) == {"hyperhive"} | {f"agent-{n}" for n in names}
    assert labels(meta_dir) == {n: n for n in names}
    assert git(meta_dir, "status", "--porcelain") == ""


def test_repeated_sync_starts_no_process(hive: Hive) -> None:
    spawn_repos(hive, "alice", "hm1nd")
    hive.meta_sync()
    before_files = files_of(hive.layout.meta)
    before = process.started_count()
    for _ in range(3):
        assert hive.meta_sync().commit is None
    assert process.started_count() == before
    assert files_of(hive.layout.meta) == before_files


def test_new_agent_then_removed_agent(hive: Hive) -> None:
    spawn_repos(hive, "alice")
    hive.meta_sync()
    spawn_repos(hive, "bob")
    assert hive.meta_sync().commit is not None
    assert lock_inputs(hive.layout.meta) == {"hyperhive", "agent-alice", "agent-bob"}
    # bob leaves the registry: his input and lock node go.
    git(hive.config.layout.applied("bob"), "tag", "-d", "deployed/0")
    plan = hive.meta_plan()
    assert plan.inputs_removed == ("agent-bob",)
    assert plan.lock_extra == ("agent-bob",)
    assert hive.meta_sync().commit is not None
    lock = json.loads((hive.layout.meta / "flake.lock").read_text())
    assert lock_inputs(hive.layout.meta) == {"hyperhive", "agent-alice"}
    assert not any("bob" in node for node in lock["nodes"])
    assert "bob" not in (hive.layout.meta / "flake.nix").read_text()
    assert meta_log(hive.layout.meta) == [
        "regenerate meta flake",
        "regenerate meta flake",
        "seed meta from 1 agents",
    ]


def test_check_exits_3_and_changes_nothing(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(tmp_path / "hive.toml")
    spawn_repos(hive, "alice")
    hive.meta_sync()
    spawn_repos(hive, "bob")
    before = files_of(hive.layout.meta)
    assert main(["--config", config, "meta", "sync", "--check"]) == 3
    out = capsys.readouterr().out
    assert "input agent-bob would be added" in out
    assert "flake.lock does not lock agent-bob" in out
    assert files_of(hive.layout.meta) == before
    assert main(["--config", config, "meta", "sync"]) == 0
    capsys.readouterr()
    assert main(["--config", config, "meta", "sync", "--check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["up_to_date"] is True


def test_hand_edited_meta_is_drift(hive: Hive) -> None:
    spawn_repos(hive, "alice")
    hive.meta_sync()
    flake = hive.layout.meta / "flake.nix"
    flake.write_text(flake.read_text().replace('HIVE_PORT = "8879"', 'HIVE_PORT = "1"'))
    assert hive.meta_plan().flake_changed
    # The sync puts back what HEAD already has: nothing new to commit.
    assert hive.meta_sync().commit is None
    assert 'HIVE_PORT = "8879"' in flake.read_text()
    assert not hive.meta_plan().needed
    assert git(hive.layout.meta, "status", "--porcelain") == ""


def test_prepare_finalize_makes_one_deploy_commit(hive: Hive) -> None:
    spawn_repos(hive, "alice", "bob")
    hive.meta_sync()
    meta = hive.meta
    sha = advance(hive, "alice", '{ ... }: { environment.variables.V = "2"; }\n')
    bob_before = meta_mod.locked_node(meta_mod.read_lock(meta.dir), "agent-bob")
    meta.prepare("alice")
    assert meta_log(meta.dir)[0] == "seed meta from 2 agents"  # nothing committed yet
    meta.finalize("alice", "deployed/1", sha)
    assert meta_log(meta.dir) == [f"deploy alice deployed/1 {sha[:12]}", "seed meta from 2 agents"]
    lock = meta_mod.read_lock(meta.dir)
    assert meta_mod.locked_node(lock, "agent-alice")["rev"] == sha
    assert meta_mod.locked_node(lock, "agent-bob") == bob_before
    assert git(meta.dir, "status", "--porcelain") == ""
    assert hive.meta_sync().commit is None


def test_prepare_abort_leaves_meta_byte_identical(hive: Hive) -> None:
    spawn_repos(hive, "alice")
    hive.meta_sync()
    before = files_of(hive.layout.meta)
    advance(hive, "alice", '{ ... }: { environment.variables.X = throw "broken"; }\n')
    hive.meta.prepare("alice")
    assert files_of(hive.layout.meta) != before
    # The build of the prepared lock fails with nix's own error...
    with pytest.raises(CommandError) as info:
        nix.run(
            "eval",
            "--json",
            f"{hive.layout.meta}#nixosConfigurations.alice.config.environment.variables",
        )
    assert "broken" in "\n".join(info.value.stderr_tail)
    hive.meta.abort("alice")
    # ...and abort puts every byte back (index included).
    assert files_of(hive.layout.meta) == before
    assert hive.meta_sync().commit is None


def test_lock_update_bumps_only_that_agent(hive: Hive) -> None:
    spawn_repos(hive, "alice", "bob")
    hive.meta_sync()
    alice_sha = advance(hive, "alice", "{ ... }: { }\n# a\n")
    advance(hive, "bob", "{ ... }: { }\n# b\n")
    before = meta_mod.read_lock(hive.layout.meta)
    commit = hive.meta.lock_update("alice")
    assert commit is not None
    after = meta_mod.read_lock(hive.layout.meta)
    assert meta_mod.locked_node(after, "agent-alice")["rev"] == alice_sha
    assert meta_mod.locked_node(after, "agent-bob") == meta_mod.locked_node(before, "agent-bob")
    assert meta_mod.locked_node(after, "hyperhive") == meta_mod.locked_node(before, "hyperhive")
    assert meta_log(hive.layout.meta)[0] == "lock update: agent-alice"
    assert hive.meta.lock_update("alice") is None  # unchanged: no commit
    assert meta_log(hive.layout.meta)[0] == "lock update: agent-alice"


def test_lock_update_of_unknown_agent(hive: Hive) -> None:
    spawn_repos(hive, "alice")
    hive.meta_sync()
    with pytest.raises(Exception, match="no input agent-zed"):
        hive.meta.lock_update("zed")


def test_meta_update_prefetches_bumps_and_commits(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spawn_repos(hive, "alice")
    hive.meta_sync()
    old = meta_mod.locked_node(meta_mod.read_lock(hive.layout.meta), "agent-alice")["rev"]
    sha = advance(hive, "alice", "{ ... }: { }\n# new\n")
    code = main(
        ["--config", str(tmp_path / "hive.toml"), "meta", "update", "agent-alice", "hyperhive"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"rev      {old[:12]} -> {sha[:12]}" in out
    assert "hyperhive: unchanged" in out
    assert meta_log(hive.layout.meta)[0] == "lock update: agent-alice"


def test_meta_update_fetch_failure_leaves_lock_untouched(
    hive: Hive, tmp_path: Path, hyperhive_flake: str
) -> None:
    spawn_repos(hive, "alice")
    hive.meta_sync()
    before = files_of(hive.layout.meta)
    broken = Hive(load_config(write_config(tmp_path, "git+file:///nonexistent/hyperhive")))
    with pytest.raises(CommandError, match="flake prefetch"):
        broken.meta_update(["agent-alice", "hyperhive"])
    assert files_of(hive.layout.meta) == before


def test_meta_update_rejects_unknown_inputs(hive: Hive) -> None:
    spawn_repos(hive, "alice")
    hive.meta_sync()
    with pytest.raises(UsageError, match="no input 'nixpkgs'"):
        hive.meta_update(["nixpkgs"])


def test_failed_lock_restores_meta(hive: Hive) -> None:
    spawn_repos(hive, "alice")
    hive.meta_sync()
    before = files_of(hive.layout.meta)
    spawn_repos(hive, "bob")
    # bob's deployed flake.nix does not parse: nix cannot lock it.
    applied = hive.config.layout.applied("bob")
    (applied / "flake.nix").write_text("{ outputs = ; }\n")
    commit_dir(applied, "broken")
    with pytest.raises(CommandError):
        hive.meta_sync()
    assert files_of(hive.layout.meta) == before


def test_sync_without_nix_version_probe(hive: Hive) -> None:
    # Syncing never needs the version probe; only input bumps do.
    nix.version.cache_clear()
    spawn_repos(hive, "alice")
    hive.meta_sync()
    assert nix.version.cache_info().misses == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nix (Nix) 2.8.0", (2, 8, 0)),
        ("nix (Nix) 2.19.2\n", (2, 19, 2)),
        ("nix (Nix) 2.24.0pre20240101_dirty", (2, 24, 0)),
        ("nix (Lix, like Nix) 2.91", (2, 91, 0)),
    ],
)
def test_parse_version(text: str, expected: tuple[int, int, int]) -> None:
    assert nix.parse_version(text) == nix.NixVersion(*expected)


@pytest.mark.parametrize(
    ("version", "argv_tail"),
    [
        (nix.NixVersion(2, 8), ["flake", "lock", "--update-input", "agent-a", "/m"]),
        (nix.NixVersion(2, 19), ["flake", "update", "agent-a", "--flake", "/m"]),
    ],
)
def test_bump_command_follows_the_nix_version(
    monkeypatch: pytest.MonkeyPatch, version: nix.NixVersion, argv_tail: list[str]
) -> None:
    seen: list[tuple[str, ...]] = []
    monkeypatch.setattr(nix, "version", lambda: version)
    monkeypatch.setattr(nix, "run", lambda *args, cwd=None: seen.append(args))
    nix.update_inputs(Path("/m"), ["agent-a"])
    assert seen == [tuple(argv_tail)]


def test_version_is_asked_once_per_process() -> None:
    nix.version.cache_clear()
    before = process.started_count()
    assert nix.version() == nix.version()
    assert process.started_count() == before + 1
