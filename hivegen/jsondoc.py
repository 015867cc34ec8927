"""The documents `--json` prints: their kinds, versions and time format.

Every document is a JSON object whose `schema` field names its kind and version,
`hivegen.<kind>/<version>` (`hivegen.status/1`), and `hivegen/schemas/<kind>.json` is
its JSON Schema (docs/json.md says what each field means). A version grows only when a
field is removed, renamed or changes meaning; a field added is not a new version, so a
consumer ignores fields it does not know. Times are RFC 3339 (ISO 8601) strings in UTC
(`2026-12-02T04:54:49Z`); durations are numbers of seconds.

A command that fails prints a document too: its own where the failure is a result (a
build that failed, a batch where some agent failed), else `hivegen.error/1`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    PORT = "port"
    RENDER = "render"
    INIT = "init"
    META_CHECK = "meta-check"
    META_SYNC = "meta-sync"
    META_UPDATE = "meta-update"
    LIFECYCLE = "lifecycle"
    LIST = "list"
    STATUS = "status"
    LOG_ENTRY = "log-entry"
    PROPOSAL = "proposal"
    PENDING = "pending"
    SPAWN_REQUEST = "spawn-request"
    DEPLOYMENT = "deployment"
    DRY_RUN = "dry-run"
    HISTORY = "history"
    ROLLOUT = "rollout"
    DOCTOR = "doctor"
    RECONCILE = "reconcile"
    ERROR = "error"


# Each kind's version: bumped alone when that kind changes incompatibly.
VERSIONS: Mapping[Kind, int] = dict.fromkeys(Kind, 1)


def schema_id(kind: Kind) -> str:
    return f"hivegen.{kind}/{VERSIONS[kind]}"


def document(kind: Kind, body: Mapping[str, object]) -> dict[str, object]:
    """`body` as a document of `kind`, with its `schema` field."""
    assert "schema" not in body, "a document's body names no schema of its own"
    return {"schema": schema_id(kind), **body}


def dumps(document: Mapping[str, object], *, indent: int | None = 2) -> str:
    """The document as printed: `schema` first, every other key sorted (stable output),
    and only ASCII (every other character a \\uXXXX escape: no C1 control or bidi
    override reaches a terminal raw; the decoded value is the exact text)."""
    import json  # when a document is printed: the parser only names the kinds

    ordered = {"schema": document["schema"], **_sorted(dict(document))}
    return json.dumps(ordered, indent=indent, ensure_ascii=True)


def _sorted(value: object) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(item) for item in value]
    return value


def time(stamp: float | None) -> str | None:
    """A Unix time as the documents give it: UTC, to the second (None stays None)."""
    from datetime import UTC, datetime  # not for `hivegen --help`

    if stamp is None:
        return None
    moment = datetime.fromtimestamp(stamp, UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def precise_time(microseconds: int) -> str:
    """A journal entry's time (microseconds since the epoch), to the microsecond."""
    from datetime import UTC, datetime

    seconds, micros = divmod(microseconds, 1_000_000)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def schema(kind: Kind) -> dict[str, Any]:
    """The JSON Schema of `kind` (installed with the package)."""
    import json
    from importlib import resources

    text = resources.files("hivegen.schemas").joinpath(f"{kind}.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded
