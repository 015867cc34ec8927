"""Proposals, kept in `<state>/hive.sqlite` (stdlib sqlite3, WAL, versioned schema)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from hivegen import jsondoc
from hivegen.errors import HivegenError, UsageError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE proposals (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    agent       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    commit_ref  TEXT NOT NULL,
    fetched_sha TEXT,
    -- applied main when the approve began: what a failed or interrupted one restores
    previous_sha TEXT,
    status      TEXT NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    error       TEXT NOT NULL DEFAULT '',
    created     REAL NOT NULL,
    resolved    REAL
);
CREATE INDEX proposals_agent ON proposals (agent, id);
CREATE INDEX proposals_status ON proposals (status);
"""


class ProposalKind(StrEnum):
    APPLY = "apply"
    ROLLBACK = "rollback"


class ProposalStatus(StrEnum):
    PENDING = "pending"
    BUILDING = "building"
    DEPLOYED = "deployed"
    FAILED = "failed"
    DENIED = "denied"


@dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    agent: str
    kind: ProposalKind
    commit_ref: str
    fetched_sha: str | None
    previous_sha: str | None
    status: ProposalStatus
    note: str
    error: str
    created: float
    resolved: float | None

    @property
    def tag(self) -> str:
        return f"proposal/{self.id}"


def proposal_json(proposal: Proposal) -> dict[str, object]:
    """The `--json` shape of one proposal (CLI and `hivegen serve` alike)."""
    return {
        "id": proposal.id,
        "agent": proposal.agent,
        "kind": str(proposal.kind),
        "commit_ref": proposal.commit_ref,
        "sha": proposal.fetched_sha,
        "status": str(proposal.status),
        "note": proposal.note,
        "error": proposal.error or None,  # none yet: null, not ""
        "created": jsondoc.time(proposal.created),
        "resolved": jsondoc.time(proposal.resolved),
    }


def _row(row: sqlite3.Row) -> Proposal:
    return Proposal(
        id=row["id"],
        agent=row["agent"],
        kind=ProposalKind(row["kind"]),
        commit_ref=row["commit_ref"],
        fetched_sha=row["fetched_sha"],
        previous_sha=row["previous_sha"],
        status=ProposalStatus(row["status"]),
        note=row["note"],
        error=row["error"],
        created=row["created"],
        resolved=row["resolved"],
    )


