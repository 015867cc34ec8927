"""What hive.sqlite holds of a proposal and its tags do not say, kept in git beside them:
the index rebuilt from an applied repo is then the index, column for column.

The tags themselves cannot carry it. `proposal/<id>`, `deployed/<id>` and
`deploy-seq/<seq>/<id>` are lightweight, their refs naming the commit, and status, the
registry and the unproposed-commit walk read them as files, starting no process; an
annotated tag's ref names a tag object instead. So each step that makes one of a
proposal's tags first appends a *record* to the git note of the proposal's commit, in
the notes ref `refs/notes/hivegen` of the agent's applied repo (one `git notes append`):

    hivegen-record/1 {"commit_ref":"main","created":1712345678.123456,"id":7,...}

one JSON object on one line: the proposal's id, the step, and the values that step
gives the index row, times as the exact floats the index stores. The object is ASCII
(every newline, control or other non-ASCII character of a note or a build error is a
JSON escape), so no content can make a line of its own, nor a field of another record.
Lines are only ever appended; the last valid record of each step wins (a step run
again after an error records again). A line that is not a valid record is ignored.
A record is written before its tag: an outcome's (`deployed`, `failed`, `denied`)
counts only beside its tag, the status always being the tags'. `approved` counts
alone: the index takes previous_sha before the approve's first tag.

Steps and what they record:

- `proposal` (propose, rollback): kind, commit_ref, created, note;
- `approved` (an approve begins): previous_sha, main when it began;
- `deployed`: resolved; `failed`: resolved and the error; `denied`: resolved and the
  note.

A hive from before these records has none: the rebuild then falls back, field by field,
to what it always did (repocheck.py).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from hivegen.git import Git
from hivegen.store import ProposalKind, ProposalStatus

NOTES_REF = "refs/notes/hivegen"
PREFIX = "hivegen-record/1 "

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?\Z")
# The outcome steps, each named as its tag is, and the text field each records.
_OUTCOMES = {
    ProposalStatus.DEPLOYED: None,
    ProposalStatus.FAILED: "error",
    ProposalStatus.DENIED: "note",
}


@dataclass(frozen=True, slots=True)
class Created:
    kind: ProposalKind
    commit_ref: str
    created: float
    note: str


@dataclass(frozen=True, slots=True)
class Outcome:
    resolved: float
    text: str  # the error of a failed proposal, the note of a denied one ("" deployed)


@dataclass(frozen=True, slots=True)
class Recorded:
    """The last valid record of each step of one proposal (None: not recorded)."""

    created: Created | None = None
    previous_sha: str | None = None
    outcomes: dict[ProposalStatus, Outcome] = field(default_factory=dict)


def _line(proposal_id: int, step: str, values: dict[str, object]) -> str:
    body = json.dumps(
        {"id": proposal_id, "step": step, **values},
        ensure_ascii=True,
        allow_nan=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    return f"{PREFIX}{body}\n"


def created(proposal_id: int, kind: ProposalKind, commit_ref: str, when: float, note: str) -> str:
    """The record of a new proposal (its `proposal/<id>` tag)."""
    values = {"kind": str(kind), "commit_ref": commit_ref, "created": when, "note": note}
    return _line(proposal_id, "proposal", values)


def approved(proposal_id: int, previous_sha: str) -> str:
    """The record of an approve that begins (its `approved/<id>` tag)."""
    return _line(proposal_id, "approved", {"previous_sha": previous_sha})


def outcome(proposal_id: int, status: ProposalStatus, resolved: float, text: str = "") -> str:
    """The record of how a proposal ended (its `deployed/`, `failed/` or `denied/` tag)."""
    name = _OUTCOMES[status]
    values: dict[str, object] = {"resolved": resolved}
    if name is not None:
        values[name] = text
    return _line(proposal_id, str(status), values)


def append(git: Git, repo: Path, sha: str, record: str) -> None:
    """Add `record` to the note of commit `sha` in `repo` (created if it has none)."""
    git.run(repo, "notes", f"--ref={NOTES_REF}", "append", "-F", "-", sha, input=record)


def read(git: Git, repo: Path, sha: str) -> str:
    """The note of commit `sha`: every record of its proposals ("" if it has none, or
    the notes cannot be read: the rebuild then falls back as for a hive without them)."""
    result = git.run(repo, "notes", f"--ref={NOTES_REF}", "show", sha, check=False)
    return result.stdout if result.ok else ""


def parse(text: str, proposal_id: int) -> Recorded:
    """The records of proposal `proposal_id` in a note, the last valid one of each step."""
    made: Created | None = None
    previous: str | None = None
    outcomes: dict[ProposalStatus, Outcome] = {}
    for line in text.split("\n"):
        if not line.startswith(PREFIX):
            continue
        try:
            value = json.loads(line[len(PREFIX) :])
        except ValueError:
            continue
        if not isinstance(value, dict):
            continue
        if type(value.get("id")) is not int or value["id"] != proposal_id:
            continue
        step = value.get("step")
        if step == "proposal":
            made = _created(value) or made
        elif step == "approved":
            sha = value.get("previous_sha")
            if isinstance(sha, str) and _SHA.match(sha):
                previous = sha
        elif step in set(_OUTCOMES):
            status = ProposalStatus(step)
            ended = _outcome(value, _OUTCOMES[status])
            if ended is not None:
                outcomes[status] = ended
    return Recorded(made, previous, outcomes)


def _created(value: dict[str, object]) -> Created | None:
    kind, ref, note, when = (value.get(k) for k in ("kind", "commit_ref", "note", "created"))
    stamp = _time(when)
    if not (
        isinstance(kind, str)
        and kind in set(ProposalKind)
        and isinstance(ref, str)
        and ref
        and isinstance(note, str)
        and stamp is not None
    ):
        return None
    return Created(ProposalKind(kind), ref, stamp, note)


def _outcome(value: dict[str, object], name: str | None) -> Outcome | None:
    stamp = _time(value.get("resolved"))
    text = "" if name is None else value.get(name)
    if stamp is None or not isinstance(text, str):
        return None
    return Outcome(stamp, text)


def _time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    stamp = float(value)
    return stamp if math.isfinite(stamp) else None
