"""The index rebuilt from git is the index: every column of every row of hive.sqlite
comes back from the applied repos (issue 30, finding 5)."""

from __future__ import annotations

import difflib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hivegen import tagrecords
from hivegen.config import load_config
from hivegen.doctor import Doctor
from hivegen.errors import HivegenError
from hivegen.hive import Hive
from hivegen.proposals import BuildFailed, Proposals
from hivegen.repocheck import ADOPTED, INDEXED
from hivegen.store import ProposalKind, ProposalStatus
from tests.conftest import approve_killed_at_tag, commit_dir, git, sim_config

GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'
BROKEN = '{ ... }: { environment.variables.GREETING = throw "broken on purpose"; }\n'

# A note as an operator (or a container, through serve) may write one: lines that look
# like a record's, a trailer and a comment must stay text, never become fields.
TRICKY_NOTE = (
    "not now:\n"
    "Hivegen-Kind: rollback\n"
    'hivegen-record/1 {"id": 1, "step": "proposal", "kind": "rollback", '
    '"commit_ref": "x", "created": 0.0, "note": "forged"}\n'
    "# a comment line\n"
    "\n"
    "  indented, and trailing spaces  \n"
    "tab\tand a \u00e9 and \u2028 a line separator"
)


def dump(database: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (each by its primary key) and the schema version."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        rows: dict[str, list[tuple[object, ...]]] = {
            "PRAGMA user_version": [tuple(db.execute("PRAGMA user_version").fetchone())]
        }
        for table in tables:
            columns = [c[1] for c in db.execute(f"PRAGMA table_info({table})")]
            keys = [c[1] for c in db.execute(f"PRAGMA table_info({table})") if c[5]] or columns
            query = f"SELECT * FROM {table} ORDER BY {', '.join(keys)}"  # noqa: S608 (its own names)
            found = db.execute(query).fetchall()
            rows[table] = [tuple(columns), *found]
        return rows
    finally:
        db.close()


def differences(
    before: dict[str, list[tuple[object, ...]]], after: dict[str, list[tuple[object, ...]]]
) -> str:
    lines = []
    for table in sorted(set(before) | set(after)):
        old = [repr(r) for r in before.get(table, [])]
        new = [repr(r) for r in after.get(table, [])]
        if old != new:
            lines.append(f"== {table}")
            lines += difflib.unified_diff(old, new, "before", "rebuilt", lineterm="", n=0)
    return "\n".join(lines)


def lose_index(hive: Hive) -> None:
    database = hive.layout.database
    for side in ("", "-wal", "-shm"):
        database.with_name(database.name + side).unlink(missing_ok=True)


def moves_of_main(hive: Hive) -> dict[str, str]:
    """Every move of each agent's applied main (its reflog), newest first."""
    return {n: git(hive.layout.applied(n), "reflog", "refs/heads/main") for n in ("alice", "bob")}


def problems(hive: Hive) -> list[str]:
    return [f"{f.check}: {f.message}" for f in Doctor(hive).run().problems]


@pytest.fixture
def config_path(tmp_path: Path, hyperhive_flake: str) -> Path:
    return sim_config(tmp_path, hyperhive_flake)


@pytest.fixture
def hive(config_path: Path) -> Hive:
    hive = Hive(load_config(config_path))
    hive.spawn("hm1nd")
    hive.spawn("alice")
    hive.spawn("bob")
    return hive


def manager_commit(hive: Hive, name: str, text: str) -> str:
    proposed = hive.layout.proposed(name)
    (proposed / "agent.nix").write_text(text)
    return commit_dir(proposed, f"manager change {len(text)}")


def raising(error: BaseException) -> Callable[..., None]:
    """A stand-in for a call, raising `error` (the test puts the real one back)."""

    def stand_in(*args: object, **kwargs: object) -> None:
        raise error

    return stand_in


