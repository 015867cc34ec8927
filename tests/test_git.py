from __future__ import annotations

from pathlib import Path

import pytest

from hivegen.errors import CommandError, UsageError
from hivegen.git import Git, validate_commit_ref
from tests.conftest import commit_dir, git

GIT = Git("c0re", "c0re@hyperhive")


def hostile_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A repo whose hooks and config try to run code; returns (repo, canary)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "f").write_text("x\n")
    commit_dir(repo)
    canary = tmp_path / "pwned"
    script = f"#!/bin/sh\ntouch {canary}\n"
    for hook in (
        "pre-commit",
        "post-commit",
        "commit-msg",
        "post-checkout",
        "reference-transaction",
    ):
        path = repo / ".git" / "hooks" / hook
        path.write_text(script)
        path.chmod(0o755)
    monitor = tmp_path / "fsmonitor.sh"
    monitor.write_text(script)
    monitor.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(monitor))
    git(repo, "config", "core.hooksPath", str(repo / ".git" / "hooks"))
    # Prove the traps are live for a plain git.
    git(repo, "status")
    assert canary.exists(), "fixture broken: fsmonitor did not fire for plain git"
    canary.unlink()
    return repo, canary


def test_planted_hooks_and_fsmonitor_never_run(tmp_path: Path) -> None:
    repo, canary = hostile_repo(tmp_path)
    (repo / "f").write_text("y\n")
    GIT.run(repo, "status")
    GIT.run(repo, "add", "f")
    GIT.commit(repo, "change")
    GIT.tag(repo, "t1", "HEAD")
    GIT.tag(repo, "t2", "HEAD", message="annotated\nbody")
    GIT.run(repo, "read-tree", "--reset", "-u", "HEAD")
    assert not canary.exists()


def test_commits_carry_the_hive_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Someone Else\n\temail = x@y\n")
    monkeypatch.setenv("HOME", str(home))
    repo = tmp_path / "repo"
    repo.mkdir()
    GIT.init(repo)
    GIT.commit(repo, "first", allow_empty=True)
    assert GIT.out(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>") == (
        "c0re <c0re@hyperhive>|c0re <c0re@hyperhive>"
    )


def test_rev_parse_treats_hostile_revisions_as_revisions(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    sha = commit_dir(repo)
    assert GIT.rev_parse(repo, sha[:7]) == sha
    assert GIT.rev_parse(repo, "--upload-pack=touch /tmp/x") is None
    assert GIT.rev_parse(repo, "deadbeef") is None


def test_errors_carry_the_git_command_and_stderr(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    commit_dir(repo)
    with pytest.raises(CommandError) as info:
        GIT.run(repo, "checkout", "no-such-branch")
    assert "checkout no-such-branch" in str(info.value)
    assert "no-such-branch" in "\n".join(info.value.stderr_tail)
    assert info.value.argv[:3] == ("git", "-c", "core.hooksPath=/dev/null")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "ABCDEF1",
        "--upload-pack=x",
        "a" * 41,
        "1234567^",
        "main",
        "HEAD",
        "1234567:refs/tags/x",
        "-1234567",
        " 1234567",
        "1234567\n",
    ],
)
def test_commit_refs_from_outside_must_be_hex(bad: str) -> None:
    with pytest.raises(UsageError, match="7 to 40 lowercase hex"):
        validate_commit_ref(bad)


def test_commit_ref_accepts_short_and_full() -> None:
    assert validate_commit_ref("abcdef0") == "abcdef0"
    assert validate_commit_ref("0" * 40) == "0" * 40
