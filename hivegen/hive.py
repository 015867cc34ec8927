"""The verbs. Every mutating one runs under the hive lock; none prints."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hivegen import fsutil
from hivegen.config import Config
from hivegen.meta import Meta, SyncPlan, SyncResult, UpdateResult
from hivegen.repos import git_for


@dataclass(frozen=True, slots=True)
class LockPolicy:
    wait: bool = True
    # Called once if the lock is held by another hivegen and this one starts waiting.
    on_wait: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class InitResult:
    created: tuple[Path, ...]
    fixed_modes: tuple[Path, ...]


class Hive:
    def __init__(self, config: Config, lock_policy: LockPolicy | None = None) -> None:
        self.config = config
        self.layout = config.layout
        self.git = git_for(config)
        self.meta = Meta(config, self.git)
        self.lock_policy = lock_policy or LockPolicy()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with fsutil.hive_lock(
            self.layout.lock, wait=self.lock_policy.wait, on_wait=self.lock_policy.on_wait
        ):
            yield

    def init(self) -> InitResult:
        """Create the state root layout; idempotent. Credentials are always 0700."""
        layout = self.layout
        dirs = [
            (layout.root, 0o755, False),
            (layout.agents, 0o755, False),
            (layout.credentials_root, 0o700, True),
            (layout.applied_root, 0o755, False),
            (layout.meta, 0o755, False),
            (layout.shared, 0o755, False),
        ]
        created: list[Path] = []
        fixed: list[Path] = []
        fsutil.ensure_dir(layout.root, 0o755)
        with self.locked():
            for path, mode, enforce in dirs:
                before = path.stat().st_mode & 0o7777 if path.exists() else None
                if fsutil.ensure_dir(path, mode, enforce_mode=enforce):
                    created.append(path)
                elif before is not None and before != mode and enforce:
                    fixed.append(path)
        return InitResult(tuple(created), tuple(fixed))

    def meta_plan(self) -> SyncPlan:
        """What `meta sync` would do; starts no process and takes no lock."""
        return self.meta.plan()[0]

    def meta_sync(self) -> SyncResult:
        # A no-op needs neither the lock nor a process; only a real sync waits for the lock.
        plan = self.meta_plan()
        if not plan.needed:
            return SyncResult(plan)
        with self.locked():
            return self.meta.sync()

    def meta_update(self, inputs: Sequence[str]) -> UpdateResult:
        with self.locked():
            return self.meta.update(inputs)
