"""`hivegen logs NAME [-f] [-n N] [--json]`: the agent's container journal."""

from __future__ import annotations

import argparse
import sys

from hivegen.cli.common import _hive
from hivegen.errors import ExitCode
from hivegen.sanitize import terminal_line


def _cmd_logs(args: argparse.Namespace) -> int:
    from hivegen import jsondoc, logs

    hive = _hive(args)
    query = logs.Query(
        lines=args.lines,
        follow=args.follow,
        format=logs.Format.JSON if args.json else logs.Format.TEXT,
    )

    def show(line: str) -> None:
        # The container wrote every byte of it: no control reaches the terminal raw, and
        # one line stays one line.
        if args.json:
            # One document a line (JSON Lines), as journalctl -o json gives them.
            document = jsondoc.document(jsondoc.Kind.LOG_ENTRY, logs.entry_json(args.name, line))
            text = jsondoc.dumps(document, indent=None)
        else:
            text = terminal_line(line)
        sys.stdout.write(text + "\n")
        if args.follow:
            sys.stdout.flush()

    try:
        logs.show(hive, args.name, query, show)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED  # how -f ends: journalctl is stopped, nothing to say
    return ExitCode.OK
