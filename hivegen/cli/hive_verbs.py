"""The verbs on the hive as a whole: init, meta sync and meta update, doctor and
reconcile."""

from __future__ import annotations

import argparse
import sys

from hivegen.cli.common import PROG, _hive, _print_json, _short
from hivegen.errors import ExitCode
from hivegen.jsondoc import Kind
from hivegen.sanitize import terminal, terminal_line


def _cmd_init(args: argparse.Namespace) -> int:
    hive = _hive(args)
    result = hive.init()
    if args.json:
        _print_json(
            Kind.INIT,
            {
                "state_root": str(hive.layout.root),
                "created": [str(p) for p in result.created],
                "fixed_modes": [str(p) for p in result.fixed_modes],
                "migrated_notes": list(result.migrated_notes),
            },
        )
        return ExitCode.OK
    for path in result.created:
        print(f"created {path}")
    for path in result.fixed_modes:
        print(f"fixed mode of {path}")
    for name in result.migrated_notes:
        print(f"moved {name}'s notes to {hive.layout.notes(name)} (out of the manager's reach)")
    if not result.created and not result.fixed_modes and not result.migrated_notes:
        print(f"hive at {hive.layout.root} is already set up")
    return ExitCode.OK


def _cmd_meta_sync(args: argparse.Namespace) -> int:
    hive = _hive(args)
    if args.check:
        plan = hive.meta_plan()
        if args.json:
            _print_json(
                Kind.META_CHECK,
                {
                    "up_to_date": not plan.needed,
                    "agents": list(plan.agents),
                    "changes": plan.describe(),
                },
            )
        elif plan.needed:
            print("meta flake is out of date:")
            for line in plan.describe():
                print(f"  {terminal_line(line)}")
        else:
            print(f"meta flake is up to date ({len(plan.agents)} agents)")
        return ExitCode.DRIFT if plan.needed else ExitCode.OK
    result = hive.meta_sync()
    if args.json:
        _print_json(
            Kind.META_SYNC,
            {
                "changed": result.commit is not None,
                "commit": result.commit,
                "overwritten": result.overwritten,
                "agents": list(result.plan.agents),
                "changes": result.plan.describe(),
            },
        )
    else:
        if result.overwritten is not None:
            print(
                f"{hive.layout.meta}/flake.nix had been edited by hand; hivegen owns it and "
                "put back what it renders (the edit, as a diff):"
            )
            sys.stdout.write(terminal(result.overwritten))
        if result.commit:
            for line in result.plan.describe():
                print(f"  {terminal_line(line)}")
            print(f"meta flake committed {result.commit[:12]} ({len(result.plan.agents)} agents)")
        elif result.overwritten is None:
            print(f"meta flake is up to date ({len(result.plan.agents)} agents)")
        else:
            print(f"meta flake is as committed again ({len(result.plan.agents)} agents)")
    return ExitCode.OK


def _cmd_meta_update(args: argparse.Namespace) -> int:
    result = _hive(args).meta_update(args.inputs)
    if args.json:
        _print_json(
            Kind.META_UPDATE,
            {
                "commit": result.commit,
                "inputs": [
                    {
                        "name": c.name,
                        "old_rev": c.old_rev,
                        "new_rev": c.new_rev,
                        "old_nar_hash": c.old_nar_hash,
                        "new_nar_hash": c.new_nar_hash,
                        "changed": c.changed,
                    }
                    for c in result.changes
                ],
            },
        )
        return ExitCode.OK
    for change in result.changes:
        # Revs and hashes come from nix's view of the fetched inputs: shown one-line, inert.
        name, old_hash, new_hash = (
            terminal_line(str(x)) for x in (change.name, change.old_nar_hash, change.new_nar_hash)
        )
        old_rev, new_rev = (
            terminal_line(_short(change.old_rev)),
            terminal_line(_short(change.new_rev)),
        )
        if not change.changed:
            print(f"{name}: unchanged (rev {new_rev}, {new_hash})")
            continue
        print(f"{name}:")
        print(f"  rev      {old_rev} -> {new_rev}")
        print(f"  narHash  {old_hash} -> {new_hash}")
    if result.commit:
        print(f"meta flake committed {result.commit[:12]}")
    else:
        print("nothing changed; no commit")
    return ExitCode.OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from hivegen.doctor import Doctor

    report = Doctor(_hive(args)).run(repair=args.repair)
    if args.json:
        _print_json(
            Kind.DOCTOR,
            {
                "repaired": list(report.repaired),
                "findings": [
                    {
                        "check": str(f.check),
                        "agent": f.agent,
                        "severity": str(f.severity),
                        "message": f.message,
                        "hint": f.hint,
                        "repairable": f.repairable,
                    }
                    for f in report.findings
                ],
            },
        )
    else:
        for line in report.repaired:
            print(f"repaired: {terminal_line(line)}")
        for finding in report.findings:
            fix = " [--repair fixes it]" if finding.repairable else ""
            print(f"{finding.severity}: {finding.check}: {terminal(finding.message)}{fix}")
            if finding.hint:
                print(f"  hint: {terminal(finding.hint)}")
        if not report.problems:
            print("the hive is healthy")
    return ExitCode.DRIFT if report.problems else ExitCode.OK


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from hivegen.reconcile import Outcome, Reconciler

    report = Reconciler(_hive(args)).run()
    if args.json:
        _print_json(
            Kind.RECONCILE,
            {
                "settled": list(report.settled),
                "errors": list(report.errors),
                "agents": [
                    {
                        "name": a.name,
                        "outcome": str(a.outcome),
                        "steps": list(a.steps),
                        "error": a.error,
                        "hint": a.hint,
                    }
                    for a in report.agents
                ],
                "foreign": list(report.foreign),
            },
        )
        return ExitCode.FAILED if report.failed else ExitCode.OK
    for line in report.settled:
        print(f"settled: {terminal_line(line)}")
    for line in report.errors:
        print(f"{PROG}: error: {terminal_line(line)}", file=sys.stderr)
    for agent in report.agents:
        for step in agent.steps:
            print(f"{agent.name}: {terminal_line(step)}")
        if agent.error is not None:
            # stderr: under systemd it is the journal's error priority for the unit.
            print(f"{PROG}: error: {agent.name}: {terminal(agent.error)}", file=sys.stderr)
        elif agent.outcome is not Outcome.STARTED:
            print(f"{agent.name}: {agent.outcome}")
        if agent.hint:
            print(f"  hint: {terminal(agent.hint)}", file=sys.stderr if agent.error else None)
    for container in report.foreign:
        print(f"{container}: not created by hivegen; left alone")
    if not report.agents:
        print("no agents yet: hivegen spawn NAME creates one")
    return ExitCode.FAILED if report.failed else ExitCode.OK
