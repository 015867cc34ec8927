"""What a manager's commit may hold, and how its repo is read (policy.py, snapshot.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hivegen import policy
from hivegen.cli import main
from hivegen.config import load_config
from hivegen.errors import UsageError
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.render import render_agent_repo
from tests.conftest import commit_dir, git, sim_config


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str) -> Hive:
    top = tmp_path_factory.mktemp("policy")
    hive = Hive(load_config(sim_config(top, hyperhive_flake)))
    hive.spawn("alice")
    return hive


@pytest.fixture
def proposed(hive: Hive) -> Iterator[Path]:
    """alice's proposed repo, reset to its seed commit after each test."""
    repo = hive.layout.proposed("alice")
    seed = git(repo, "rev-parse", "HEAD")
    yield repo
    git(repo, "reset", "-q", "--hard", seed)
    git(repo, "clean", "-qfdx")


def config_path(hive: Hive) -> str:
    assert hive.config.source is not None
    return str(hive.config.source)


def tags(hive: Hive) -> set[str]:
    return set(git(hive.layout.applied("alice"), "tag", "--list").split())


def refused(hive: Hive, sha: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    before = tags(hive)
    capsys.readouterr()
    assert main(["--config", config_path(hive), "propose", "alice", sha, *extra]) == 2
    assert tags(hive) == before  # no proposal tag left behind
    return capsys.readouterr().err


FLAKE_WITH_INPUTS = """{
  inputs.secrets.url = "path:/etc";
  inputs.home = { url = "git+file:///root/private"; flake = false; };
  inputs.tools.url = "github:example/tools";
  outputs = inputs: { nixosModules.default = import ./agent.nix; };
}
"""
FLAKE_GITHUB_ONLY = """{
  inputs.tools.url = "github:example/tools";
  outputs = inputs: { nixosModules.default = import ./agent.nix; };
}
"""


def test_a_flake_with_new_inputs_is_refused_naming_each(
    hive: Hive, proposed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (proposed / "flake.nix").write_text(FLAKE_WITH_INPUTS)
    sha = commit_dir(proposed, "bring my own inputs")
    err = refused(hive, sha, capsys)
    assert "refused by the flake policy" in err
    assert "input secrets: path:/etc" in err
    assert "input home: git+file:///root/private" in err
    assert "input tools: github:example/tools" in err
    assert "--allow-flake-inputs" in err
    # Host paths are refused even when the operator allows inputs.
    err = refused(hive, sha, capsys, "--allow-flake-inputs")
    assert "refused even with --allow-flake-inputs" in err
    assert "input home, secrets points at the host's filesystem" in err


def test_a_flake_lock_is_refused(
    hive: Hive, proposed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (proposed / "flake.lock").write_text('{"nodes": {}, "root": "root", "version": 7}\n')
    sha = commit_dir(proposed, "pin things")
    err = refused(hive, sha, capsys)
    assert "the commit carries a flake.lock" in err


def test_allowed_inputs_are_accepted_and_shown_on_review(
    hive: Hive, proposed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (proposed / "flake.nix").write_text(FLAKE_GITHUB_ONLY)
    sha = commit_dir(proposed, "use tools")
    refused(hive, sha, capsys)
    args = ["--config", config_path(hive)]
    assert main([*args, "propose", "alice", sha, "--allow-flake-inputs"]) == 0
    proposal_id = capsys.readouterr().out.strip()
    assert main([*args, "pending"]) == 0
    out = capsys.readouterr().out
    assert "!! FLAKE INPUTS (tools) use tools" in out
    assert f"!! proposal {proposal_id} (alice) brings its own flake inputs" in out
    assert "!!   input tools: github:example/tools" in out
    assert main([*args, "diff", proposal_id, "--color", "never"]) == 0
    diff = capsys.readouterr().out
    assert diff.startswith(f"!! proposal {proposal_id} (alice) brings its own flake inputs")
    assert '+  inputs.tools.url = "github:example/tools";' in diff
    assert main([*args, "pending", "--json"]) == 0
    entry = next(
        e for e in json.loads(capsys.readouterr().out)["proposals"] if str(e["id"]) == proposal_id
    )
    assert entry["flake_inputs"] == {
        "flake_nix_changed": True,
        "has_flake_lock": False,
        "inputs": {"tools": "github:example/tools"},
    }
    assert main([*args, "deny", proposal_id]) == 0


def test_a_hivegen_flake_proposal_shows_no_banner(hive: Hive, proposed: Path) -> None:
    (proposed / "agent.nix").write_text("{ ... }: { }  # nothing new\n")
    proposal = Proposals(hive).propose("alice", commit_dir(proposed, "plain"))
    assert Proposals(hive).flake_report(proposal) == policy.CLEAN
    Proposals(hive).deny(proposal.id)


@pytest.mark.parametrize(
    ("what", "make", "expected"),
    [
        ("symlink", lambda r: (r / "link").symlink_to("/etc/shadow"), "'link' is a symlink"),
        (
            "big nix file",
            lambda r: (r / "big.nix").write_text("# " + "x" * policy.MAX_NIX_FILE + "\n"),
            "'big.nix' is 1048579 bytes; a .nix file may have 1 MiB",
        ),
    ],
)
def test_trees_beyond_the_policy_are_refused(
    hive: Hive,
    proposed: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    what: str,
    make: object,
    expected: str,
) -> None:
    assert callable(make)
    make(proposed)
    err = refused(hive, commit_dir(proposed, what), capsys)
    assert expected in err, err


def test_a_submodule_is_refused(
    hive: Hive, proposed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha = git(proposed, "rev-parse", "HEAD")
    git(proposed, "update-index", "--add", "--cacheinfo", f"160000,{sha},vendor")
    git(proposed, "commit", "-qm", "a submodule")
    err = refused(hive, git(proposed, "rev-parse", "HEAD"), capsys)
    assert "'vendor' is a submodule" in err


def test_a_huge_commit_message_is_refused(
    hive: Hive, proposed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    git(proposed, "commit", "-q", "--allow-empty", "-m", "x" * (80 * 1024))
    err = refused(hive, git(proposed, "rev-parse", "HEAD"), capsys)
    assert "its commit message is" in err
    assert "at most 64 KiB" in err


def test_too_many_files_are_refused(hive: Hive, proposed: Path) -> None:
    for index in range(policy.MAX_FILES + 1):
        (proposed / f"f{index}").write_text("")
    sha = commit_dir(proposed, "many files")
    with pytest.raises(UsageError, match=f"more than {policy.MAX_FILES} files"):
        Proposals(hive).propose("alice", sha)


# -- the repo itself is hostile: git never runs in it, nothing in it is followed ----------


def test_alternates_are_refused(
    hive: Hive, proposed: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = tmp_path / "host-repo"
    other.mkdir()
    (other / "secret.nix").write_text('"the host\'s secret"\n')
    commit_dir(other)
    alternates = proposed / ".git/objects/info/alternates"
    alternates.write_text(f"{other}/.git/objects\n")
    try:
        err = refused(hive, git(proposed, "rev-parse", "HEAD"), capsys)
        assert f"{alternates} exists" in err
        capsys.readouterr()
        assert main(["--config", config_path(hive), "doctor"]) == 3
        assert f"{alternates} exists" in capsys.readouterr().out
    finally:
        alternates.unlink()


@pytest.mark.parametrize("planted", [".git", ".git/objects", ".git/refs"])
def test_links_inside_the_repo_are_never_followed(
    hive: Hive, proposed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], planted: str
) -> None:
    other = tmp_path / "host-repo"
    other.mkdir()
    (other / "agent.nix").write_text("{ ... }: { }  # the host's\n")
    (other / "flake.nix").write_text(render_agent_repo("alice")["flake.nix"])
    sha = commit_dir(other, "not the manager's")
    target = proposed / planted
    aside = target.with_name(target.name + ".aside")
    target.rename(aside)
    target.symlink_to(other / planted)
    try:
        err = refused(hive, sha, capsys)
        assert f"{target}" in err
        assert "symlink" in err
    finally:
        target.unlink()
        aside.rename(target)


def test_a_gitfile_is_refused(
    hive: Hive, proposed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    sha = commit_dir(other)
    aside = proposed / "git.aside"
    (proposed / ".git").rename(aside)
    (proposed / ".git").write_text(f"gitdir: {other}/.git\n")
    try:
        err = refused(hive, sha, capsys)
        assert f"unsafe path {proposed / '.git'}: it is a regular file" in err
    finally:
        (proposed / ".git").unlink()
        aside.rename(proposed / ".git")


def test_planted_config_never_runs_and_a_symlinked_config_is_never_written(
    hive: Hive, proposed: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    hook = f"sh -c 'touch {marker}'"
    (proposed / ".gitattributes").write_text("* filter=x\n")
    sha = commit_dir(proposed, "with attributes")  # the manager commits, then plants
    config = proposed / ".git/config"
    original = config.read_text()
    config.write_text(
        original
        + f"[core]\n\tfsmonitor = {hook}\n\tpager = {hook}\n"
        + f'[filter "x"]\n\tclean = {hook}\n\tsmudge = {hook}\n'
        + f"[uploadpack]\n\tpackObjectsHook = {hook}\n"
        + f"[include]\n\tpath = {tmp_path / 'missing-include'}\n"
    )
    proposal = Proposals(hive).propose("alice", sha)
    assert not marker.exists()
    Proposals(hive).deny(proposal.id)
    # The remote wiring edits .git/config: through a link it would rewrite the target.
    victim = tmp_path / "passwd"
    victim.write_text("root:x:0:0::/root:/bin/sh\n")
    config.write_text(original.replace("/applied/alice/.git", "/elsewhere"))
    real = config.with_name("config.real")
    config.rename(real)
    config.symlink_to(victim)
    try:
        hive.stop("alice")
        with pytest.raises(UsageError, match="is a symlink"):
            hive.spawn("alice")
        assert victim.read_text() == "root:x:0:0::/root:/bin/sh\n"
    finally:
        config.unlink()
        real.rename(config)
    hive.spawn("alice")  # a real config is re-pointed, through the directory fd
    assert git(proposed, "remote", "get-url", "applied") == "/applied/alice/.git"
    assert not marker.exists()
    assert not os.path.lexists(tmp_path / "missing-include")


def test_a_repo_the_manager_made_for_a_new_agent_is_checked_like_a_proposal(
    hive: Hive, capsys: pytest.CaptureFixture[str]
) -> None:
    # The manager can create agents/<n>/config before the operator spawns <n>: the first
    # spawn seeds the applied repo from it, so the same policy applies.
    repo = hive.layout.proposed("carol")
    repo.mkdir(parents=True)
    (repo / "agent.nix").write_text("{ ... }: { }\n")
    (repo / "flake.nix").write_text(FLAKE_WITH_INPUTS)
    commit_dir(repo, "ready for carol")
    capsys.readouterr()
    assert main(["--config", config_path(hive), "spawn", "carol"]) == 2
    err = capsys.readouterr().err
    assert "refused by the flake policy" in err
    assert "input secrets: path:/etc" in err
    assert not hive.layout.applied("carol").exists()
    assert "carol" not in {s.name for s in hive.status()}
    assert not (hive.layout.applied_root / ".seeding-carol").exists()
