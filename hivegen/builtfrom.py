"""Which locked inputs an agent's running system was built from: "needs rebuild" without
evaluating Nix.

At every deploy (spawn, approve, rollback, rebuild; wherever the system record is
written), hivegen notes the meta flake.lock's revisions of the inputs that agent's
system depends on: the base flake (`hyperhive`), its own `agent-<n>`, and every input
locked beneath them, by path (`hyperhive/nixpkgs`). `status` compares that with the
lock as it is now: after `hivegen meta update hyperhive`, every agent not rebuilt since
shows as needing it. A JSON file and one lock read: no process, no evaluation.

What the lock does not capture is not seen: a change of hivegen's own templates (the
meta flake's text) is only noticed by a build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hivegen import fsutil
from hivegen.layout import Layout
from hivegen.meta import input_name

RECORD = "hivegen-built-from"
BASE_INPUT = "hyperhive"


def fingerprint(lock: dict[str, Any] | None, agent: str) -> dict[str, str] | None:
    """Input path → locked identity (narHash, else rev) for `agent`; None if the lock
    cannot say (missing or unreadable)."""
    if not lock:
        return None
    try:
        nodes: dict[str, Any] = lock["nodes"]
        root = nodes[lock.get("root", "root")]
        inputs: dict[str, Any] = root.get("inputs", {})
    except (KeyError, TypeError, AttributeError):
        return None
    found: dict[str, str] = {}
    todo = [(name, inputs[name]) for name in (BASE_INPUT, input_name(agent)) if name in inputs]
    seen: set[str] = set()
    while todo:
        path, node_name = todo.pop()
        if not isinstance(node_name, str):
            continue  # a `follows` (a list): the node it names is walked on its own path
        node = nodes.get(node_name)
        if not isinstance(node, dict):
            continue
        locked = node.get("locked", {})
        found[path] = str(locked.get("narHash") or locked.get("rev") or json.dumps(locked))
        if node_name in seen:
            continue
        seen.add(node_name)
        for child, target in sorted(node.get("inputs", {}).items()):
            todo.append((f"{path}/{child}", target))
    return dict(sorted(found.items()))


def _path(layout: Layout, agent: str) -> Path:
    return layout.applied(agent) / ".git" / RECORD


def record(layout: Layout, agent: str, lock: dict[str, Any] | None) -> None:
    inputs = fingerprint(lock, agent)
    if inputs is not None:
        text = json.dumps({"inputs": inputs}, indent=1, sort_keys=True) + "\n"
        fsutil.write_atomic(_path(layout, agent), text)


def recorded(layout: Layout, agent: str) -> dict[str, str] | None:
    try:
        data = json.loads(_path(layout, agent).read_text())
        inputs = data["inputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return inputs if isinstance(inputs, dict) else None


def stale_inputs(layout: Layout, agent: str, lock: dict[str, Any] | None) -> list[str] | None:
    """The input paths whose lock moved since the agent's system was built (empty: up
    to date); None when there is nothing to compare (no record yet, or no lock)."""
    before = recorded(layout, agent)
    now = fingerprint(lock, agent)
    if before is None or now is None:
        return None
    return sorted(p for p in set(before) | set(now) if before.get(p) != now.get(p))
