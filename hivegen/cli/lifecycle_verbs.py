"""spawn, start, stop, restart, rebuild, destroy: on one agent, several, or --all
(hivegen.batch does the order, the checks and the lock)."""

from __future__ import annotations

import argparse
import sys

from hivegen.cli.common import PROG, _confirm, _hive, _print_json
from hivegen.errors import ExitCode, HivegenError
from hivegen.sanitize import terminal, terminal_line


def _cmd_lifecycle(args: argparse.Namespace) -> int:
    from hivegen import batch
    from hivegen.names import Role

    hive = _hive(args)
    verb = batch.Verb(args.verb)
    names = batch.targets(hive, verb, args.names, everyone=getattr(args, "all", False))
    if verb is batch.Verb.DESTROY:
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
    purge = getattr(args, "purge", False)
    if len(names) == 1 and not getattr(args, "all", False):
        # One agent: its error is the command's, as it always was.
        log = batch.run_one(hive, verb, names[0], purge=purge)
        if args.json:
            _print_json({"agent": names[0], "verb": str(verb), "steps": list(log.steps)})
        else:
            for step in log.steps:
                print(f"{names[0]}: {terminal_line(step)}")
        return ExitCode.OK
    outcomes = batch.run_each(hive, verb, names, purge=purge)
    failed = [o for o in outcomes if o.error is not None]
    if args.json:
        _print_json(
            {
                "verb": str(verb),
                "ok": not failed,
                "agents": [
                    {
                        "agent": o.agent,
                        "ok": o.ok,
                        "steps": list(o.steps),
                        "error": None
                        if o.error is None
                        else {"message": o.error.message, "hint": o.error.hint},
                    }
                    for o in outcomes
                ],
            }
        )
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


def _report_for(agent: str, error: HivegenError) -> None:
    # The same lines as the command's own error, named by agent.
    print(f"{PROG}: error: {agent}: {terminal(error.message)}", file=sys.stderr)
    if error.hint:
        print(f"{PROG}: hint: {terminal(error.hint)}", file=sys.stderr)
