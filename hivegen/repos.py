"""The proposed and applied repos of each agent: seeding and their shape checks.

Proposed (`agents/<n>/config`): the manager's repo. hivegen seeds it once and never
writes to it again. Applied (`applied/<n>`): hivegen's own; `main` is what is deployed
and tags keep the history (`deployed/0` marks a seeded repo).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from hivegen import fsutil, render
from hivegen.config import Config
from hivegen.errors import HivegenError
from hivegen.git import Git
from hivegen.registry import DEPLOYED_ZERO, has_ref

INIT_MESSAGE = "hive-c0re init"
APPLIED_REMOTE = "applied"
MAIN = "refs/heads/main"


# $GIT_DIR/info/attributes outranks every .gitattributes in the tree: the manager's
# commits cannot ask a checkout in an applied repo to run a filter or rewrite bytes.
NEUTRAL_ATTRIBUTES = (
    "# Written by hivegen: checkouts here take every file byte for byte.\n"
    "* -filter -text -eol -ident -working-tree-encoding diff -merge\n"
)


def check_out_main(git: Git, applied: Path) -> None:
    """Make the applied work tree and index exactly `main`'s tree, HEAD untouched."""
    fsutil.write_atomic(applied / ".git" / "info" / "attributes", NEUTRAL_ATTRIBUTES)
    git.run(applied, "read-tree", "--reset", "-u", MAIN)


def git_for(config: Config) -> Git:
    return Git(config.hive.committer_name, config.hive.committer_email)


def applied_remote_url(name: str) -> str:
    # The path inside the manager container, where the RO /applied bind makes it real.
    return f"/applied/{name}/.git"


@dataclass(frozen=True, slots=True)
class SeedResult:
    proposed_created: bool
    remote_changed: bool
    applied_created: bool


def seed_proposed(config: Config, git: Git, name: str) -> tuple[bool, bool]:
    """Seed the proposed repo unless it has a commit; wire its `applied` remote.

    Returns (seeded now, remote changed). Once `main` has a commit the repo is the
    manager's: nothing here writes to its files or history again.
    """
    repo = config.layout.proposed(name)
    seeded = False
    if not has_ref(repo / ".git", MAIN):
        # First spawn, or one interrupted before its first commit: files already there
        # (ours from the interrupted run, or the manager's) are kept, never overwritten.
        fsutil.ensure_dir(repo, 0o755)
        for rel, text in render.render_agent_repo(name).items():
            path = repo / rel
            if not path.exists():
                fsutil.write_atomic(path, text)
        git.init(repo)
        git.run(repo, "add", "--", render.AGENT_NIX, render.FLAKE_NIX)
        git.commit(repo, INIT_MESSAGE)
        seeded = True
    return seeded, _ensure_applied_remote(git, repo, name)


def _ensure_applied_remote(git: Git, repo: Path, name: str) -> bool:
    want = applied_remote_url(name)
    current = git.run(repo, "remote", "get-url", APPLIED_REMOTE, check=False)
    if current.ok and current.stdout.strip() == want:
        return False
    verb = "set-url" if current.ok else "add"
    git.run(repo, "remote", verb, APPLIED_REMOTE, want)
    return True


def seed_applied(config: Config, git: Git, name: str) -> bool:
    """Create the applied repo from proposed `main`, tagged `deployed/0`.

    Returns True when it was created now. The repo is built in a hidden sibling
    directory and renamed into place only once tagged, so an interrupted seed never
    leaves a half-made repo under the agent's name.
    """
    applied = config.layout.applied(name)
    if applied.exists() or applied.is_symlink():
        if applied.is_dir() and not applied.is_symlink() and not any(applied.iterdir()):
            applied.rmdir()  # an empty directory holds nothing to lose
        else:
            check_applied(config, name)
            return False
    proposed = config.layout.proposed(name)
    if not has_ref(proposed / ".git", MAIN):
        raise HivegenError(f"proposed repo {proposed} has no commit on main to seed from")
    root = config.layout.applied_root
    fsutil.ensure_dir(root, 0o755)
    staging = root / f".seeding-{name}"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted seed: ours, and never published
    staging.mkdir(mode=0o755)
    git.init(staging)
    # --update-head-ok: HEAD names refs/heads/main, unborn in a new repo.
    git.run(
        staging,
        "fetch",
        "--quiet",
        "--no-tags",
        "--update-head-ok",
        "--",
        str(proposed),
        f"main:{MAIN}",
    )
    check_out_main(git, staging)
    git.tag(staging, "deployed/0", MAIN)
    staging.rename(applied)
    fsutil.fsync_dir(root)
    return True


def check_applied(config: Config, name: str) -> None:
    """Raise the reference's clear errors for an applied repo of the wrong shape."""
    applied = config.layout.applied(name)
    if applied.is_symlink() or not applied.is_dir():
        raise HivegenError(
            f"{applied} is not a directory hivegen made",
            hint=f"move it away, then re-run: hivegen spawn {name}",
        )
    if not (applied / ".git").is_dir():
        raise HivegenError(
            f"applied repo at {applied} is missing its .git directory; cannot rebuild "
            "without a proposed source to seed from",
            hint=f"hivegen destroy --purge {name}, then hivegen spawn {name}",
        )
    if not has_ref(applied / ".git", DEPLOYED_ZERO):
        raise HivegenError(
            f"applied repo at {applied} has no deployed/0 tag: it predates the meta-flake "
            "layout or was not made by hivegen",
            hint=f"hivegen destroy --purge {name}, then hivegen spawn {name}",
        )


def seed(config: Config, git: Git, name: str) -> SeedResult:
    config.agent(name)  # validates the name before it reaches any path
    proposed_created, remote_changed = seed_proposed(config, git, name)
    applied_created = seed_applied(config, git, name)
    return SeedResult(proposed_created, remote_changed, applied_created)
