"""Which agents the hive has: applied repos that carry `deployed/0`.

Read straight from the filesystem (loose ref or packed-refs), so listing the hive
starts no process; never derived from `nixos-container list`, whose failure must not
look like an empty hive.
"""

from __future__ import annotations

import os
from pathlib import Path

from hivegen import names
from hivegen.config import Config
from hivegen.errors import HivegenError

DEPLOYED_ZERO = "refs/tags/deployed/0"


def has_ref(git_dir: Path, ref: str) -> bool:
    if (git_dir / ref).is_file():
        return True
    try:
        packed = (git_dir / "packed-refs").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return False
    suffix = f" {ref}"
    return any(line.endswith(suffix) for line in packed.splitlines())


def registered_agents(config: Config) -> tuple[str, ...]:
    """Sorted names of every agent whose applied repo has `deployed/0`."""
    root = config.layout.applied_root
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise HivegenError(f"cannot list {root}: {exc.strerror}") from exc
    found = []
    for entry in entries:
        name = entry.name
        try:
            names.validate_agent_name(name, config.hive.manager)
        except HivegenError:
            continue  # not ours: hivegen never creates such a directory
        if entry.is_dir(follow_symlinks=False) and has_ref(Path(entry.path, ".git"), DEPLOYED_ZERO):
            found.append(name)
    return tuple(sorted(found))