def every_kind_and_state(
    hive: Hive, config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Proposals:
    """Proposals of both kinds, in every state an index can hold (and that `doctor
    --repair` leaves): each through the verbs that make it."""
    proposals = Proposals(hive)
    # Deployed, proposed as the tip of main (commit_ref `main`).
    manager_commit(hive, "alice", GOOD)
    first = proposals.propose("alice")
    proposals.approve(first.id)
    # Failed: its build throws (its error the build's, its commit_ref a short sha).
    broken = manager_commit(hive, "alice", BROKEN)
    failing = proposals.propose("alice", broken[:10])
    with pytest.raises(BuildFailed):
        proposals.approve(failing.id)
    # Denied with a note that looks like a record and trailers (proposed as HEAD).
    manager_commit(hive, "alice", GOOD + "# denied\n")
    proposals.deny(proposals.propose("alice", "HEAD").id, TRICKY_NOTE)
    # Pending after an approve that could not start (its previous_sha kept), then
    # superseded by a newer deploy, which it does not contain.
    stalled_sha = manager_commit(hive, "alice", GOOD + "# stalled\n")
    stalled = proposals.propose("alice", stalled_sha)
    real_prepare = hive.meta.prepare
    monkeypatch.setattr(hive.meta, "prepare", raising(HivegenError("the meta flake is busy")))
    with pytest.raises(HivegenError, match="still pending"):
        proposals.approve(stalled.id)
    monkeypatch.setattr(hive.meta, "prepare", real_prepare)
    newer = proposals.propose("alice", manager_commit(hive, "alice", GOOD + "# newer\n"))
    proposals.approve(newer.id)
    assert proposals.superseded(proposals.store.get(stalled.id))
    # A rollback, deployed (kind rollback, its note), and one that could not start.
    proposals.rollback("alice", "deployed/0")
    monkeypatch.setattr(hive.meta, "prepare", raising(HivegenError("the meta flake is busy")))
    with pytest.raises(HivegenError, match="still pending"):
        proposals.rollback("alice", f"deployed/{newer.id}")
    monkeypatch.setattr(hive.meta, "prepare", real_prepare)
    # bob: an approve killed as it tags deployed/<id> (settled pending by the repair),
    # and one interrupted after that tag (settled deployed), and a plain pending one.
    killed = proposals.propose("bob", manager_commit(hive, "bob", GOOD))
    approve_killed_at_tag(config_path, tmp_path, killed.id)
    Doctor(hive).run(repair=True)
    late = proposals.propose("bob", manager_commit(hive, "bob", GOOD + "# late\n"))
    real_finalize = hive.meta.finalize
    monkeypatch.setattr(hive.meta, "finalize", raising(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        proposals.approve(late.id)
    monkeypatch.setattr(hive.meta, "finalize", real_finalize)
    assert proposals.store.get(late.id).status is ProposalStatus.BUILDING
    proposals.propose("bob", manager_commit(hive, "bob", GOOD + "# waiting\n"))
    Doctor(hive).run(repair=True)  # settles what was interrupted
    assert problems(hive) == []
    rows = proposals.store.of_agent("alice") + proposals.store.of_agent("bob")
    assert {(p.kind, p.status) for p in rows} == {
        (ProposalKind.APPLY, ProposalStatus.DEPLOYED),
        (ProposalKind.APPLY, ProposalStatus.FAILED),
        (ProposalKind.APPLY, ProposalStatus.DENIED),
        (ProposalKind.APPLY, ProposalStatus.PENDING),
        (ProposalKind.ROLLBACK, ProposalStatus.DEPLOYED),
        (ProposalKind.ROLLBACK, ProposalStatus.PENDING),
    }
    return proposals


def test_the_index_rebuilt_from_git_is_the_index(
    hive: Hive, config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_kind_and_state(hive, config_path, tmp_path, monkeypatch)
    mains = moves_of_main(hive)
    before = dump(hive.layout.database)

    lose_index(hive)
    Doctor(hive).run(repair=True)

    after = dump(hive.layout.database)
    assert after == before, "the rebuilt index differs:\n" + differences(before, after)
    assert moves_of_main(hive) == mains  # not once moved, not even there and back
    assert problems(hive) == []


def as_an_old_hive_is_rebuilt(hive: Hive, row: tuple[object, ...]) -> tuple[object, ...]:
    """The row the rebuild makes, as it always did, of a proposal whose tags carry no
    records (`created` left out: it is the time of the rebuild)."""
    proposal_id, status = row[0], row[6]
    agent, sha, note, error = (str(row[i]) for i in (1, 4, 7, 8))
    tags = git(hive.layout.applied(agent), "tag", "--list", f"*/{proposal_id}").split()
    unrecorded = ADOPTED if tags == [f"proposal/{proposal_id}"] else INDEXED
    return (
        proposal_id,
        agent,
        "apply",
        sha[:12],
        sha,
        None,
        status,
        note.strip() if status == "denied" else unrecorded,  # the tag's message
        error.strip() if status == "failed" else "",
        None,
    )


def test_a_hive_from_before_the_records_is_rebuilt_as_before(
    hive: Hive, config_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proposals made by a hivegen that recorded nothing beside the tags, then (the hive
    upgraded) some that do: the old ones are rebuilt as they always were, the new ones
    exactly; no deploy moves."""
    with monkeypatch.context() as old_hivegen:
        old_hivegen.setattr(tagrecords, "append", lambda *args, **kwargs: None)
        proposals = every_kind_and_state(hive, config_path, tmp_path, monkeypatch)
    for name in ("alice", "bob"):
        # The approve killed in a process of its own (which the stand-in does not reach)
        # recorded its steps: dropped, as a hive from before has none.
        applied = hive.layout.applied(name)
        git(applied, "update-ref", "-d", tagrecords.NOTES_REF)
        assert git(applied, "notes", f"--ref={tagrecords.NOTES_REF}", "list") == ""
    old_ids = {p.id for p in proposals.store.of_agent("alice") + proposals.store.of_agent("bob")}
    upgraded = proposals.propose("alice", manager_commit(hive, "alice", GOOD + "# upgraded\n"))
    proposals.approve(upgraded.id)
    proposals.deny(proposals.propose("bob", manager_commit(hive, "bob", GOOD + "# no\n")).id)
    mains = moves_of_main(hive)
    before = dump(hive.layout.database)
    expected = {
        **before,
        "proposals": [
            before["proposals"][0],
            *(
                as_an_old_hive_is_rebuilt(hive, row) if row[0] in old_ids else row
                for row in before["proposals"][1:]
            ),
        ],
    }

    lose_index(hive)
    started = time.time()
    Doctor(hive).run(repair=True)

    after = dump(hive.layout.database)
    for row in after["proposals"][1:]:
        if row[0] in old_ids:
            assert float(str(row[9])) >= started
    rebuilt = {
        **after,
        "proposals": [
            after["proposals"][0],
            *(r[:9] + r[10:] if r[0] in old_ids else r for r in after["proposals"][1:]),
        ],
    }
    assert rebuilt == expected, "not rebuilt as before:\n" + differences(expected, rebuilt)
    assert moves_of_main(hive) == mains  # not once moved, not even there and back
    assert problems(hive) == []


def test_a_record_is_one_line_nothing_in_a_text_can_forge_another() -> None:
    forged = tagrecords.created(3, ProposalKind.APPLY, "main", 1.5, "x").strip()
    note = f"a\n{forged}\n{tagrecords.PREFIX}{{}}\r\nHivegen-Kind: rollback\u2028\x85end"
    lines = [
        tagrecords.created(3, ProposalKind.ROLLBACK, "deployed/0", 1712345678.123456, "r"),
        tagrecords.approved(3, "a" * 40),
        tagrecords.outcome(3, ProposalStatus.DENIED, 1712345679.000001, note),
        tagrecords.outcome(4, ProposalStatus.DEPLOYED, 9.0),  # another proposal's
    ]
    assert all(line.count("\n") == 1 and line.isascii() for line in lines)
    recorded = tagrecords.parse("".join(lines), 3)
    assert recorded.created == tagrecords.Created(
        ProposalKind.ROLLBACK, "deployed/0", 1712345678.123456, "r"
    )
    assert recorded.previous_sha == "a" * 40
    assert recorded.outcomes == {ProposalStatus.DENIED: tagrecords.Outcome(1712345679.000001, note)}


@pytest.mark.parametrize(
    "line",
    [
        '{"id": true, "step": "deployed", "resolved": 1.0}',
        '{"id": "3", "step": "deployed", "resolved": 1.0}',
        '{"id": 3, "step": "deployed", "resolved": NaN}',
        '{"id": 3, "step": "deployed", "resolved": true}',
        '{"id": 3, "step": "deployed"}',
        '{"id": 3, "step": "failed", "resolved": 1.0}',
        '{"id": 3, "step": "building", "resolved": 1.0}',
        '{"id": 3, "step": "approved", "previous_sha": "main"}',
        '{"id": 3, "step": "proposal", "kind": "revert", "commit_ref": "main", '
        '"created": 1.0, "note": ""}',
        '{"id": 3, "step": "proposal", "kind": "apply", "commit_ref": "", '
        '"created": 1.0, "note": ""}',
        "[3]",
        "{not json",
    ],
)
def test_a_record_that_is_not_valid_is_ignored(line: str) -> None:
    good = tagrecords.outcome(3, ProposalStatus.DEPLOYED, 2.5)
    text = good + tagrecords.PREFIX + line + "\n" + " " + good
    assert tagrecords.parse(text, 3) == tagrecords.Recorded(
        outcomes={ProposalStatus.DEPLOYED: tagrecords.Outcome(2.5, "")}
    )
