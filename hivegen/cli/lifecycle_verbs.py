"""spawn, start, stop, restart, rebuild, destroy: on one agent, several, or --all
(hivegen.batch does the order, the checks and the lock)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from hivegen.cli.common import PROG, _confirm, _hive, _print_json, error_json
from hivegen.errors import ExitCode, HivegenError
from hivegen.jsondoc import Kind
from hivegen.sanitize import terminal, terminal_line


def _cmd_lifecycle(args: argparse.Namespace) -> int:
    from hivegen import batch

    hive = _hive(args)
    verb = batch.Verb(args.verb)
    names = batch.targets(hive, verb, args.names, everyone=getattr(args, "all", False))
    if verb is batch.Verb.DESTROY:
        _confirm_destroy(args, hive, names)
    purge = getattr(args, "purge", False)
    if len(names) == 1 and not getattr(args, "all", False):
        return _run_single(args, hive, verb, names[0], purge=purge)
    outcomes = batch.run_each(hive, verb, names, purge=purge)
    failed = [o for o in outcomes if o.error is not None]
    if args.json:
        _print_json(Kind.LIFECYCLE, _lifecycle_json(verb, outcomes))
    else:
        for outcome in outcomes:
            for step in outcome.steps:
                print(f"{outcome.agent}: {terminal_line(step)}")
            if outcome.error is not None:
                _report_for(outcome.agent, outcome.error)
    if not failed:
        return ExitCode.OK
    print(
        f"{PROG}: {verb} failed for {len(failed)} of {len(outcomes)}: "
        f"{', '.join(o.agent for o in failed)}",
        file=sys.stderr,
    )
    codes = {o.error.exit_code for o in failed if o.error is not None}
    return int(codes.pop()) if len(codes) == 1 else int(ExitCode.FAILED)


def _confirm_destroy(args: argparse.Namespace, hive: Any, names: Sequence[str]) -> None:
    from hivegen.names import Role

    managers = [n for n in names if hive.spec(n).role is Role.MANAGER]
    if args.purge or managers:
        what = "delete" if args.purge else "destroy"
        owners = ", ".join(f"{n}'s" for n in names)
        detail = (
            f"{owners} container, repos, credentials and notes (--purge)"
            if args.purge
            else f"the manager's container ({managers[0]}), which every agent answers to"
        )
        _confirm(args, f"{what} {detail}")


def _run_single(args: argparse.Namespace, hive: Any, verb: Any, name: str, *, purge: bool) -> int:
    """One agent: its error is the command's, as it always was."""
    from hivegen import batch

    try:
        log = batch.run_one(hive, verb, name, purge=purge)
    except HivegenError as error:
        if args.json:
            _print_json(Kind.LIFECYCLE, _lifecycle_json(verb, [batch.Outcome(name, error=error)]))
        raise
    if args.json:
        _print_json(Kind.LIFECYCLE, _lifecycle_json(verb, [batch.Outcome(name, tuple(log.steps))]))
    else:
        for step in log.steps:
            print(f"{name}: {terminal_line(step)}")
    return ExitCode.OK


def _lifecycle_json(verb: Any, outcomes: Sequence[Any]) -> dict[str, object]:
    return {
        "verb": str(verb),
        "ok": all(o.ok for o in outcomes),
        "agents": [
            {
                "agent": o.agent,
                "ok": o.ok,
                "steps": list(o.steps),
                "error": None if o.error is None else error_json(o.error),
            }
            for o in outcomes
        ],
    }


def _report_for(agent: str, error: HivegenError) -> None:
    # The same lines as the command's own error, named by agent.
    print(f"{PROG}: error: {agent}: {terminal(error.message)}", file=sys.stderr)
    if error.hint:
        print(f"{PROG}: hint: {terminal(error.hint)}", file=sys.stderr)
