"""The proposed and applied repos of each agent: seeding and their shape checks.

Proposed (`agents/<n>/config`): the manager's repo. hivegen seeds it once and never
writes to it again. Applied (`applied/<n>`): hivegen's own; `main` is what is deployed
and tags keep the history (`deployed/0` marks a seeded repo).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from hivegen import fsutil, policy, render, safepath, snapshot
from hivegen.config import Config
from hivegen.errors import CommandError, HivegenError, UsageError
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

    Returns (seeded now, remote changed). The repo lives in the manager's RW `/agents`
    bind, so hivegen never runs git in it (snapshot.py): it builds the first commit in a
    private directory and renames it into place through a directory fd, and only then
    does the manager see it. Once `main` has a commit the repo is the manager's: nothing
    here writes to its files or history again.
    """
    root = config.layout.root
    where = config.layout.proposed(name)
    fsutil.ensure_dir(root, 0o755)
    agent_rel = PurePosixPath("agents", name)
    with safepath.opened_dir(root, agent_rel, create_mode=0o755, owned=0) as agent_fd:
        st = safepath.lstat_at(agent_fd, "config")
        seeded = False
        if st is None or _is_empty_dir(agent_fd, "config", st):
            _seed_into(config, git, name, agent_fd)
            seeded = True
        elif not stat.S_ISDIR(st.st_mode):
            raise safepath.UnsafePath(
                f"unsafe path {where}: it is {safepath.describe(st, agent_fd, 'config')}",
                hint="the manager replaced the proposed repo; hivegen doctor lists such paths",
            )
    if not seeded:
        git_fd = snapshot.open_proposed_git(root, name)
        try:
            has_main = snapshot.read_main(git_fd, where / ".git") is not None
        finally:
            os.close(git_fd)
        if not has_main:
            raise UsageError(
                f"{where} exists but has no commit on main: hivegen seeds only a missing "
                "or empty directory, and never writes into the manager's files",
                hint=f"commit in it from the manager, or move it away: hivegen spawn {name}",
            )
    changed = snapshot.set_remote_url(git, root, name, APPLIED_REMOTE, applied_remote_url(name))
    return seeded, changed


def _is_empty_dir(dir_fd: int, name: str, st: os.stat_result) -> bool:
    if not stat.S_ISDIR(st.st_mode):
        return False
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return not os.listdir(fd)  # noqa: PTH208 -- a directory fd, not a path
    finally:
        os.close(fd)


def _seed_into(config: Config, git: Git, name: str, agent_fd: int) -> None:
    root = config.layout.root
    staging = root / f".hivegen-seed-{name}"
    if staging.exists() or staging.is_symlink():
        shutil.rmtree(staging)  # left by an interrupted seed: ours, never published
    staging.mkdir(mode=0o755)
    for rel, text in render.render_agent_repo(name).items():
        fsutil.write_atomic(staging / rel, text)
    git.init(staging)
    git.run(staging, "add", "--", render.AGENT_NIX, render.FLAKE_NIX)
    git.commit(staging, INIT_MESSAGE)
    # rename(2) replaces an empty directory and fails on anything else (a symlink the
    # manager planted meanwhile included): nothing is ever written through a link.
    with safepath.opened_dir(root, "") as root_fd:
        os.rename(staging.name, "config", src_dir_fd=root_fd, dst_dir_fd=agent_fd)
    os.fsync(agent_fd)


def seed_applied(config: Config, git: Git, name: str) -> bool:
    """Create the applied repo from proposed `main`, tagged `deployed/0`.

    Returns True when it was created now. The repo is built in a hidden sibling
    directory and renamed into place only once tagged, so an interrupted seed never
    leaves a half-made repo under the agent's name. Its commits come from a private
    snapshot of the proposed repo, checked like a proposal (policy.py).
    """
    applied = config.layout.applied(name)
    if applied.exists() or applied.is_symlink():
        if applied.is_dir() and not applied.is_symlink() and not any(applied.iterdir()):
            applied.rmdir()  # an empty directory holds nothing to lose
        else:
            check_applied(config, name)
            return False
    proposed = config.layout.proposed(name)
    root = config.layout.applied_root
    fsutil.ensure_dir(root, 0o755)
    staging = root / f".seeding-{name}"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted seed: ours, and never published
    staging.mkdir(mode=0o755)
    git.init(staging)
    try:
        with snapshot.snapshot(config.layout.root, git, name) as snap:
            if snap.main is None:
                raise HivegenError(f"proposed repo {proposed} has no commit on main to seed from")
            fetch_commit(git, staging, snap, snap.main, MAIN, update_head=True)
        policy.check_commit(git, staging, name, MAIN)
    except HivegenError:
        shutil.rmtree(staging)  # ours, never published: a refused seed leaves nothing
        raise
    check_out_main(git, staging)
    git.tag(staging, "deployed/0", MAIN)
    staging.rename(applied)
    fsutil.fsync_dir(root)
    return True


def fetch_commit(
    git: Git, repo: Path, snap: snapshot.Snapshot, sha: str, ref: str, *, update_head: bool = False
) -> None:
    """Copy `sha` and what it needs from a snapshot into `repo` as `ref`."""
    git.run(snap.path, "update-ref", "--no-deref", "refs/heads/hivegen-fetch", sha)
    # --update-head-ok: HEAD names refs/heads/main, unborn in a new repo. fsckObjects
    # refuses malformed objects (a tree entry named `.git`, `..`) before they land.
    head_ok = ["--update-head-ok"] if update_head else []
    try:
        git.run(
            repo,
            "-c",
            "fetch.fsckObjects=true",
            "fetch",
            "--quiet",
            "--no-tags",
            *head_ok,
            "--",
            str(snap.path),
            f"refs/heads/hivegen-fetch:{ref}",
        )
    except CommandError as exc:
        found = [m.group(1) for line in exc.stderr_tail if (m := _FSCK_FINDING.match(line))]
        if not found:
            raise
        # A policy refusal, said as one: what fsck found, never git's command line, the
        # state root's paths or the snapshot's (a socket's client reads this).
        raise UsageError(
            f"commit {sha[:12]} is refused: it holds a malformed object ({'; '.join(found)})",
            hint="git fsck refuses it; commit a tree git itself would write",
        ) from None


# git fsck's finding in a fetch it refuses: `error: object <id>: <id of check>: <text>`.
_FSCK_FINDING = re.compile(r"error: object [0-9a-f]{40,64}: ([A-Za-z]+: [^/]{0,200})\Z")


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
