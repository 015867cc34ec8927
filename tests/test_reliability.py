"""Issue 12's reproductions, each from a fresh hive on the simulated host: git is the
truth, hive.sqlite an index, and a repair never destroys."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hivegen.cli import main
from hivegen.config import load_config
from hivegen.doctor import Doctor
from hivegen.errors import HivegenError
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.store import ProposalStatus
from tests.conftest import approve_killed_at_tag, commit_dir, git, sim_config
from tests.conftest import killed_while_simulated_call_hangs as killed_mid_call

GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'
OTHER = '{ ... }: { environment.variables.GREETING = "other"; }\n'
BROKEN = '{ ... }: { environment.variables.GREETING = throw "broken on purpose"; }\n'


@pytest.fixture
def config_path(tmp_path: Path, hyperhive_flake: str) -> Path:
    return sim_config(tmp_path, hyperhive_flake)


@pytest.fixture
def hive(config_path: Path) -> Hive:
    hive = Hive(load_config(config_path))
    hive.spawn("hm1nd")
    hive.spawn("alice")
    return hive


def manager_commit(hive: Hive, agent_nix: str, name: str = "alice") -> str:
    proposed = hive.layout.proposed(name)
    (proposed / "agent.nix").write_text(agent_nix)
    return commit_dir(proposed, f"manager change {agent_nix[-12:-3]}")


def problems(hive: Hive) -> list[str]:
    return [f"{f.check}: {f.message}" for f in Doctor(hive).run().problems]


def test_7_a_deploy_killed_before_its_tag_then_denied_leaves_nothing_running(
    hive: Hive, config_path: Path, tmp_path: Path
) -> None:
    """Killed after `nixos-container update` succeeded, before `git tag deployed/1`; then
    `--repair` and `deny 1`: the container must not keep the denied system."""
    recorded = hive.recorded_system(hive.spec("alice"))
    assert recorded is not None
    proposal = Proposals(hive).propose("alice", manager_commit(hive, GOOD))
    approve_killed_at_tag(config_path, tmp_path, proposal.id)
    assert hive.host.system("h-alice") != recorded[1]  # the new system was installed

    report = Doctor(hive).run(repair=True)
    assert any("interrupted approve settled as pending" in r for r in report.repaired)
    assert any("back on its last deploy's system" in r for r in report.repaired)
    Proposals(hive).deny(proposal.id, "not this one")
    assert hive.host.system("h-alice") == recorded[1]
    assert problems(hive) == []
    assert Proposals(hive).store.get(proposal.id).status is ProposalStatus.DENIED
    assert git(hive.layout.applied("alice"), "rev-parse", "main") == git(
        hive.layout.applied("alice"), "rev-parse", "deployed/0"
    )


def killed_while_simulated_call_hangs(config: Path, *args: str) -> None:
    killed_mid_call(config, load_config(config).host.simulated_root, *args)


def test_9_an_interrupted_rollback_re_run_finishes_that_rollback(
    hive: Hive, config_path: Path
) -> None:
    proposals = Proposals(hive)
    proposals.approve(proposals.propose("alice", manager_commit(hive, GOOD)).id)
    killed_while_simulated_call_hangs(
        config_path, "rollback", "alice", "--to", "deployed/0", "--yes"
    )
    [interrupted] = proposals.store.in_status(ProposalStatus.BUILDING)
    assert interrupted.kind == "rollback"

    deployment = proposals.rollback("alice", "deployed/0")
    assert deployment.proposal.id == interrupted.id  # the same rollback, finished
    rows = proposals.store.of_agent("alice")
    assert sorted((p.id, p.kind, p.status) for p in rows) == [
        (1, "apply", ProposalStatus.DEPLOYED),
        (interrupted.id, "rollback", ProposalStatus.DEPLOYED),
    ]
    assert proposals.store.in_status(ProposalStatus.BUILDING) == []
    applied = hive.layout.applied("alice")
    assert git(applied, "rev-parse", "main") == git(applied, "rev-parse", "deployed/0")
    assert problems(hive) == []


def test_an_approve_settles_another_interrupted_approve_of_the_agent_first(
    hive: Hive, config_path: Path
) -> None:
    proposals = Proposals(hive)
    first = proposals.propose("alice", manager_commit(hive, GOOD))
    killed_while_simulated_call_hangs(config_path, "approve", str(first.id))
    second = proposals.propose("alice", manager_commit(hive, OTHER))
    proposals.approve(second.id)
    assert proposals.store.get(first.id).status is ProposalStatus.PENDING
    assert proposals.store.get(second.id).status is ProposalStatus.DEPLOYED
    assert proposals.store.in_status(ProposalStatus.BUILDING) == []
    assert problems(hive) == []


def test_11_purge_then_spawn_starts_a_clean_history(hive: Hive) -> None:
    proposals = Proposals(hive)
    first = proposals.propose("alice", manager_commit(hive, GOOD))
    proposals.approve(first.id)
    hive.destroy("alice", purge=True)
    hive.spawn("alice")
    assert [h.tag for h in proposals.history("alice")] == ["deployed/0"]
    assert proposals.store.of_agent("alice") == []
    assert problems(hive) == []
    assert Doctor(hive).run(repair=True).repaired == ()
    again = proposals.propose("alice", manager_commit(hive, OTHER))
    assert again.id > first.id  # ids are never reused


@pytest.fixture
def small_state_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs at tmp_path/state, where the hive's state root goes."""
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "tmpfs", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield state
    finally:
        subprocess.run(["umount", "--lazy", str(state)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem holding `directory` to the last byte; the filler's path."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_8_a_full_disk_is_one_clear_error_and_loses_nothing(
    small_state_fs: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hive = Hive(load_config(config_path))
    assert hive.layout.root == small_state_fs
    hive.spawn("hm1nd")
    hive.spawn("alice")
    proposals = Proposals(hive)
    proposals.approve(proposals.propose("alice", manager_commit(hive, GOOD)).id)
    waiting = proposals.propose("alice", manager_commit(hive, OTHER))
    sha = manager_commit(hive, GOOD + "# again\n")
    applied = hive.layout.applied("alice")
    before = (git(applied, "show-ref"), (hive.layout.meta / "flake.lock").read_bytes())

    filler = fill(small_state_fs)
    results = {}
    for verb in (
        ["status"],
        ["pending"],
        ["doctor"],
        ["propose", "alice", sha],
        ["approve", str(waiting.id)],
    ):
        capsys.readouterr()
        code = main(["--config", str(config_path), *verb])
        results[verb[0]] = (code, capsys.readouterr().err)
    # The read-only verbs still work; the writing ones fail with the cause and the fix.
    assert {v: c for v, (c, _) in results.items()} == {
        "status": 0,
        "pending": 0,
        "doctor": 0,
        "propose": 1,
        "approve": 1,
    }, results
    for writer in ("propose", "approve"):
        err = results[writer][1]
        assert "Traceback" not in err
        assert "No space left on device" in err or "is its filesystem full" in err, err
        assert "hivegen: hint:" in err, err
        assert "free space" in err, err
    # Nothing moved: refs, lock and the waiting proposal are as they were.
    assert (git(applied, "show-ref"), (hive.layout.meta / "flake.lock").read_bytes()) == before
    assert proposals.store.get(waiting.id).status is ProposalStatus.PENDING

    filler.unlink()
    Doctor(hive).run(repair=True)
    assert problems(hive) == []
    proposals.approve(waiting.id)
    assert proposals.store.get(waiting.id).status is ProposalStatus.DEPLOYED
    assert proposals.propose("alice", sha).status is ProposalStatus.PENDING


def test_8_not_root_on_a_real_host_is_a_usage_error(
    tmp_path: Path,
    hyperhive_flake: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    native = tmp_path / "native.toml"
    native.write_text(f'[hive]\nstate_root = "{tmp_path / "s"}"\n')
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for verb in (["status"], ["spawn", "alice"], ["doctor"]):
        assert main(["--config", str(native), *verb]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hivegen: error: must run as root: hivegen drives"), err
        assert f"hint: sudo hivegen {verb[0]}" in err
    assert not (tmp_path / "s").exists()  # refused before anything was made
    # The simulated host (the demo, the tests) needs no root.
    simulated = sim_config(tmp_path, hyperhive_flake)
    assert main(["--config", str(simulated), "status"]) == 0


def test_12_a_proposal_made_before_a_newer_deploy_is_refused_unless_forced(
    hive: Hive, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proposals = Proposals(hive)
    older = proposals.propose("alice", manager_commit(hive, GOOD))
    newer = proposals.propose("alice", manager_commit(hive, OTHER))  # on top of older
    proposals.approve(newer.id)
    applied = hive.layout.applied("alice")
    deployed = git(applied, "rev-parse", "main")

    capsys.readouterr()
    assert main(["--config", str(config_path), "approve", str(older.id)]) == 1
    err = capsys.readouterr().err
    assert f"was made before deployed/{newer.id} and does not contain it" in err
    assert f"hivegen approve {older.id} --force" in err
    assert git(applied, "rev-parse", "main") == deployed  # nothing moved
    assert proposals.store.get(older.id).status is ProposalStatus.PENDING

    assert main(["--config", str(config_path), "pending", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["proposals"]
    assert (row["id"], row["superseded"]) == (older.id, True)
    assert main(["--config", str(config_path), "pending"]) == 0
    assert "(superseded) manager change" in capsys.readouterr().out

    assert main(["--config", str(config_path), "approve", str(older.id), "--force"]) == 0
    assert proposals.store.get(older.id).status is ProposalStatus.DEPLOYED
    assert problems(hive) == []


def test_12_a_proposal_on_top_of_the_current_deploy_is_not_superseded(hive: Hive) -> None:
    proposals = Proposals(hive)
    first = proposals.propose("alice", manager_commit(hive, GOOD))
    second = proposals.propose("alice", manager_commit(hive, OTHER))
    proposals.approve(first.id)
    [entry] = proposals.pending()
    assert entry.proposal.id == second.id
    assert not entry.superseded
    proposals.approve(second.id)
    # A rollback goes back on purpose: never superseded.
    proposals.rollback("alice", "deployed/0")
    assert problems(hive) == []


def lost_index(hive: Hive, how: str) -> None:
    database = hive.layout.database
    for side in ("-wal", "-shm"):
        database.with_name(database.name + side).unlink(missing_ok=True)
    match how:
        case "deleted":
            database.unlink()
        case "emptied":
            database.write_bytes(b"")
        case "garbage":
            database.write_bytes(b"this is not a database\n" * 200)
        case _:
            raise AssertionError(how)


@pytest.mark.parametrize("how", ["deleted", "emptied", "garbage"])
def test_2_a_lost_index_is_rebuilt_from_the_tags_and_moves_nothing(hive: Hive, how: str) -> None:
    proposals = Proposals(hive)
    deployed = proposals.propose("alice", manager_commit(hive, GOOD))
    proposals.approve(deployed.id)
    failing = proposals.propose("alice", manager_commit(hive, BROKEN))
    with pytest.raises(HivegenError):
        proposals.approve(failing.id)
    denied = proposals.propose("alice", manager_commit(hive, OTHER))
    proposals.deny(denied.id, "not now")
    waiting = proposals.propose("alice", manager_commit(hive, GOOD + "# later\n"))
    before = {p.id: (p.status, p.fetched_sha) for p in proposals.store.of_agent("alice")}
    applied = hive.layout.applied("alice")
    main_before = git(applied, "rev-parse", "main")
    lock_before = (hive.layout.meta / "flake.lock").read_bytes()

    lost_index(hive, how)
    report = Doctor(hive).run(repair=True)
    assert git(applied, "rev-parse", "main") == main_before  # never moved back
    assert (hive.layout.meta / "flake.lock").read_bytes() == lock_before
    assert problems(hive) == [], report.repaired
    after = {p.id: (p.status, p.fetched_sha) for p in proposals.store.of_agent("alice")}
    assert after == before
    assert "broken on purpose" in proposals.store.get(failing.id).error
    assert proposals.store.get(denied.id).note == "not now"
    if how == "garbage":
        [kept] = hive.layout.root.glob("hive.sqlite.damaged-*")
        assert kept.read_bytes().startswith(b"this is not a database")
    # The rebuilt index works: the waiting proposal deploys, a new one gets a new id.
    proposals.approve(waiting.id)
    assert proposals.propose("alice", manager_commit(hive, OTHER + "# again\n")).id > waiting.id


def test_3_a_clock_stepping_back_between_approves_reverts_nothing(
    hive: Hive, monkeypatch: pytest.MonkeyPatch
) -> None:
    proposals = Proposals(hive)
    first = proposals.propose("alice", manager_commit(hive, GOOD))
    second = proposals.propose("alice", manager_commit(hive, OTHER))
    proposals.approve(first.id)
    real = time.time
    monkeypatch.setattr("hivegen.store.time.time", lambda: real() - 86_400)  # a day back
    proposals.approve(second.id)
    monkeypatch.setattr("hivegen.store.time.time", real)
    applied = hive.layout.applied("alice")
    main = git(applied, "rev-parse", "main")
    assert main == git(applied, "rev-parse", f"deployed/{second.id}")
    report = Doctor(hive).run(repair=True)
    assert report.repaired == ()
    assert git(applied, "rev-parse", "main") == main
    assert problems(hive) == []


def test_deploys_from_before_the_order_was_recorded_get_it_from_applied_main(
    hive: Hive,
) -> None:
    """A hive whose deploys have no seq tags (hivegen before them) and whose index was
    lost: applied main is taken as the last deploy (it is one), nothing moves."""
    proposals = Proposals(hive)
    proposals.approve(proposals.propose("alice", manager_commit(hive, GOOD)).id)
    proposals.approve(proposals.propose("alice", manager_commit(hive, OTHER)).id)
    applied = hive.layout.applied("alice")
    for ref in git(applied, "tag", "--list", "deploy-seq/*").split():
        git(applied, "tag", "-d", ref)
    # Nor the records beside the tags, which came later (tagrecords.py): with them, the
    # rebuilt index would know when each deploy ended, as the lost one did.
    git(applied, "update-ref", "-d", "refs/notes/hivegen")
    lost_index(hive, "deleted")
    main = git(applied, "rev-parse", "main")
    findings = Doctor(hive).run().problems
    assert any("order of alice's deploys is not recorded" in f.message for f in findings)
    Doctor(hive).run(repair=True)
    assert git(applied, "rev-parse", "main") == main
    assert git(applied, "tag", "--list", "deploy-seq/*") == "deploy-seq/1/2"
    assert problems(hive) == []
    # Main at a commit no deploy names, in such a hive: the operator's to decide.
    git(applied, "tag", "-d", "deploy-seq/1/2")
    lost_index(hive, "deleted")
    undeployed = proposals.propose("alice", manager_commit(hive, BROKEN)).fetched_sha
    assert undeployed is not None
    git(applied, "update-ref", "refs/heads/main", undeployed)
    report = Doctor(hive).run(repair=True)
    [finding] = [f for f in report.findings if f.check == "applied-main"]
    assert git(applied, "rev-parse", "main") == undeployed  # not moved
    assert "neither the tags nor hive.sqlite say which deploy was the last" in finding.message
    assert "update-ref refs/heads/main deployed/<id>" in (finding.hint or "")


STALE_LOCKS = [
    ("applied", "index.lock"),
    ("applied", "refs/heads/main.lock"),
    ("applied", "HEAD.lock"),
    ("applied", "refs/tags/deployed/{id}.lock"),
    ("meta", "index.lock"),
    ("meta", "refs/heads/main.lock"),
]


def plant_lock(hive: Hive, repo: str, rel: str, age: float) -> Path:
    git_dir = (hive.layout.applied("alice") if repo == "applied" else hive.layout.meta) / ".git"
    lock = git_dir / rel
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    when = time.time() - age
    os.utime(lock, (when, when))
    return lock


@pytest.mark.parametrize(("repo", "rel"), STALE_LOCKS)
def test_6_a_stale_git_lock_is_named_removed_and_the_approve_finishes(
    hive: Hive, config_path: Path, repo: str, rel: str, capsys: pytest.CaptureFixture[str]
) -> None:
    proposals = Proposals(hive)
    proposal = proposals.propose("alice", manager_commit(hive, GOOD))
    lock = plant_lock(hive, repo, rel.format(id=proposal.id), age=3600)

    capsys.readouterr()
    code = main(["--config", str(config_path), "approve", str(proposal.id)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    status = proposals.store.get(proposal.id).status
    if code != 0:
        # Never a build failure: the proposal stays approvable, and the fix is named.
        assert status in (ProposalStatus.PENDING, ProposalStatus.BUILDING), err
        assert str(lock) in err, err
        assert "hivegen doctor names it" in err, err
    findings = [f for f in Doctor(hive).run().findings if f.check == "git-lock"]
    assert [f.message.split(" is a git lock")[0] for f in findings] == [str(lock)]

    Doctor(hive).run(repair=True)
    assert not lock.exists()
    if proposals.store.get(proposal.id).status is ProposalStatus.PENDING:
        proposals.approve(proposal.id)
    assert proposals.store.get(proposal.id).status is ProposalStatus.DEPLOYED
    assert problems(hive) == []
    recorded = hive.recorded_system(hive.spec("alice"))
    assert recorded is not None
    assert recorded[0] == f"deployed/{proposal.id}"
    assert hive.host.system("h-alice") == recorded[1]  # it runs what hivegen says


def test_6_a_recent_or_held_lock_is_reported_and_left(hive: Hive) -> None:
    recent = plant_lock(hive, "applied", "index.lock", age=5)
    held = plant_lock(hive, "meta", "index.lock", age=3600)
    with held.open() as handle:
        holder = subprocess.Popen(["sleep", "60"], stdin=handle)
    try:
        report = Doctor(hive).run(repair=True)
        assert recent.exists()
        assert held.exists()
        messages = [f.message for f in report.findings if f.check == "git-lock"]
        assert any(f"{recent} is a git lock no process holds" in m for m in messages)
        assert any(f"{held} is held by pid {holder.pid} (sleep)" in m for m in messages)
    finally:
        holder.kill()
        holder.wait()
    recent.unlink()


def drop_object(repo: Path, sha: str) -> None:
    """Lose one object, as a damaged disk would: packs unpacked first, so it is loose."""
    objects = repo / ".git" / "objects"
    for pack in sorted((objects / "pack").glob("*.pack")):
        moved = repo.parent / pack.name
        pack.rename(moved)
        pack.with_suffix(".idx").unlink()
        with moved.open("rb") as data:
            subprocess.run(["git", "-C", str(repo), "unpack-objects", "-q"], stdin=data, check=True)
        moved.unlink()
    loose = objects / sha[:2] / sha[2:]
    assert loose.is_file(), f"{sha} is not a loose object in {repo}"
    loose.unlink()


def test_10_garbage_in_meta_head_is_found_and_set_back(hive: Hive) -> None:
    head = hive.layout.meta / ".git" / "HEAD"
    head.write_text("garbage\n")
    [finding] = Doctor(hive).run().problems
    assert finding.message.startswith(f"{head} is not hivegen's ('garbage')")
    Doctor(hive).run(repair=True)
    assert head.read_text() == "ref: refs/heads/main\n"
    assert problems(hive) == []


def test_10_a_missing_object_or_a_tag_to_nothing_is_found(hive: Hive) -> None:
    applied = hive.layout.applied("alice")
    drop_object(applied, git(applied, "rev-parse", "main:agent.nix"))
    bad = applied / ".git/refs/tags/proposal/77"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("1234567890" * 4 + "\n")
    found = [m for m in problems(hive) if "is damaged" in m]
    assert len(found) == 1, problems(hive)
    assert "missing blob" in found[0]
    assert "refs/tags/proposal/77: invalid sha1 pointer" in found[0]
    # Nothing to repair by itself: only a backup (or the manager's repo) has the object.
    assert Doctor(hive).run(repair=True).repaired == ()


def test_10_a_proposal_missing_a_blob_fails_its_approve_once_and_clearly(
    hive: Hive, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proposals = Proposals(hive)
    proposal = proposals.propose("alice", manager_commit(hive, GOOD))
    applied = hive.layout.applied("alice")
    drop_object(applied, git(applied, "rev-parse", f"proposal/{proposal.id}:agent.nix"))
    main_before = git(applied, "rev-parse", "main")
    assert any("missing blob" in m for m in problems(hive))
    capsys.readouterr()
    assert main(["--config", str(config_path), "approve", str(proposal.id)]) == 1
    err = capsys.readouterr().err
    assert "could not start the deploy of proposal" in err, err
    # Not a build failure, and no approve left half-done for a repair to loop on.
    assert proposals.store.get(proposal.id).status is ProposalStatus.PENDING
    assert git(applied, "rev-parse", "main") == main_before
    assert Doctor(hive).run(repair=True).repaired == ()
    assert proposals.store.in_status(ProposalStatus.BUILDING) == []


def test_4_a_lost_deployed_0_drops_no_agent_and_is_named(
    hive: Hive, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    applied = hive.layout.applied("alice")
    seed = git(applied, "rev-parse", "deployed/0")
    git(applied, "tag", "-d", "deployed/0")
    meta_before = (hive.layout.meta / "flake.nix").read_text()
    Doctor(hive).run(repair=True)
    # Still an agent of the hive: in the meta flake, and its container is not foreign.
    assert (hive.layout.meta / "flake.nix").read_text() == meta_before
    assert {s.name: str(s.state) for s in hive.status()}["alice"] == "running"
    capsys.readouterr()
    assert main(["--config", str(config_path), "doctor"]) == 3
    out = capsys.readouterr().out
    assert "alice's applied repo has lost its deployed/0 tag" in out
    assert f"git -C {applied} tag deployed/0 {seed}" in out  # the root of main: the seed
    assert "foreign" not in out
    git(applied, "tag", "deployed/0", seed)  # the operator runs it
    assert problems(hive) == []


def test_a_rollback_to_what_already_runs_is_refused(hive: Hive) -> None:
    proposals = Proposals(hive)
    with pytest.raises(HivegenError, match=r"alice already runs deployed/0 .* nothing to roll"):
        proposals.rollback("alice", "deployed/0")
    assert proposals.store.of_agent("alice") == []  # no proposal made for it


def test_a_read_only_state_root_is_one_clear_error_and_changes_nothing(
    small_state_fs: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hive = Hive(load_config(config_path))
    hive.spawn("hm1nd")
    hive.spawn("alice")
    sha = manager_commit(hive, GOOD)
    remount = ["mount", "-o", "remount,ro", str(small_state_fs)]
    subprocess.run(remount, check=True)
    try:
        for verb in (["propose", "alice", sha], ["stop", "alice"], ["doctor", "--repair"]):
            capsys.readouterr()
            assert main(["--config", str(config_path), *verb]) == 1, verb
            err = capsys.readouterr().err
            assert "Traceback" not in err
            assert "cannot take the hive lock" in err, err
            assert "Read-only file system" in err, err
            assert "hint: the state root's filesystem is mounted read-only" in err, err
        # What only reads still works.
        assert main(["--config", str(config_path), "status"]) == 0
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_state_fs)], check=True)
    assert main(["--config", str(config_path), "propose", "alice", sha]) == 0
