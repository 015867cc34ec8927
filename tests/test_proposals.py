"""propose → approve → deploy, deny, history and rollback on the simulated host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hivegen import meta as meta_mod
from hivegen import nspawn, process
from hivegen.cli import main
from hivegen.config import load_config
from hivegen.errors import HivegenError, UsageError
from hivegen.hive import Hive
from hivegen.proposals import BuildFailed, Proposals
from hivegen.store import ProposalStatus
from tests.conftest import commit_dir, files_of, git, sim_config

pytestmark = pytest.mark.nix  # run on Nix 2.8 here and on 2.26 in tests/nixroot


@pytest.fixture
def hive(tmp_path: Path, hyperhive_flake: str) -> Hive:
    hive = Hive(load_config(sim_config(tmp_path, hyperhive_flake)))
    hive.spawn("alice")
    return hive


@pytest.fixture
def proposals(hive: Hive) -> Proposals:
    return Proposals(hive)


def manager_commit(hive: Hive, agent_nix: str, message: str = "change") -> str:
    proposed = hive.layout.proposed("alice")
    (proposed / "agent.nix").write_text(agent_nix)
    return commit_dir(proposed, message)


def system_of(hive: Hive, container: str) -> Path:
    """The system the simulated host's profile points at (what the container runs)."""
    profile = hive.config.host.simulated_root / "profiles/per-container" / container / "system"
    return profile.resolve()


def tags(hive: Hive) -> list[str]:
    return git(hive.layout.applied("alice"), "tag", "--list").split()


GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'
BROKEN = '{ ... }: { environment.variables.GREETING = throw "alice cannot build"; }\n'


def test_approve_deploys(hive: Hive, proposals: Proposals) -> None:
    before = system_of(hive, "h-alice")
    sha = manager_commit(hive, GOOD)
    proposal = proposals.propose("alice", sha[:7])
    assert (proposal.id, proposal.status, proposal.fetched_sha) == (1, "pending", sha)
    assert [s.pending for s in hive.status()] == [1]
    assert "+{ ... }: { environment.variables.GREETING" in proposals.diff(1)

    deployment = proposals.approve(1)
    assert deployment.proposal.status is ProposalStatus.DEPLOYED
    assert tags(hive) == [
        "approved/1",
        "building/1",
        "deploy-seq/1/1",
        "deployed/0",
        "deployed/1",
        "proposal/1",
    ]
    applied = hive.layout.applied("alice")
    assert git(applied, "rev-parse", "main") == sha
    assert git(applied, "status", "--porcelain") == ""
    assert (applied / "agent.nix").read_text() == GOOD
    assert git(hive.layout.meta, "log", "-1", "--format=%s") == (
        f"deploy alice deployed/1 {sha[:12]}"
    )
    after = system_of(hive, "h-alice")
    assert after != before
    assert json.loads((after / "variables.json").read_text())["GREETING"] == "hello"
    assert [s.pending for s in hive.status()] == [0]
    assert hive.status()[0].deployed_tag == "deployed/1"


def test_failed_build_leaves_everything_as_it_was(hive: Hive, proposals: Proposals) -> None:
    applied = hive.layout.applied("alice")
    conf = nspawn.conf_path(hive.config, "h-alice")
    before = (
        files_of(applied),
        files_of(hive.layout.meta),
        system_of(hive, "h-alice"),
        conf.read_bytes(),
        hive.status()[0].main_pid,
    )
    sha = manager_commit(hive, BROKEN)
    proposals.propose("alice", sha)
    with pytest.raises(BuildFailed, match="alice cannot build") as info:
        proposals.approve(1)
    assert "back on" in str(info.value)
    assert "is dirty" not in str(info.value)  # nix's noise is not shown as the error
    message = git(applied, "tag", "-l", "--format=%(contents)", "failed/1")
    assert "alice cannot build" in message
    after_tags = set(tags(hive))
    assert {"failed/1", "approved/1", "building/1", "proposal/1"} <= after_tags
    assert "deployed/1" not in after_tags
    assert (
        {k: v for k, v in files_of(applied).items() if k != "git show-ref"},
        files_of(hive.layout.meta),
        system_of(hive, "h-alice"),
        conf.read_bytes(),
        hive.status()[0].main_pid,
    ) == ({k: v for k, v in before[0].items() if k != "git show-ref"}, *before[1:])
    failed = proposals.store.get(1)
    assert failed.status is ProposalStatus.FAILED
    assert "alice cannot build" in failed.error
    assert not hive.meta.is_pending()


