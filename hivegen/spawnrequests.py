"""The manager's requests for new agents, queued for the operator (`hivegen serve`).

A request is one small JSON file, `<state>/requests/spawn/<name>.json`, in a directory
only root can reach (no container binds anything under `<state>/requests`). Files rather
than hive.sqlite: a request is not part of the deploy record the applied repos keep, and
it must survive a damaged or rebuilt index. Nothing is ever deleted: a spawn marks the
request `spawned`, a dismissal marks it `dismissed` with the operator's note, and a new
request for the same name re-queues it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from hivegen import fsutil, jsondoc, registry, safepath
from hivegen.config import Config
from hivegen.errors import HivegenError, UsageError
from hivegen.names import validate_agent_name

REQUESTS_DIR = PurePosixPath("requests/spawn")
# Enough for a manager's real plans, few enough that an operator reads them all.
MAX_QUEUED = 16


class RequestState(StrEnum):
    QUEUED = "queued"
    SPAWNED = "spawned"
    DISMISSED = "dismissed"


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    name: str
    state: RequestState
    requested: float
    resolved: float | None = None
    note: str = ""

    def as_record(self) -> dict[str, object]:
        """What the request's file holds (Unix times: `_read` reads them back)."""
        return {
            "name": self.name,
            "state": self.state.value,
            "requested": self.requested,
            "resolved": self.resolved,
            "note": self.note,
        }

    def as_json(self) -> dict[str, object]:
        """The `--json` and socket shape: times as RFC 3339 (jsondoc)."""
        return {
            **self.as_record(),
            "requested": jsondoc.time(self.requested),
            "resolved": jsondoc.time(self.resolved),
        }


class SpawnRequests:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.layout.root

    def _dir(self, *, create: bool) -> int | None:
        try:
            return safepath.open_dir(
                self.root, REQUESTS_DIR, create_mode=0o700 if create else None, owned=2
            )
        except FileNotFoundError:
            if create:
                raise
            return None  # no state root yet
        except safepath.UnsafePath as exc:
            if not create and exc.problem is None:
                return None  # never made: no request yet
            raise

    def _read(self, fd: int, filename: str) -> SpawnRequest | None:
        try:
            handle = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        except FileNotFoundError:
            return None
        with os.fdopen(handle, "rb") as stream:
            data = json.loads(stream.read(64 * 1024))
        return SpawnRequest(
            name=str(data["name"]),
            state=RequestState(data["state"]),
            requested=float(data["requested"]),
            resolved=None if data.get("resolved") is None else float(data["resolved"]),
            note=str(data.get("note", "")),
        )

    def _write(self, fd: int, request: SpawnRequest) -> None:
        data = json.dumps(request.as_record(), sort_keys=True).encode() + b"\n"
        shown = self.root / REQUESTS_DIR / f"{request.name}.json"
        fsutil.write_atomic_at(fd, f"{request.name}.json", data, shown, mode=0o600)

    def all(self) -> list[SpawnRequest]:
        """Every request ever made, oldest first."""
        fd = self._dir(create=False)
        if fd is None:
            return []
        try:
            found = []
            for filename in sorted(os.listdir(fd)):  # noqa: PTH208 -- a directory fd
                if filename.endswith(".json") and not filename.startswith("."):
                    request = self._read(fd, filename)
                    if request is not None:
                        found.append(request)
        finally:
            os.close(fd)
        return sorted(found, key=lambda r: (r.requested, r.name))

    def queued(self) -> list[SpawnRequest]:
        return [r for r in self.all() if r.state is RequestState.QUEUED]

    def get(self, name: str) -> SpawnRequest | None:
        validate_agent_name(name, self.config.hive.manager)
        fd = self._dir(create=False)
        if fd is None:
            return None
        try:
            return self._read(fd, f"{name}.json")
        finally:
            os.close(fd)

    def add(self, name: str) -> SpawnRequest:
        """Queue a request for agent `name` (the manager's; the caller holds the lock)."""
        manager = self.config.hive.manager
        validate_agent_name(name, manager)
        if name == manager:
            raise UsageError(f"{name!r} is the manager")
        if name in registry.scan(self.config).registered:
            raise UsageError(f"agent {name!r} already exists")
        queued = self.queued()
        if any(r.name == name for r in queued):
            raise UsageError(f"a spawn of {name!r} is already queued for the operator")
        if len(queued) >= MAX_QUEUED:
            raise HivegenError(
                f"{len(queued)} spawn requests are already queued (at most {MAX_QUEUED})",
                hint="wait for the operator to answer them",
            )
        return self._save(SpawnRequest(name, RequestState.QUEUED, time.time()))

    def resolve(self, name: str, state: RequestState, note: str = "") -> SpawnRequest | None:
        """Mark a queued request spawned or dismissed; None when none is queued."""
        current = self.get(name)
        if current is None or current.state is not RequestState.QUEUED:
            return None
        return self._save(SpawnRequest(name, state, current.requested, time.time(), note))

    def _save(self, request: SpawnRequest) -> SpawnRequest:
        fd = self._dir(create=True)
        assert fd is not None
        try:
            self._write(fd, request)
        finally:
            os.close(fd)
        return request
