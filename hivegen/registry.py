"""Which agents the hive has, read straight from the filesystem.

An agent is *registered* when its applied repo carries `deployed/0` (or, that tag
lost, other records of hivegen's: see `_has_history`); `destroy` leaves a
*tombstone* marker in that repo's .git (its repos, credentials and notes stay, and
`spawn` revives it). Refs are read as files (loose refs and packed-refs), so listing the
hive starts no process; the set is never derived from `nixos-container list`, whose
failure must not look like an empty hive.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hivegen import names
from hivegen.config import Config
from hivegen.desired import DESIRED_RECORD
from hivegen.errors import HivegenError

DEPLOYED_ZERO = "refs/tags/deployed/0"
# In an agent's applied .git: "<deployed tag> <system store path>" of its last deploy.
SYSTEM_RECORD = "hivegen-system"
DEPLOYED_PREFIX = "refs/tags/deployed/"
TOMBSTONE = "hivegen-tombstone"


def _packed_refs(git_dir: Path) -> dict[str, str]:
    try:
        text = (git_dir / "packed-refs").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    refs = {}
    for line in text.splitlines():
        if line.startswith(("#", "^")) or " " not in line:
            continue
        sha, ref = line.split(" ", 1)
        refs[ref] = sha
    return refs


def _read_loose(path: str) -> str | None:
    # os-level calls on str paths, not pathlib: `status` reads a few refs of every agent,
    # and at a thousand agents pathlib's per-call overhead was most of its time.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return os.read(fd, 4096).decode("utf-8", errors="replace").strip()
    except IsADirectoryError:
        return None
    finally:
        os.close(fd)


def read_ref(git_dir: Path, ref: str) -> str | None:
    """The sha a ref names (loose ref first, as git does), or None."""
    value = _read_loose(f"{git_dir}/{ref}")
    if value is None:
        return _packed_refs(git_dir).get(ref)
    if value.startswith("ref: "):
        return read_ref(git_dir, value[5:])
    return value or None


def has_ref(git_dir: Path, ref: str) -> bool:
    return read_ref(git_dir, ref) is not None


def refs_under(git_dir: Path, prefix: str) -> dict[str, str]:
    """Every ref below `prefix` (e.g. refs/tags/deployed/) → sha."""
    refs = {ref: sha for ref, sha in _packed_refs(git_dir).items() if ref.startswith(prefix)}
    _loose_refs_under(f"{git_dir}/{prefix}", prefix.rstrip("/") + "/", refs)
    return refs


def _loose_refs_under(directory: str, ref_prefix: str, refs: dict[str, str]) -> None:
    """Add every loose ref file below `directory` (not following directory symlinks)."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _loose_refs_under(entry.path, f"{ref_prefix}{entry.name}/", refs)
        elif entry.is_file():
            value = _read_loose(entry.path)
            if value is not None:
                refs[ref_prefix + entry.name] = value


@dataclass(frozen=True, slots=True)
class Deployed:
    """What an agent's applied `main` is, and the newest deployed/<id> tag naming it."""

    sha: str | None
    tag: str | None


def deployed(git_dir: Path) -> Deployed:
    main = read_ref(git_dir, "refs/heads/main")
    newest: tuple[int, str] | None = None
    for ref, sha in refs_under(git_dir, DEPLOYED_PREFIX).items():
        suffix = ref[len(DEPLOYED_PREFIX) :]
        if sha == main and suffix.isdigit() and (newest is None or int(suffix) > newest[0]):
            newest = (int(suffix), f"deployed/{suffix}")
    return Deployed(main, newest[1] if newest else None)


@dataclass(frozen=True, slots=True)
class Registry:
    registered: tuple[str, ...]
    tombstones: tuple[str, ...]


def scan(config: Config) -> Registry:
    """Registered agents and tombstones, sorted. Starts no process."""
    root = config.layout.applied_root
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return Registry((), ())
    except OSError as exc:
        raise HivegenError(f"cannot list {root}: {exc.strerror}") from exc
    registered: list[str] = []
    tombstones: list[str] = []
    for entry in entries:
        try:
            names.validate_agent_name(entry.name, config.hive.manager)
        except HivegenError:
            continue  # not ours: hivegen never creates such a directory
        git_dir = Path(entry.path, ".git")
        if not entry.is_dir(follow_symlinks=False) or not _has_history(git_dir):
            continue
        (tombstones if (git_dir / TOMBSTONE).exists() else registered).append(entry.name)
    return Registry(tuple(sorted(registered)), tuple(sorted(tombstones)))