def test_deny_double_approve_unknown_and_hostile(hive: Hive, proposals: Proposals) -> None:
    sha = manager_commit(hive, GOOD)
    proposals.propose("alice", sha)
    denied = proposals.deny(1, note="not today\nsecond line")
    assert denied.status is ProposalStatus.DENIED
    assert (
        git(hive.layout.applied("alice"), "tag", "-l", "--format=%(contents)", "denied/1")
        == "not today\nsecond line"
    )
    with pytest.raises(HivegenError, match="proposal 1 is denied"):
        proposals.approve(1)
    with pytest.raises(HivegenError, match="proposal 1 is denied"):
        proposals.deny(1)
    proposals.propose("alice", sha)
    proposals.approve(2)
    with pytest.raises(HivegenError, match="proposal 2 is deployed"):
        proposals.approve(2)
    with pytest.raises(UsageError, match="no proposal 99"):
        proposals.approve(99)
    with pytest.raises(UsageError, match="invalid note"):
        proposals.deny(2, note="bell\x07")
    # Hostile revisions never reach git.
    before = process.started_count()
    for bad in (
        "--upload-pack=touch /tmp/pwned",
        "refs/heads/main",
        "abc",
        "1234567:refs/x",
        "-1234567",
        "ABCDEF12",
        "a" * 41,
        "1234567^{tree}",
    ):
        with pytest.raises(UsageError, match="7 to 40 lowercase hex"):
            proposals.propose("alice", bad)
    assert process.started_count() == before
    with pytest.raises(UsageError, match="no commit deadbeef"):
        proposals.propose("alice", "deadbeef")


def test_propose_rejects_commits_that_are_not_agent_configs(
    hive: Hive, proposals: Proposals
) -> None:
    proposed = hive.layout.proposed("alice")
    (proposed / "agent.nix").write_text("{ ... }: { environment.variables = { X = ; }; }\n")
    sha = commit_dir(proposed, "syntax error")
    with pytest.raises(UsageError, match=r"does not parse:\n.*syntax error") as info:
        proposals.propose("alice", sha)
    assert "agent.nix" in str(info.value)
    (proposed / "agent.nix").write_text(GOOD)
    git(proposed, "rm", "-q", "flake.nix")
    sha = commit_dir(proposed, "no flake")
    with pytest.raises(UsageError, match=r"has no flake\.nix"):
        proposals.propose("alice", sha)
    # Nothing was recorded or pinned for the rejected ones.
    assert proposals.store.pending() == []
    assert tags(hive) == ["deployed/0"]
    with pytest.raises(HivegenError, match="no agent named 'zed'"):
        proposals.propose("zed", sha)


def test_rollback_and_history(hive: Hive, proposals: Proposals) -> None:
    first = manager_commit(hive, GOOD, "first")
    proposals.propose("alice", first)
    proposals.approve(1)
    second = manager_commit(hive, GOOD.replace("hello", "bye"), "second")
    proposals.propose("alice", second)
    proposals.approve(2)
    broken = manager_commit(hive, BROKEN, "third")
    proposals.propose("alice", broken)
    with pytest.raises(BuildFailed):
        proposals.approve(3)
    proposals.propose("alice", first)
    proposals.deny(4, note="again?")
    seed = git(hive.layout.applied("alice"), "rev-parse", "deployed/0")
    deployment = proposals.rollback("alice", "deployed/0")
    assert deployment.sha == seed
    assert git(hive.layout.applied("alice"), "rev-parse", "main") == seed
    assert "deployed/5" in tags(hive)
    history = proposals.history("alice")
    assert [(e.id, e.tag, e.status) for e in history] == [
        (5, "deployed/5", "deployed"),
        (4, "denied/4", "denied"),
        (3, "failed/3", "failed"),
        (2, "deployed/2", "deployed"),
        (1, "deployed/1", "deployed"),
        (0, "deployed/0", "deployed"),
    ]
    assert history[0].kind == "rollback"
    assert history[0].note == "rollback to deployed/0"
    assert history[1].note == "again?"
    assert "alice cannot build" in history[2].note
    assert history[2].note.startswith("error:")
    assert [e.sha for e in history] == [seed, first, broken, second, first, seed]
    with pytest.raises(UsageError, match="invalid target"):
        proposals.rollback("alice", "main")
    with pytest.raises(UsageError, match="has no tag deployed/42"):
        proposals.rollback("alice", "deployed/42")


def test_planted_hooks_never_run(hive: Hive, proposals: Proposals, tmp_path: Path) -> None:
    # The proposed repo is the manager's; the applied one is hivegen's, but nix runs git
    # in it too (its fetcher checks for a dirty tree): neither may run planted code.
    canary = tmp_path / "pwned"
    script = f"#!/bin/sh\ntouch {canary}\n"
    for repo in (hive.layout.proposed("alice"), hive.layout.applied("alice")):
        hooks = repo / ".git/hooks"
        for hook in (
            "pre-commit",
            "post-commit",
            "post-checkout",
            "reference-transaction",
            "pre-auto-gc",
            "post-index-change",
            "pre-receive",
            "update",
        ):
            (hooks / hook).write_text(script)
            (hooks / hook).chmod(0o755)
        monitor = repo / ".git/fsmonitor.sh"
        monitor.write_text(script)
        monitor.chmod(0o755)
        git(repo, "config", "core.fsmonitor", str(monitor))
    sha = manager_commit(hive, GOOD)  # plain git here: the manager's own commit
    canary.unlink(missing_ok=True)
    proposals.propose("alice", sha)
    proposals.approve(1)
    proposals.rollback("alice", "deployed/0")
    assert not canary.exists()


