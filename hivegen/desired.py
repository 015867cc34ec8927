"""Whether the operator wants each agent running: what `reconcile` brings back at boot.

spawn, start and restart record "running"; stop and destroy record "stopped", before
they act, so that an interrupted verb still leaves the operator's intent behind. A
container that crashed, or that a reboot stopped, keeps "running".

The record is a file in the agent's applied .git (only root writes there; the manager
sees that repo read-only): it survives reboots, is in every backup of the state root,
and is read without hive.sqlite, which is an index and may be rebuilt.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

from hivegen import fsutil
from hivegen.layout import Layout

DESIRED_RECORD = "hivegen-desired"


class Desired(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


def record_path(layout: Layout, name: str) -> Path:
    return layout.applied(name) / ".git" / DESIRED_RECORD


def record(layout: Layout, name: str, desired: Desired) -> None:
    """Write it (atomically; nothing is written when it is already so)."""
    fsutil.write_atomic(record_path(layout, name), f"{desired}\n")


def read(layout: Layout, name: str) -> Desired | None:
    """The recorded intent, or None: none recorded (a hive from before hivegen recorded
    it) or not one of the two words (doctor reports both)."""
    try:
        fd = os.open(record_path(layout, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 64).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    try:
        return Desired(text)
    except ValueError:
        return None
