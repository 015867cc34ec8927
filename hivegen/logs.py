"""An agent's container journal: `journalctl -M <container>`, as on a NixOS host.

journalctl is systemd's (nothing to install on NixOS); `-M` reads the journal of a
running container through systemd-machined, so a stopped one has none to show here and
the error says where its unit's log is (the host's journal). Every line is the
container's own text, hostile to root's terminal: `show` hands the lines over as they
come, exactly as journalctl printed them, and the front end shows each one through
`sanitize.terminal_line`. `--all` makes journalctl print a message it finds unprintable
(journalctl's `[17B blob data]` otherwise), so the operator sees its escapes instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, assert_never

from hivegen import jsondoc, process
from hivegen.errors import CommandError, HivegenError

if TYPE_CHECKING:
    from hivegen.hive import Hive

JOURNALCTL = "journalctl"


class Format(StrEnum):
    TEXT = "text"  # journalctl -o short-iso: one line an entry, further lines indented
    JSON = "json"  # journalctl -o json: one JSON object a line


@dataclass(frozen=True, slots=True)
class Query:
    # The last N entries; None: all of them.
    lines: int | None
    follow: bool = False
    format: Format = Format.TEXT


def journalctl_argv(container: str, query: Query) -> list[str]:
    lines = "all" if query.lines is None else str(query.lines)
    # --lines=N, not `-n N`: -n's value is optional, and getopt would not take one that
    # stood apart if it ever failed to parse.
    argv = [JOURNALCTL, f"--machine={container}", "--no-pager", "--all", f"--lines={lines}"]
    match query.format:
        case Format.TEXT:
            argv.append("--output=short-iso")
        case Format.JSON:
            # --quiet: no "-- Boot … --" or "-- No entries --" among the JSON lines.
            argv += ["--output=json", "--quiet"]
        case unreachable:
            assert_never(unreachable)
    if query.follow:
        argv.append("--follow")
    return argv


def show(hive: Hive, name: str, query: Query, on_line: Callable[[str], None]) -> None:
    """Run journalctl on NAME's container, each stdout line to `on_line` as it comes.

    With `follow` it returns only when journalctl ends; KeyboardInterrupt (and whatever
    `on_line` raises) stops journalctl first.
    """
    spec = hive.registered(name)
    hive.require_container(spec)
    argv = journalctl_argv(spec.container, query)
    out = process.run(argv, process.RunOpts(env=hive.host.env, check=False, on_stdout_line=on_line))
    if out.ok:
        return
    # journalctl's words for a machine it cannot open vary across systemd versions:
    # the unit's state says plainly why.
    if not hive.host.unit_state(spec.container).running:
        raise HivegenError(
            f"{spec.container} is not running: journalctl -M reads the journal of a running "
            "container only",
            hint=f"hivegen start {name}; the host's log of its unit, kept while it is "
            f"stopped: journalctl -u container@{spec.container}.service",
        )
    raise CommandError(out.argv, out.returncode, out.stderr_tail())


def entry(line: str) -> dict[str, object]:
    """One line of `--output=json`: an entry's fields (a value that is not printable
    UTF-8 is a list of byte values, as journalctl gives it)."""
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise HivegenError(f"journalctl printed a line that is not a JSON object: {line[:200]!r}")
    return value


def entry_json(agent: str, line: str) -> dict[str, object]:
    """One `--output=json` line as a log-entry document's body: its time, its message
    (text, or journalctl's list of byte values for one that is not printable UTF-8),
    and every field as journalctl gave it."""
    fields = entry(line)
    stamp = fields.get("__REALTIME_TIMESTAMP")
    return {
        "agent": agent,
        "time": jsondoc.precise_time(int(stamp))
        if isinstance(stamp, str) and stamp.isdigit()
        else None,
        "message": fields.get("MESSAGE"),
        "fields": fields,
    }
