"""Moving notes out of the manager's reach: `agents/<n>/state` → `notes/<n>`.

Older hives kept every agent's notes in `agents/<n>/state`, inside the manager's RW
`/agents` bind, where the manager could replace any of them with a symlink that
systemd-nspawn would follow (see safepath.py). hivegen now keeps them in `notes/<n>`.
A state root from before is migrated one agent at a time by `hivegen init`,
`doctor --repair`, and the first verb that needs the agent's notes:

- the move is one rename(2) between two directories held open, so it never copies,
  never follows a link and loses nothing: the same directory (same inode) changes
  name, and a running container keeps its mount of it;
- only a real directory moves. A symlink, file or anything else found at the old path
  is refused (exit 2) and left exactly where it is; if the manager swaps the directory
  in the instant between the check and the rename, what arrived is put back and the
  migration refused;
- when `notes/<n>` already exists the old path is left alone (never merged, never
  deleted); `doctor` reports one that still holds files.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import PurePosixPath

from hivegen import safepath
from hivegen.errors import HivegenError
from hivegen.layout import Layout

LEGACY = "state"


def legacy_entry(layout: Layout, name: str) -> os.stat_result | None:
    """lstat of `agents/<n>/state`, or None (also when `agents/<n>` is not a real dir)."""
    try:
        fd = safepath.open_dir(layout.root, PurePosixPath("agents", name), owned=0)
    except (safepath.UnsafePath, OSError):
        return None
    try:
        return safepath.lstat_at(fd, LEGACY)
    finally:
        os.close(fd)


def needs_migration(layout: Layout, name: str) -> bool:
    """Old notes exist and `notes/<n>` does not."""
    if os.path.lexists(layout.notes(name)):
        return False
    return legacy_entry(layout, name) is not None


def migrate(layout: Layout, name: str) -> bool:
    """Move `agents/<n>/state` to `notes/<n>` if it must; True when it moved."""
    if not needs_migration(layout, name):
        return False
    old = layout.legacy_notes(name)
    with (
        safepath.opened_dir(layout.root, "notes", create_mode=0o755) as notes_fd,
        safepath.opened_dir(layout.root, PurePosixPath("agents", name), owned=0) as agent_fd,
    ):
        st = safepath.lstat_at(agent_fd, LEGACY)
        if st is None:
            return False
        if not stat.S_ISDIR(st.st_mode):
            raise safepath.UnsafePath(
                f"unsafe path {old}: it is {safepath.describe(st, agent_fd, LEGACY)}; "
                f"notes are moved to {layout.notes(name)} only from a real directory",
                hint="look at what it points to and move the notes by hand; nothing was moved",
            )
        if safepath.lstat_at(notes_fd, name) is not None:
            return False
        os.rename(LEGACY, name, src_dir_fd=agent_fd, dst_dir_fd=notes_fd)
        arrived = safepath.lstat_at(notes_fd, name)
        if arrived is None or (arrived.st_dev, arrived.st_ino) != (st.st_dev, st.st_ino):
            # Swapped between the lstat and the rename: put back what came, refuse.
            with contextlib.suppress(OSError):
                os.rename(name, LEGACY, src_dir_fd=notes_fd, dst_dir_fd=agent_fd)
            raise HivegenError(
                f"{old} changed while hivegen was moving it; nothing was moved",
                hint="hivegen doctor shows what is there now",
            )
        os.fsync(notes_fd)
        os.fsync(agent_fd)
    return True
