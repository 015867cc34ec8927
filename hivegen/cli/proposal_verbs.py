"""The review verbs: propose, pending (and the manager's spawn requests), dismiss,
diff, approve, deny, history, rollback."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hivegen.cli.common import _age, _confirm, _hive, _print_json, _print_table, _short
from hivegen.errors import ExitCode, UsageError
from hivegen.highlight import Language
from hivegen.jsondoc import Kind
from hivegen.sanitize import terminal, terminal_line


def _proposals(args: argparse.Namespace) -> Any:
    from hivegen.proposals import Proposals

    return Proposals(_hive(args))


def _proposal_json(proposal: Any) -> dict[str, object]:
    from hivegen.store import proposal_json

    return proposal_json(proposal)


def _cmd_propose(args: argparse.Namespace) -> int:
    proposals = _proposals(args)
    proposal = proposals.propose(args.agent, args.rev, allow_flake_inputs=args.allow_flake_inputs)
    if args.json:
        _print_json(
            Kind.PROPOSAL, {**_proposal_json(proposal), "subject": proposals.subject(proposal)}
        )
    else:
        print(proposal.id)
        print(
            f"proposal {proposal.id}: {proposal.agent} {_short(proposal.fetched_sha)} "
            f"(hivegen diff {proposal.id}; hivegen approve {proposal.id})",
            file=sys.stderr,
        )
    return ExitCode.OK


def _cmd_pending(args: argparse.Namespace) -> int:
    import time

    from hivegen import registry, unproposed
    from hivegen.spawnrequests import SpawnRequests

    proposals = _proposals(args)
    entries = proposals.pending()
    requests = SpawnRequests(proposals.hive.config).queued()
    layout = proposals.hive.layout
    unasked = unproposed.of_agents(layout, registry.registered_agents(proposals.hive.config))
    now = time.time()
    if args.json:
        document: dict[str, object] = {
            "proposals": [
                {
                    **_proposal_json(e.proposal),
                    "subject": e.subject,
                    "superseded": e.superseded,
                    "flake_inputs": _flake_json(e.flake),
                }
                for e in entries
            ],
            "unproposed": [u.as_json() for u in unasked],
            "spawn_requests": [r.as_json() for r in requests],
        }
        # --unproposed, --spawn-requests: that list alone.
        only = (
            "unproposed" if args.unproposed else "spawn_requests" if args.spawn_requests else None
        )
        _print_json(Kind.PENDING, {only: document[only]} if only else document)
    elif not entries:
        print("no pending proposals")
    else:
        _print_table(
            ["ID", "AGENT", "SHA", "AGE", "SUBJECT"],
            [
                [
                    e.proposal.id,
                    e.proposal.agent,
                    _short(e.proposal.fetched_sha, 7),
                    _age(now - e.proposal.created),
                    ("(superseded) " if e.superseded else "")
                    + (
                        e.subject
                        if e.flake.clean
                        else f"!! FLAKE INPUTS ({', '.join(n for n, _ in e.flake.inputs) or '?'}) "
                        + e.subject
                    ),
                ]
                for e in entries
            ],
        )
        if any(e.superseded for e in entries):
            print(
                "\n(superseded): made before the agent's current deploy and not containing "
                "it; approve refuses it without --force"
            )
        for e in entries:
            if not e.flake.clean:
                sys.stdout.write("\n" + _flake_warning(e.proposal.agent, e.proposal.id, e.flake))
    if unasked and not args.json:
        _print_unproposed(unasked)
    if requests and not args.json:
        print("\nspawn requests from the manager (hivegen spawn NAME; hivegen dismiss NAME):")
        _print_table(["NAME", "AGE"], [[r.name, _age(now - r.requested)] for r in requests])
    return ExitCode.OK


def _print_unproposed(unasked: list[Any]) -> None:
    """The commits on the manager's main that nobody proposed (the manager wrote their
    subjects: the table shows them sanitised, as every cell)."""
    print(
        "\ncommits the manager made that nobody proposed "
        "(hivegen propose AGENT proposes the tip of its main):"
    )
    rows = [[u.agent, c.sha[:7], c.subject] for u in unasked for c in u.commits]
    if rows:
        _print_table(["AGENT", "SHA", "SUBJECT"], rows)
    for u in unasked:
        if u.error is not None:
            print(f"{u.agent}: cannot tell: {terminal_line(u.error)}")


def _cmd_dismiss(args: argparse.Namespace) -> int:
    from hivegen.proposals import validate_note
    from hivegen.spawnrequests import RequestState, SpawnRequests

    note = validate_note(args.note)
    hive = _hive(args)
    with hive.locked():
        answered = SpawnRequests(hive.config).resolve(args.name, RequestState.DISMISSED, note)
    if answered is None:
        raise UsageError(
            f"no spawn request of {args.name!r} is queued", hint="hivegen pending lists them"
        )
    if args.json:
        _print_json(Kind.SPAWN_REQUEST, answered.as_json())
    else:
        print(f"spawn request of {args.name} dismissed")
    return ExitCode.OK


def _flake_json(report: Any) -> dict[str, object] | None:
    if report.clean:
        return None
    return {
        "flake_nix_changed": report.changed,
        "has_flake_lock": report.has_lock,
        "inputs": dict(report.inputs),
    }


def _flake_warning(agent: str, proposal_id: int, report: Any) -> str:
    """The banner a proposal let in with --allow-flake-inputs carries on review."""
    lines = [
        f"!! proposal {proposal_id} ({agent}) brings its own flake inputs "
        "(accepted with --allow-flake-inputs):",
        *(f"!!   {terminal_line(line.strip())}" for line in report.describe().splitlines()),
    ]
    return "\n".join(lines) + "\n"


def _cmd_diff(args: argparse.Namespace) -> int:
    from hivegen.highlight import highlight, wants_color

    proposals = _proposals(args)
    proposal = proposals.store.get(args.id)
    report = proposals.flake_report(proposal)
    if not report.clean:
        sys.stdout.write(_flake_warning(proposal.agent, proposal.id, report) + "\n")
    # Sanitised before highlighting: hivegen's own colour escapes survive, none from the
    # manager's commit do.
    text = terminal(proposals.diff(args.id))
    sys.stdout.write(
        highlight(text, Language.DIFF) if wants_color(args.color, sys.stdout) else text
    )
    return ExitCode.OK


def _print_deployment(args: argparse.Namespace, deployment: Any) -> int:
    if args.json:
        _print_json(
            Kind.DEPLOYMENT,
            {**_proposal_json(deployment.proposal), "steps": list(deployment.steps)},
        )
    else:
        for step in deployment.steps:
            print(f"{deployment.proposal.agent}: {terminal_line(step)}")
    return ExitCode.OK


def _cmd_approve(args: argparse.Namespace) -> int:
    from hivegen.proposals import BuildFailed

    proposals = _proposals(args)
    if args.dry_run:
        return _dry_run(args, proposals)
    try:
        deployment = proposals.approve(args.id, force=args.force)
    except BuildFailed:
        if args.json:
            # A failed build is a result too: the proposal as it now is, with its error.
            _print_json(
                Kind.DEPLOYMENT, {**_proposal_json(proposals.store.get(args.id)), "steps": []}
            )
        raise
    return _print_deployment(args, deployment)


def _dry_run(args: argparse.Namespace, proposals: Any) -> int:
    from hivegen.dryrun import dry_run
    from hivegen.errors import HivegenError

    result = dry_run(proposals, args.id, force=args.force, on_line=proposals.hive.on_output)
    p = result.proposal
    what = f"proposal {p.id} ({p.agent} {_short(p.fetched_sha)})"
    if args.json:
        _print_json(Kind.DRY_RUN, result.as_json())
    elif result.system is not None:
        print(result.system)
        print(
            f"{what} builds; nothing was deployed (--dry-run): hivegen approve {p.id} deploys it",
            file=sys.stderr,
        )
    if result.error is not None:
        # The build error quotes the manager's commit: _report shows it sanitised.
        raise HivegenError(
            f"{what} does not build (--dry-run: nothing was changed, it is still "
            f"pending):\n{result.error}",
            hint=f"hivegen diff {p.id}; hivegen deny {p.id} --note ...",
        )
    return ExitCode.OK


def _cmd_rollback(args: argparse.Namespace) -> int:
    proposals = _proposals(args)
    # A bad name or tag, or the deploy it runs already, is refused before the question.
    proposals.check_rollback(args.agent, args.to)
    _confirm(args, f"deploy {args.agent}'s {args.to} again, replacing what it runs now")
    return _print_deployment(args, proposals.rollback(args.agent, args.to))


def _cmd_deny(args: argparse.Namespace) -> int:
    proposals = _proposals(args)
    proposal = proposals.deny(args.id, args.note)
    if args.json:
        _print_json(
            Kind.PROPOSAL, {**_proposal_json(proposal), "subject": proposals.subject(proposal)}
        )
    else:
        print(f"proposal {proposal.id} denied (tag denied/{proposal.id})")
    return ExitCode.OK


def _cmd_history(args: argparse.Namespace) -> int:
    import time

    entries = _proposals(args).history(args.agent)
    if args.json:
        from hivegen import jsondoc

        _print_json(
            Kind.HISTORY,
            {
                "agent": args.agent,
                "entries": [
                    {
                        "id": e.id,
                        "kind": e.kind,
                        "tag": e.tag,
                        "sha": e.sha,
                        "status": e.status,
                        "when": jsondoc.time(e.when),
                        "note": e.note,
                    }
                    for e in entries
                ],
            },
        )
        return ExitCode.OK
    _print_table(
        ["ID", "TAG", "SHA", "STATUS", "WHEN", "NOTE"],
        [
            [
                e.id,
                e.tag,
                _short(e.sha, 7),
                e.status,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(e.when)) if e.when else "-",
                e.note,
            ]
            for e in entries
        ],
    )
    return ExitCode.OK
