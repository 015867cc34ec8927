"""Commits nobody proposed (status, pending) and `approve --dry-run`, on the simulated host."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from benchmarks import hives
from hivegen import process, unproposed
from hivegen.cli import main
from hivegen.gitobjects import ObjectStore, open_git_dir
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.store import ProposalStatus
from tests.conftest import commit_dir, git
from tests.test_proposals import BROKEN, GOOD, hive, manager_commit, system_of

__all__ = ["hive"]  # the fixture, shared with test_proposals


def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(tmp_path / "hive.toml"), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def status_of(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    code, out, _ = cli(tmp_path, capsys, "status", "--json")
    assert code == 0
    [alice] = json.loads(out)["agents"]
    return dict(alice)


# -- unproposed commits ---------------------------------------------------------------------


def test_unproposed_commits_in_status_and_pending(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert status_of(tmp_path, capsys)["unproposed"] == 0
    code, out, _ = cli(tmp_path, capsys, "pending")
    assert (code, out) == (0, "no pending proposals\n")

    manager_commit(hive, GOOD, "first")
    # The manager wrote the subject: its escape sequence must not reach the terminal.
    sha = manager_commit(hive, GOOD + "# two\n", "second \x1b]52;c;aGk=\x07 \u202e")
    assert status_of(tmp_path, capsys)["unproposed"] == 2
    code, out, _ = cli(tmp_path, capsys, "status")
    assert "nobody proposed (hivegen pending lists them): alice 2" in out
    code, out, _ = cli(tmp_path, capsys, "status", "alice")
    assert "unproposed:    2" in out
    code, out, _ = cli(tmp_path, capsys, "pending")
    assert code == 0
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert f"alice  {sha[:7]}  second \\x1b]52;c;aGk=\\x07 \\u202e" in out
    assert out.index("second") < out.index("first")  # newest first
    code, out, _ = cli(tmp_path, capsys, "pending", "--json", "--unproposed")
    [entry] = json.loads(out)["unproposed"]
    assert (entry["agent"], entry["count"], entry["error"]) == ("alice", 2, None)
    # --json keeps the exact text (JSON escapes it).
    assert [c["subject"] for c in entry["commits"]] == [
        "second \x1b]52;c;aGk=\x07 \u202e",
        "first",
    ]
    assert entry["commits"][0]["sha"] == sha

    # Proposing the tip covers both; approving it keeps them covered.
    assert cli(tmp_path, capsys, "propose", "alice")[0] == 0
    assert status_of(tmp_path, capsys)["unproposed"] == 0
    code, out, _ = cli(tmp_path, capsys, "pending", "--json", "--unproposed")
    assert json.loads(out) == {"schema": "hivegen.pending/1", "unproposed": []}
    assert "nobody proposed" not in cli(tmp_path, capsys, "pending")[1]
    assert cli(tmp_path, capsys, "approve", "1")[0] == 0
    assert status_of(tmp_path, capsys)["unproposed"] == 0

    # A commit on top of a denied proposal is unproposed; the denied one is not again.
    denied = manager_commit(hive, GOOD + "# three\n", "third")
    assert cli(tmp_path, capsys, "propose", "alice")[0] == 0
    assert cli(tmp_path, capsys, "deny", "2")[0] == 0
    assert status_of(tmp_path, capsys)["unproposed"] == 0
    manager_commit(hive, GOOD + "# four\n", "fourth")
    assert status_of(tmp_path, capsys)["unproposed"] == 1
    assert [c.subject for c in unproposed.of_agent(hive.layout, "alice").commits] == ["fourth"]
    code, out, _ = cli(tmp_path, capsys, "pending", "--json", "--unproposed")
    assert denied not in out
    assert [c["subject"] for c in json.loads(out)["unproposed"][0]["commits"]] == ["fourth"]


def test_status_reads_them_without_a_process(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hive.host  # noqa: B018 -- installing the simulated host is not part of the count
    before = process.started_count()
    hive.status()
    quiet = process.started_count() - before
    for n in range(3):
        manager_commit(hive, GOOD + f"# {n}\n", f"change {n}")
    git(hive.layout.proposed("alice"), "gc", "--quiet")  # packed objects read the same
    before = process.started_count()
    [alice] = hive.status()
    assert process.started_count() - before == quiet <= 1
    assert alice.unproposed == 3


def test_a_hostile_proposed_repo_is_unreadable_not_followed(hive: Hive, tmp_path: Path) -> None:
    manager_commit(hive, GOOD, "change")
    proposed_git = hive.layout.proposed("alice") / ".git"
    sha = git(hive.layout.proposed("alice"), "rev-parse", "HEAD")
    other = git(hive.layout.proposed("alice"), "rev-parse", "HEAD~1")
    loose = proposed_git / "objects" / sha[:2] / sha[2:]
    secret = tmp_path / "secret"
    secret.write_bytes(loose.read_bytes())
    loose.unlink()
    loose.symlink_to(secret)
    found = unproposed.of_agent(hive.layout, "alice")
    assert found.count is None
    assert found.error is not None
    assert "link" in found.error
    # An object file with other content than its name says is refused too.
    loose.unlink()
    loose.write_bytes((proposed_git / "objects" / other[:2] / other[2:]).read_bytes())
    assert "other content" in (unproposed.of_agent(hive.layout, "alice").error or "")
    assert hive.status()[0].unproposed is None


def test_the_walk_agrees_with_git(tmp_path: Path) -> None:
    """Random histories, loose and packed (deltas by offset and by sha): the same commits
    as `git rev-list TIP --not SEEN...`, read by hivegen without git."""
    rng = random.Random(15)  # noqa: S311 -- a reproducible history, not a secret
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "--initial-branch=main")
    commits: list[str] = []
    for n in range(80):
        parents = rng.sample(commits, k=min(len(commits), rng.choice((1, 1, 1, 2))))
        (repo / "f").write_text(f"{n}\n" * rng.randint(1, 40))
        git(repo, "add", "f")
        tree = git(repo, "write-tree")
        args = [arg for p in parents for arg in ("-p", p)]
        commits.append(git(repo, "commit-tree", tree, *args, "-m", f"c{n}\n\nbody"))
    tip = commits[-1]
    seen = set(rng.sample(commits[:-1], k=5))
    # The applied repo holds what is reachable from the seen commits, and one leftover
    # that is not (as a refused propose leaves): the walk must tell them apart.
    applied = tmp_path / "applied.git"
    git(tmp_path, "init", "-q", "--bare", str(applied))
    for n, sha in enumerate(sorted(seen)):
        git(repo, "tag", f"seen{n}", sha)
    git(applied, "fetch", "-q", "--no-tags", str(repo), "refs/tags/seen*:refs/tags/seen*")
    leftover = next(
        c for c in reversed(commits[:-1]) if c not in set(git(applied, "rev-list", "--all").split())
    )
    git(repo, "tag", "leftover", leftover)
    git(applied, "fetch", "-q", "--no-tags", str(repo), "refs/tags/leftover:refs/tags/leftover")
    git(applied, "tag", "-d", "leftover")

    def walk() -> set[str]:
        fds = open_git_dir(repo / ".git"), open_git_dir(applied)
        try:
            with (
                ObjectStore.open(fds[0], repo / ".git") as objects,
                ObjectStore.open(fds[1], applied) as held,
            ):
                return {c.sha for c in unproposed.walk(tip, seen, held, objects)}
        finally:
            for fd in fds:
                os.close(fd)

    want = set(git(repo, "rev-list", tip, "--not", *seen).split())
    assert want
    assert walk() == want
    git(repo, "update-ref", "refs/heads/main", tip)
    git(repo, "repack", "-adf", "-q", "--window=50", "--depth=20")  # offset deltas
    assert walk() == want
    pack = subprocess.run(
        ["git", "pack-objects", "-q", "--window=50", "--all", str(repo / ".git/objects/pack/x")],
        cwd=repo,
        input="",
        capture_output=True,
        check=True,
    )  # without --delta-base-offset: deltas by sha
    assert pack.stdout
    for old in (repo / ".git/objects/pack").glob("pack-*"):
        old.unlink()
    assert walk() == want


def test_50_agents_with_unproposed_commits_cost_no_extra_process(
    tmp_path: Path, hyperhive_flake: str
) -> None:
    built = hives.build_hive(tmp_path / "hive", hyperhive_flake, hives.agent_names(50))
    hive = Hive(built.config)
    hive.host  # noqa: B018 -- installing the simulated host is not part of the count
    with_commits = built.agents[::10]
    for name in built.agents:
        proposed = hive.layout.proposed(name)
        proposed.parent.mkdir(parents=True, exist_ok=True)
        git(tmp_path, "clone", "-q", str(hive.layout.applied(name)), str(proposed))
        if name in with_commits:
            commit_dir(proposed, "one")
            commit_dir(proposed, "two")
    before = process.started_count()
    statuses = hive.status()
    assert process.started_count() - before <= 1
    assert {s.name: s.unproposed for s in statuses} == {
        name: 2 if name in with_commits else 0 for name in built.agents
    }


# -- approve --dry-run ----------------------------------------------------------------------


def assert_unchanged(before: dict[str, object], after: dict[str, object]) -> None:
    """`after == before`, failing with the paths that differ (not both whole trees)."""
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, {k: (before.get(k, "(absent)"), after.get(k, "(absent)")) for k in changed}


def world(tmp_path: Path, hive: Hive) -> dict[str, object]:
    """Every file, link and directory of the state root and the simulated host (git
    objects and indexes included), and every proposal's record: what a dry run must
    leave exactly as it was."""
    # The hive lock's file records its last holder; the database is compared by rows.
    skipped = {".hivegen.lock", "hive.sqlite", "hive.sqlite-wal", "hive.sqlite-shm"}
    found: dict[str, object] = {}
    for top in (tmp_path / "state", tmp_path / "host"):
        for where, dirs, files in os.walk(top):
            for name in sorted(dirs + files):
                path = Path(where, name)
                rel = str(path.relative_to(tmp_path))
                if name in skipped:
                    continue
                if path.is_symlink():
                    found[rel] = ("link", str(path.readlink()))
                elif path.is_dir():
                    found[rel] = "dir"
                else:
                    found[rel] = path.read_bytes()
    found["proposals"] = [
        (p.id, p.status, p.fetched_sha, p.previous_sha, p.error, p.resolved)
        for p in Proposals(hive).store.of_agent("alice")
    ]
    return found


def proposed(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str], agent_nix: str
) -> tuple[str, dict[str, object]]:
    """Proposal 1 of a commit of `agent_nix`, and the world as it is then."""
    sha = manager_commit(hive, agent_nix)
    assert cli(tmp_path, capsys, "propose", "alice")[0] == 0
    hive.host  # noqa: B018 -- the simulated host is installed before the snapshot
    return sha, world(tmp_path, hive)


@pytest.mark.nix
def test_dry_run_builds_what_approve_deploys_and_changes_nothing(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha, before = proposed(hive, tmp_path, capsys, GOOD)

    code, out, err = cli(tmp_path, capsys, "approve", "1", "--dry-run")
    assert code == 0, err
    system = Path(out.strip())
    assert system.is_dir()
    assert json.loads((system / "variables.json").read_text())["GREETING"] == "hello"
    assert "nothing was deployed (--dry-run)" in err
    code, out, _ = cli(tmp_path, capsys, "approve", "1", "--dry-run", "--json")
    assert code == 0
    assert json.loads(out) == {
        "schema": "hivegen.dry-run/1",
        "id": 1,
        "agent": "alice",
        "sha": sha,
        "ok": True,
        "system": str(system),
        "error": None,
    }
    assert_unchanged(before, world(tmp_path, hive))
    assert Proposals(hive).store.get(1).status is ProposalStatus.PENDING

    # What it built is exactly what approve installs.
    assert cli(tmp_path, capsys, "approve", "1")[0] == 0
    assert system_of(hive, "h-alice") == system


@pytest.mark.nix
def test_dry_run_of_a_broken_proposal_prints_the_error_and_changes_nothing(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sha, before = proposed(hive, tmp_path, capsys, BROKEN)

    code, out, err = cli(tmp_path, capsys, "approve", "1", "--dry-run")
    assert code == 1
    assert out == ""
    assert "does not build (--dry-run: nothing was changed, it is still pending)" in err
    assert "alice cannot build" in err
    code, out, err = cli(tmp_path, capsys, "approve", "1", "--dry-run", "--json")
    assert code == 1
    result = json.loads(out)
    assert (result["ok"], result["sha"], result["system"]) == (False, sha, None)
    assert "alice cannot build" in result["error"]
    assert_unchanged(before, world(tmp_path, hive))

    # Only a pending proposal is built; a decided one is refused, still unchanged.
    assert cli(tmp_path, capsys, "deny", "1")[0] == 0
    code, _, err = cli(tmp_path, capsys, "approve", "1", "--dry-run")
    assert code == 1
    assert "proposal 1 is denied" in err