def _rows(db: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> list[sqlite3.Row]:
    """Rows of a query; none from a database no proposal was ever written to (a fresh
    file has no table yet, and a read never creates one)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        return []
    return db.execute(sql, args).fetchall()


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _absent(self) -> bool:
        """No database yet: no file, or an empty one (sqlite makes it a database on the
        first write). Reads then see no proposals and create nothing."""
        try:
            return self.path.stat().st_size == 0
        except FileNotFoundError:
            return True

    def damage(self) -> HivegenError | None:
        """Why the database cannot be read (damaged, or not hivegen's), or None."""
        if self._absent():
            return None
        try:
            with self.read() as db:
                db.execute("SELECT COUNT(*) FROM proposals").fetchone()
        except sqlite3.DatabaseError as exc:
            return self._error(exc)
        except HivegenError as exc:
            return exc
        return None

    def move_aside(self) -> Path:
        """Rename a damaged database (and its WAL files) out of the way, never deleting
        it; the next write starts a fresh one. Returns the new name."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        counter = 0
        while target.exists():
            counter += 1
            target = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{counter}")
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(target.with_name(target.name + suffix))
        self.path.rename(target)
        return target

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """One connection in one transaction: committed on success, rolled back on error."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise HivegenError(f"cannot open {self.path}: {exc}") from exc
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA foreign_keys=ON")
            # The schema in a transaction of its own: a change rolled back must not take
            # the tables with it (leaving a file that no read understands).
            connection.execute("BEGIN IMMEDIATE")
            self._migrate(connection)
            connection.execute("COMMIT")
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._rollback(connection)
            raise self._error(exc) from exc
        except BaseException:
            self._rollback(connection)
            raise
        finally:
            connection.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read-only snapshot that never waits for a writer (WAL readers do not block)
        and never creates or changes the file; a damaged file is one clear error."""
        try:
            connection = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, timeout=2, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        connection.row_factory = sqlite3.Row
        try:
            connection.execute("BEGIN")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise HivegenError(
                    f"{self.path} has schema version {version}; this hivegen knows "
                    f"{SCHEMA_VERSION}",
                    hint="upgrade hivegen",
                )
            if (
                version == 0
                and not connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE name = 'proposals'"
                ).fetchone()
            ):
                # A database with no schema yet (an older hivegen rolled its creation
                # back with a refused change): it holds no proposals. An empty stand-in
                # in the connection's own temp space; the file is not touched.
                table = _SCHEMA.split(";", maxsplit=1)[0].replace(
                    "CREATE TABLE", "CREATE TEMP TABLE"
                )
                connection.execute(table)
            yield connection
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc
        finally:
            connection.close()

    @staticmethod
    def _rollback(connection: sqlite3.Connection) -> None:
        if connection.in_transaction:
            # The error being raised says more than a failed rollback would.
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")

    def _error(self, exc: sqlite3.Error) -> HivegenError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return HivegenError(
                f"{self.path} is busy: another hivegen is writing to it ({text})",
                hint="re-run in a moment",
            )
        if "full" in text or "disk I/O error" in text:
            return HivegenError(
                f"cannot write {self.path}: {text} (is its filesystem full?)",
                hint="free space there and re-run: the change was rolled back whole",
            )
        if "no such table" in text:
            return HivegenError(f"{self.path} is not a hivegen database ({text})")
        return HivegenError(
            f"{self.path} is damaged or not a hivegen database ({text})",
            hint="restore it from a backup; the applied repos' tags keep the record of "
            "every proposal (git tag --list in <state>/applied/<agent>)",
        )

    def _migrate(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            # Statement by statement: executescript() would commit our transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            return
        raise HivegenError(
            f"{self.path} has schema version {version}; this hivegen knows {SCHEMA_VERSION}",
            hint="upgrade hivegen",
        )

    # -- queries ------------------------------------------------------------------------

    def get(self, proposal_id: int) -> Proposal:
        if self._absent():  # reading never creates the database
            raise UsageError(f"no proposal {proposal_id}", hint="hivegen pending lists them")
        with self.read() as db:
            found = _rows(db, "SELECT * FROM proposals WHERE id = ?", (proposal_id,))
        row = found[0] if found else None
        if row is None:
            raise UsageError(f"no proposal {proposal_id}", hint="hivegen pending lists them")
        return _row(row)

    def pending(self) -> list[Proposal]:
        if self._absent():
            return []
        with self.read() as db:
            rows = _rows(
                db,
                "SELECT * FROM proposals WHERE status = ? ORDER BY id",
                (ProposalStatus.PENDING,),
            )
        return [_row(r) for r in rows]

    def pending_counts(self) -> dict[str, int]:
        if self._absent():
            return {}
        with self.read() as db:
            rows = _rows(
                db,
                "SELECT agent, COUNT(*) AS n FROM proposals WHERE status = ? GROUP BY agent",
                (ProposalStatus.PENDING,),
            )
        return {r["agent"]: r["n"] for r in rows}

    def of_agent(self, agent: str) -> list[Proposal]:
        if self._absent():
            return []
        with self.read() as db:
            rows = _rows(db, "SELECT * FROM proposals WHERE agent = ? ORDER BY id DESC", (agent,))
        return [_row(r) for r in rows]

    def last_deployed(self, agent: str) -> Proposal | None:
        """The agent's proposal deployed most recently (ids need not be in deploy order)."""
        if self._absent():
            return None
        with self.read() as db:
            found = _rows(
                db,
                "SELECT * FROM proposals WHERE agent = ? AND status = ? "
                "AND resolved IS NOT NULL ORDER BY resolved DESC, id DESC LIMIT 1",
                (agent, ProposalStatus.DEPLOYED),
            )
            row = found[0] if found else None
        return _row(row) if row else None

    def in_status(self, status: ProposalStatus) -> list[Proposal]:
        if self._absent():
            return []
        with self.read() as db:
            rows = _rows(db, "SELECT * FROM proposals WHERE status = ? ORDER BY id", (status,))
        return [_row(r) for r in rows]

    # -- changes ------------------------------------------------------------------------

    def insert(
        self,
        db: sqlite3.Connection,
        agent: str,
        kind: ProposalKind,
        commit_ref: str,
        *,
        above: int = 0,
        created: float | None = None,
    ) -> int:
        """A new row; its id is above every id the index has ever given and above `above`
        (the highest proposal id the applied repos' tags know): ids are never reused,
        even after a crash left a tag the index lost, or a lost database. `created` is
        its time (now if not given; the caller records the same one in git)."""
        last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'proposals'").fetchone()
        proposal_id = max(last[0] if last else 0, above) + 1
        when = time.time() if created is None else created
        db.execute(
            "INSERT INTO proposals (id, agent, kind, commit_ref, status, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (proposal_id, agent, kind, commit_ref, ProposalStatus.PENDING, when),
        )
        return proposal_id

    def restore(
        self,
        proposal_id: int,
        agent: str,
        sha: str,
        status: ProposalStatus,
        *,
        kind: ProposalKind = ProposalKind.APPLY,
        commit_ref: str | None = None,
        previous_sha: str | None = None,
        note: str = "",
        error: str = "",
        created: float | None = None,
        resolved: float | None = None,
    ) -> None:
        """Index a proposal the applied repo records and the index lost (an emptied or
        re-created hive.sqlite): its id, commit and status from its tags, the rest from
        the records beside them (tagrecords.py). What a hive from before those records
        cannot say falls back: kind `apply`, the commit's short id as its ref, created
        now, and no `resolved` (tags carry no trusted time), so that it is never taken as
        evidence of which deploy came last."""
        with self.connect() as db:
            db.execute(
                "INSERT INTO proposals (id, agent, kind, commit_ref, fetched_sha, "
                "previous_sha, status, note, error, created, resolved) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    proposal_id,
                    agent,
                    kind,
                    sha[:12] if commit_ref is None else commit_ref,
                    sha,
                    previous_sha,
                    status,
                    note,
                    error,
                    time.time() if created is None else created,
                    resolved,
                ),
            )

    def forget(self, agent: str) -> int:
        """Drop every row of a purged agent (its tags went with its applied repo), so
        that a new agent of that name starts with a clean history. Ids stay used: the
        sequence keeps them. Returns how many rows went."""
        if self._absent():
            return 0
        with self.connect() as db:
            return db.execute("DELETE FROM proposals WHERE agent = ?", (agent,)).rowcount

    def ids(self) -> set[int]:
        if self._absent():
            return set()
        with self.read() as db:
            return {r["id"] for r in _rows(db, "SELECT id FROM proposals", ())}

    def set_status(
        self,
        proposal_id: int,
        status: ProposalStatus,
        *,
        note: str | None = None,
        error: str | None = None,
        fetched_sha: str | None = None,
        previous_sha: str | None = None,
        resolved: float | None = None,
    ) -> None:
        """Move a proposal on. An outcome's `resolved` is now unless given (the time its
        tag's record in git holds: the same float, so a rebuilt index is this one)."""
        final = status in (ProposalStatus.DEPLOYED, ProposalStatus.FAILED, ProposalStatus.DENIED)
        if not final:
            resolved = None
        elif resolved is None:
            resolved = time.time()
        with self.connect() as db:
            db.execute(
                "UPDATE proposals SET status = ?, note = COALESCE(?, note), "
                "error = COALESCE(?, error), fetched_sha = COALESCE(?, fetched_sha), "
                "previous_sha = COALESCE(?, previous_sha), resolved = ? WHERE id = ?",
                (
                    status,
                    note,
                    error,
                    fetched_sha,
                    previous_sha,
                    resolved,
                    proposal_id,
                ),
            )