def test_interrupted_approve_is_finished_by_approving_again(
    hive: Hive, proposals: Proposals, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = manager_commit(hive, GOOD)
    proposals.propose("alice", sha)

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt  # hivegen dies in the middle of the build

    monkeypatch.setattr(hive.host, "update", killed)
    with pytest.raises(KeyboardInterrupt):
        proposals.approve(1)
    assert proposals.store.get(1).status is ProposalStatus.BUILDING
    assert git(hive.layout.applied("alice"), "rev-parse", "main") == sha  # half-way
    monkeypatch.undo()
    deployment = proposals.approve(1)
    assert deployment.proposal.status is ProposalStatus.DEPLOYED
    assert git(hive.layout.applied("alice"), "rev-parse", "main") == sha
    assert not hive.meta.is_pending()
    lock = meta_mod.read_lock(hive.layout.meta)
    assert meta_mod.locked_node(lock, "agent-alice")["rev"] == sha


def test_cli_flow(hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = ["--config", str(tmp_path / "hive.toml")]
    sha = manager_commit(hive, GOOD, "say hello")
    assert main([*config, "propose", "alice", sha[:10]]) == 0
    assert capsys.readouterr().out == "1\n"
    assert main([*config, "pending"]) == 0
    out = capsys.readouterr().out
    assert "say hello" in out
    assert sha[:7] in out
    assert main([*config, "diff", "1", "--color", "always"]) == 0
    assert "\x1b[" in capsys.readouterr().out
    assert main([*config, "approve", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "deployed"
    assert main([*config, "propose", "alice", "--", "--upload-pack=x"]) == 2
    assert "7 to 40 lowercase hex" in capsys.readouterr().err
    assert main([*config, "approve", "1"]) == 1
    assert "proposal 1 is deployed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([*config, "approve", "x"])
    assert info.value.code == 2
    broken = manager_commit(hive, BROKEN, "break")
    assert main([*config, "propose", "alice", broken]) == 0
    capsys.readouterr()
    assert main([*config, "approve", "2", "--json"]) == 1
    failed = capsys.readouterr()
    assert "alice cannot build" in failed.err
    # --json still prints the result: the proposal, failed, with its error.
    result = json.loads(failed.out)
    assert (result["id"], result["status"]) == (2, "failed")
    assert "alice cannot build" in result["error"]
    assert main([*config, "history", "alice", "--json"]) == 0
    assert [e["status"] for e in json.loads(capsys.readouterr().out)["entries"]] == [
        "failed",
        "deployed",
        "deployed",
    ]


def test_an_infrastructure_error_is_not_a_build_failure(hive: Hive, proposals: Proposals) -> None:
    # A stale git lock in the meta repo: nothing is wrong with the proposal, so it must
    # not end as failed/N (which could never be approved again).
    proposal = proposals.propose("alice", manager_commit(hive, GOOD))
    lock = hive.layout.meta / ".git" / "index.lock"
    lock.write_text("")
    with pytest.raises(HivegenError, match="could not stage alice's new commit") as info:
        proposals.approve(proposal.id)
    assert "nothing was built" in info.value.message
    assert not isinstance(info.value, BuildFailed)
    assert f"failed/{proposal.id}" not in tags(hive)
    assert proposals.store.get(proposal.id).status in (
        ProposalStatus.PENDING,
        ProposalStatus.BUILDING,  # the undo needs the same lock: the next approve ends it
    )
    lock.unlink()
    deployment = proposals.approve(proposal.id)
    assert deployment.proposal.status is ProposalStatus.DEPLOYED


@pytest.mark.parametrize(
    "error",
    [
        # Nix 2.8
        "error: alice cannot build\n(use '--show-trace' to show detailed location information)",
        # Nix 2.26: a bare `error:`, the trace, then the message
        "error:\n       … while calling the 'derivationStrict' builtin\n"
        "         at <nix/derivation-internal.nix>:37:12:\n\n"
        "       (stack trace truncated; use '--show-trace' to show the full trace)\n\n"
        "       error: alice cannot build\n"
        "/x/bin/nixos-container: failed to build container from flake '/s/meta'",
    ],
)
def test_historys_note_is_nixs_message_on_either_nix(error: str) -> None:
    from hivegen.proposals import _headline

    assert _headline(error) == "error: alice cannot build"
