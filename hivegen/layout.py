"""Where everything lives under the state root (DESIGN.md, "State layout")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The state root's directories and their modes (credentials are never readable by
# others); `init` makes them, doctor checks them.
TOP_DIRS = (
    ("agents", 0o755),
    ("notes", 0o755),
    ("credentials", 0o700),
    ("applied", 0o755),
    ("meta", 0o755),
    ("shared", 0o755),
)


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def agents(self) -> Path:
        return self.root / "agents"

    @property
    def credentials_root(self) -> Path:
        # Not under agents/: the manager's RW /agents bind must not expose credentials.
        return self.root / "credentials"

    @property
    def notes_root(self) -> Path:
        # Not under agents/ either: a bind source inside the manager's RW /agents bind is
        # one the manager can swap for a symlink (see safepath.py).
        return self.root / "notes"

    @property
    def applied_root(self) -> Path:
        return self.root / "applied"

    @property
    def meta(self) -> Path:
        return self.root / "meta"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def database(self) -> Path:
        return self.root / "hive.sqlite"

    @property
    def lock(self) -> Path:
        return self.root / ".hivegen.lock"

    def proposed(self, name: str) -> Path:
        return self.agents / name / "config"

    def notes(self, name: str) -> Path:
        return self.notes_root / name

    def legacy_notes(self, name: str) -> Path:
        """Where notes lived before hivegen moved them out of the manager's reach."""
        return self.agents / name / "state"

    def credentials(self, name: str) -> Path:
        return self.credentials_root / name

    def applied(self, name: str) -> Path:
        return self.applied_root / name