def _has_history(git_dir: Path) -> bool:
    """A repo hivegen made: `deployed/0` (seeding renames the repo into place only after
    tagging it), or, where that tag was lost, another deploy or hivegen's records; doctor
    reports the missing tag. Never dropped from the hive for a lost tag."""
    if has_ref(git_dir, DEPLOYED_ZERO):
        return True
    if read_ref(git_dir, "refs/heads/main") is None:
        return False
    return bool(refs_under(git_dir, DEPLOYED_PREFIX)) or any(
        (git_dir / record).exists() for record in (DESIRED_RECORD, SYSTEM_RECORD)
    )


def registered_agents(config: Config) -> tuple[str, ...]:
    """Sorted names of every agent whose applied repo has `deployed/0` and no tombstone."""
    return scan(config).registered


PROPOSAL_PREFIX = "refs/tags/proposal/"


def proposal_tags(git_dir: Path) -> dict[int, str]:
    """proposal/<id> tags of one applied repo: id → the sha it pins (read as files)."""
    found = {}
    for ref, sha in refs_under(git_dir, PROPOSAL_PREFIX).items():
        suffix = ref[len(PROPOSAL_PREFIX) :]
        if suffix.isdigit():
            found[int(suffix)] = sha
    return found


def highest_proposal_id(config: Config) -> int:
    """The highest proposal id any applied repo's tags record (0 if none)."""
    highest = 0
    found = scan(config)
    for name in found.registered + found.tombstones:
        tags = proposal_tags(config.layout.applied(name) / ".git")
        if tags:
            highest = max(highest, *tags)
    return highest


# The order of an agent's deploys, kept in git and never taken from a clock: each deploy
# of proposal <id> tags its commit `deploy-seq/<seq>/<id>`, <seq> one above the agent's
# highest, just before it tags `deployed/<id>`. A seq tag counts only beside its
# deployed/<id> (one left by a deploy that was killed in between, then undone, is inert).
DEPLOY_SEQ_PREFIX = "refs/tags/deploy-seq/"


@dataclass(frozen=True, slots=True)
class DeployRecord:
    seq: int
    proposal_id: int
    sha: str


def deploy_order(git_dir: Path) -> list[DeployRecord]:
    """The agent's recorded deploys, oldest first (deployed/0, the seed, is seq 0)."""
    deployed = {
        int(ref[len(DEPLOYED_PREFIX) :]): sha
        for ref, sha in refs_under(git_dir, DEPLOYED_PREFIX).items()
        if ref[len(DEPLOYED_PREFIX) :].isdigit()
    }
    records = [DeployRecord(0, 0, deployed[0])] if 0 in deployed else []
    for ref, sha in refs_under(git_dir, DEPLOY_SEQ_PREFIX).items():
        seq, _, proposal = ref[len(DEPLOY_SEQ_PREFIX) :].partition("/")
        if not (seq.isdigit() and proposal.isdigit()):
            continue
        if deployed.get(int(proposal)) == sha and int(seq) > 0:
            records.append(DeployRecord(int(seq), int(proposal), sha))
    return sorted(records, key=lambda r: (r.seq, r.proposal_id))


def unordered_deploys(git_dir: Path) -> list[int]:
    """deployed/<id> tags (id > 0) with no seq tag: made by a hivegen from before the
    order was recorded."""
    ordered = {r.proposal_id for r in deploy_order(git_dir)}
    return sorted(
        int(ref[len(DEPLOYED_PREFIX) :])
        for ref in refs_under(git_dir, DEPLOYED_PREFIX)
        if ref[len(DEPLOYED_PREFIX) :].isdigit() and int(ref[len(DEPLOYED_PREFIX) :]) not in ordered
    )


def next_deploy_seq(git_dir: Path) -> int:
    """One above every seq tag of the agent's, counted or not: never one reused."""
    highest = 0
    for ref in refs_under(git_dir, DEPLOY_SEQ_PREFIX):
        seq = ref[len(DEPLOY_SEQ_PREFIX) :].partition("/")[0]
        if seq.isdigit():
            highest = max(highest, int(seq))
    return highest + 1


UNHEALTHY_PREFIX = "refs/tags/unhealthy/"


def next_number(git_dir: Path, prefix: str) -> int:
    """One more than the highest `<prefix><n>` tag (1 for the first)."""
    suffixes = (ref[len(prefix) :] for ref in refs_under(git_dir, prefix))
    numbers = [int(n) for n in suffixes if n.isdigit()]
    return max(numbers, default=0) + 1
