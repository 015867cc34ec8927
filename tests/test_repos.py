from __future__ import annotations

from pathlib import Path

import pytest

from hivegen import repos
from hivegen.config import Config, load_config
from hivegen.errors import HivegenError
from hivegen.git import Git
from hivegen.registry import registered_agents
from hivegen.render import render_agent_repo
from tests.conftest import files_of, git, write_config


@pytest.fixture
def hive(tmp_path: Path, hyperhive_flake: str) -> tuple[Config, Git]:
    config = load_config(write_config(tmp_path, hyperhive_flake))
    return config, repos.git_for(config)


def log(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s|%an|%cn", "main").splitlines()


def test_seed_makes_the_exact_commits_remote_and_tags(hive: tuple[Config, Git]) -> None:
    config, g = hive
    result = repos.seed(config, g, "alice")
    assert result == repos.SeedResult(True, True, True)
    proposed = config.layout.proposed("alice")
    applied = config.layout.applied("alice")
    assert log(proposed) == ["hive-c0re init|c0re|c0re"]
    assert git(proposed, "ls-files").split() == ["agent.nix", "flake.nix"]
    for rel, text in render_agent_repo("alice").items():
        assert (proposed / rel).read_text() == text
        assert (applied / rel).read_text() == text
    assert git(proposed, "remote", "get-url", "applied") == "/applied/alice/.git"
    head = git(proposed, "rev-parse", "main")
    assert git(applied, "rev-parse", "main") == head
    assert git(applied, "tag", "--list") == "deployed/0"
    assert git(applied, "rev-parse", "deployed/0^{commit}") == head
    assert git(applied, "status", "--porcelain") == ""
    assert list(config.layout.applied_root.iterdir()) == [applied]  # no staging left


def test_second_seed_changes_nothing(hive: tuple[Config, Git]) -> None:
    config, g = hive
    repos.seed(config, g, "alice")
    before = {
        p: files_of(p) for p in (config.layout.proposed("alice"), config.layout.applied("alice"))
    }
    assert repos.seed(config, g, "alice") == repos.SeedResult(False, False, False)
    assert {p: files_of(p) for p in before} == before


def test_manager_commit_survives_reseeding(hive: tuple[Config, Git]) -> None:
    config, g = hive
    repos.seed(config, g, "alice")
    proposed = config.layout.proposed("alice")
    (proposed / "agent.nix").write_text('{ ... }: { environment.variables.MINE = "1"; }\n')
    git(proposed, "commit", "-qam", "manager edit")
    (proposed / "notes.txt").write_text("uncommitted work\n")
    manager_head = git(proposed, "rev-parse", "HEAD")
    repos.seed(config, g, "alice")
    assert git(proposed, "rev-parse", "HEAD") == manager_head
    assert "MINE" in (proposed / "agent.nix").read_text()
    assert (proposed / "notes.txt").read_text() == "uncommitted work\n"


def test_drifted_remote_is_repointed(hive: tuple[Config, Git]) -> None:
    config, g = hive
    repos.seed(config, g, "alice")
    proposed = config.layout.proposed("alice")
    git(proposed, "remote", "set-url", "applied", "/elsewhere")
    assert repos.seed(config, g, "alice").remote_changed
    assert git(proposed, "remote", "get-url", "applied") == "/applied/alice/.git"


def test_a_proposed_dir_without_main_is_refused_and_left_alone(
    hive: tuple[Config, Git],
) -> None:
    # hivegen seeds in a private dir and renames it into place, so only the manager can
    # have made this: its files are never committed, overwritten or run git over.
    config, g = hive
    proposed = config.layout.proposed("alice")
    proposed.mkdir(parents=True)
    git(proposed, "init", "-q", "--initial-branch=main")
    (proposed / "agent.nix").write_text("{ ... }: { }  # the manager's\n")
    before = files_of(proposed)
    with pytest.raises(HivegenError, match="exists but has no commit on main") as info:
        repos.seed(config, g, "alice")
    assert info.value.exit_code == 2
    assert files_of(proposed) == before


def test_an_interrupted_proposed_seed_is_redone(hive: tuple[Config, Git]) -> None:
    config, g = hive
    staging = config.layout.root / ".hivegen-seed-alice"
    staging.mkdir(parents=True)
    (staging / "agent.nix").write_text("half-written\n")  # killed before the rename
    assert repos.seed(config, g, "alice").proposed_created
    assert not staging.exists()
    assert log(config.layout.proposed("alice")) == ["hive-c0re init|c0re|c0re"]


def test_interrupted_applied_seed_is_completed(hive: tuple[Config, Git]) -> None:
    config, g = hive
    repos.seed_proposed(config, g, "alice")
    staging = config.layout.applied_root / ".seeding-alice"
    staging.mkdir(parents=True)
    git(staging, "init", "-q")  # crashed half-way through an applied seed
    assert registered_agents(config) == ()
    assert repos.seed_applied(config, g, "alice")
    assert not staging.exists()
    assert registered_agents(config) == ("alice",)


def test_applied_without_git_is_a_clear_error(hive: tuple[Config, Git]) -> None:
    config, g = hive
    applied = config.layout.applied("alice")
    applied.mkdir(parents=True)
    (applied / "agent.nix").write_text("precious\n")
    with pytest.raises(HivegenError, match=r"missing its \.git directory") as info:
        repos.seed(config, g, "alice")
    assert info.value.hint == "hivegen destroy --purge alice, then hivegen spawn alice"
    assert (applied / "agent.nix").read_text() == "precious\n"
    assert not (applied / ".git").exists()  # never a silent re-seed


def test_applied_without_deployed_zero_is_a_clear_error(hive: tuple[Config, Git]) -> None:
    config, g = hive
    repos.seed(config, g, "alice")
    applied = config.layout.applied("alice")
    git(applied, "tag", "-d", "deployed/0")
    before = files_of(applied)
    with pytest.raises(HivegenError, match="has no deployed/0 tag"):
        repos.seed(config, g, "alice")
    assert files_of(applied) == before


def test_empty_applied_dir_is_seeded(hive: tuple[Config, Git]) -> None:
    config, g = hive
    config.layout.applied("alice").mkdir(parents=True)
    assert repos.seed(config, g, "alice").applied_created


def test_registry_is_the_applied_repos_with_deployed_zero(hive: tuple[Config, Git]) -> None:
    config, g = hive
    for name in ("hm1nd", "bob", "alice"):
        repos.seed(config, g, name)
    (config.layout.applied_root / "stray").mkdir()
    git(config.layout.applied("bob"), "pack-refs", "--all")  # packed refs count too
    assert registered_agents(config) == ("alice", "bob", "hm1nd")


def test_invalid_name_never_reaches_a_path(hive: tuple[Config, Git]) -> None:
    config, g = hive
    with pytest.raises(HivegenError, match="invalid agent name"):
        repos.seed(config, g, "../evil")
    assert not (config.layout.root / "evil").exists()
