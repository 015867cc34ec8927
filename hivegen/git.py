"""Hardened git: every call through here, none elsewhere.

Repos a manager can write (its proposed repos) must never make root run code: hooks
and fsmonitor are switched off on every call, system and global config are ignored,
and a revision that came from outside is passed after `--end-of-options`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hivegen import process
from hivegen.errors import UsageError

HARDENING = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "safe.directory=*",
)  # fmt: skip

# The same settings as environment variables, for the git processes that other programs
# start in hivegen's repos (nix's git fetcher runs `git diff` in each applied repo while
# locking and building): git reads GIT_CONFIG_COUNT/KEY_n/VALUE_n on top of every file.
CHILD_GIT_ENV: dict[str, str | None] = {
    "GIT_CONFIG_COUNT": "3",
    "GIT_CONFIG_KEY_0": "core.hooksPath",
    "GIT_CONFIG_VALUE_0": "/dev/null",
    "GIT_CONFIG_KEY_1": "core.fsmonitor",
    "GIT_CONFIG_VALUE_1": "false",
    "GIT_CONFIG_KEY_2": "safe.directory",
    "GIT_CONFIG_VALUE_2": "*",
}

# Ignore /etc/gitconfig and ~/.gitconfig: the host's settings must not change what
# hivegen's repos record, and prompts must never wait on a terminal.
ENV: dict[str, str | None] = {
    **CHILD_GIT_ENV,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_DIR": None,
    "GIT_WORK_TREE": None,
    "GIT_INDEX_FILE": None,
}

COMMIT_REF = re.compile(r"[0-9a-f]{7,40}\Z")


def validate_commit_ref(value: str) -> str:
    """A commit id from outside: 7 to 40 lowercase hex digits, nothing else."""
    if not COMMIT_REF.match(value):
        raise UsageError(
            f"invalid commit {value!r}: must be 7 to 40 lowercase hex digits (a commit id)"
        )
    return value


@dataclass(frozen=True, slots=True)
class Git:
    committer_name: str
    committer_email: str

    def argv(self, repo: Path | None, args: Sequence[str]) -> list[str]:
        identity = [
            "-c", f"user.name={self.committer_name}",
            "-c", f"user.email={self.committer_email}",
        ]  # fmt: skip
        where = ["-C", str(repo)] if repo is not None else []
        return ["git", *HARDENING, *identity, *where, *args]

    def run(
        self, repo: Path | None, *args: str, input: str | None = None, check: bool = True
    ) -> process.CmdOut:
        return process.run(
            self.argv(repo, args), process.RunOpts(env=ENV, input=input, check=check)
        )

    def out(self, repo: Path, *args: str) -> str:
        return self.run(repo, *args).stdout.strip()

    def ok(self, repo: Path, *args: str) -> bool:
        return self.run(repo, *args, check=False).ok

    # Convenience wrappers used by several modules.

    def init(self, repo: Path) -> None:
        self.run(repo, "init", "--quiet", "--initial-branch=main")

    def rev_parse(self, repo: Path, rev: str) -> str | None:
        """Full sha of `rev` (resolved as a commit), or None when it does not exist."""
        result = self.run(
            repo,
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            f"{rev}^{{commit}}",
            check=False,
        )
        return result.stdout.strip() if result.ok else None

    def has_staged_changes(self, repo: Path) -> bool:
        return not self.ok(repo, "diff", "--cached", "--quiet")

    def commit(self, repo: Path, message: str, *, allow_empty: bool = False) -> str:
        extra = ["--allow-empty"] if allow_empty else []
        self.run(repo, "commit", "--quiet", "--no-verify", *extra, "-m", message)
        return self.out(repo, "rev-parse", "HEAD")

    def tag(self, repo: Path, name: str, target: str, message: str | None = None) -> None:
        if message is None:
            self.run(repo, "tag", "--end-of-options", name, target)
        else:
            # verbatim: a note or build error line starting with '#' is kept, not stripped.
            self.run(
                repo,
                "tag",
                "-a",
                "--cleanup=verbatim",
                "-F",
                "-",
                "--end-of-options",
                name,
                target,
                input=message,
            )
