"""Command-line front: parses, calls one library function, prints. Nothing below prints."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hivegen import __version__
from hivegen.errors import ExitCode, HivegenError, UsageError
from hivegen.highlight import Color, Language
from hivegen.sanitize import terminal, terminal_line

PROG = "hivegen"

DESCRIPTION = """\
Run a hive of AI agents in NixOS containers.

hivegen renders each agent's Nix configuration and one meta flake, commits and
locks them with git and nix, and drives nixos-container and systemd.
"""

EPILOG = """\
examples:
  hivegen port alice                      the web UI port alice gets (8879)
  hivegen render agent-nix alice          the agent.nix a new agent starts from
  hivegen render meta --agent alice --agent bob
                                          the meta flake for a hive of alice and bob

configuration is read from --config, else $HIVEGEN_CONFIG, else
/etc/hivegen/hive.toml (all defaults when that file is absent).

exit codes: 0 ok, 1 failed, 2 bad usage or input, 3 drift found by a check,
130 interrupted.
"""

Handler = Callable[[argparse.Namespace], int]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """--config, -v, --debug, --no-wait: before the verb, or after it (as git, systemctl
    and nixos-rebuild take them). After it they are SUPPRESSed when absent, so that a
    verb's parser never resets what was given before the verb."""
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    group = parser.add_argument_group("global options") if suppress else parser
    group.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="hive.toml to read (default: $HIVEGEN_CONFIG, else /etc/hivegen/hive.toml)",
        **default,
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print every external command, shell-quoted, to stderr",
        **default,
    )
    group.add_argument(
        "--debug", action="store_true", help="show a traceback when a command fails", **default
    )
    group.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once if another hivegen holds the hive lock (default: wait)",
        **default,
    )


class _Parser(argparse.ArgumentParser):
    """argparse, with a did-you-mean for a mistyped command (`hivegen stauts`)."""

    def error(self, message: str) -> NoReturn:
        import difflib
        import re

        match = re.match(r"argument \S+: invalid choice: '(.*?)' \(choose from (.*)\)$", message)
        if match:
            typed = match.group(1)
            choices = re.findall(r"'([^']*)'", match.group(2))
            close = difflib.get_close_matches(typed, choices, n=1, cutoff=0.6)
            message = f"unknown command {typed!r}" + (
                f"; did you mean {close[0]!r}?" if close else ""
            )
            message += f" ({self.prog} --help lists them)"
        super().error(message)


class _VerbParser(_Parser):
    """A verb's parser: it takes the global options too, and lists them in its help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_options(self, suppress=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, suppress=False)
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_VerbParser
    )

    port = sub.add_parser(
        "port",
        help="print the web UI port of an agent",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Print the web UI port an agent gets: the manager's is fixed by "
        "hive.toml,\nevery other agent's is 8100 + FNV-1a(name) % 900.",
        epilog="example:\n  hivegen port alice        8879",
    )
    port.add_argument("name", metavar="NAME", help="agent name")
    port.add_argument("--json", action="store_true", help="print a JSON object")
    port.set_defaults(handler=_cmd_port)

    render = sub.add_parser(
        "render",
        help="print a rendered Nix file",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Print the Nix files hivegen writes, without writing anything.",
        epilog=textwrap.dedent("""\
            examples:
              hivegen render agent-nix alice      alice's initial agent.nix
              hivegen render agent-flake          the module-only flake.nix of every agent
              hivegen render meta                 the meta flake for the registered agents
              hivegen render meta --agent alice --agent bob
                                                  ... for exactly the agents named"""),
    )
    render_sub = render.add_subparsers(dest="what", metavar="WHAT", required=True)
    agent_nix = render_sub.add_parser(
        "agent-nix", help="an agent's initial agent.nix", allow_abbrev=False
    )
    agent_nix.add_argument("name", metavar="NAME", help="agent name")
    agent_nix.set_defaults(handler=_cmd_render_agent_nix)
    agent_flake = render_sub.add_parser(
        "agent-flake", help="the per-agent module-only flake.nix", allow_abbrev=False
    )
    agent_flake.set_defaults(handler=_cmd_render_agent_flake)
    meta_render = render_sub.add_parser("meta", help="the meta flake", allow_abbrev=False)
    meta_render.add_argument(
        "--agent",
        dest="agents",
        action="append",
        metavar="NAME",
        help="include this agent (repeat; default: the registered agents)",
    )
    meta_render.set_defaults(handler=_cmd_render_meta)
    for leaf in (agent_nix, agent_flake, meta_render):
        leaf.add_argument(
            "--color",
            type=Color,
            choices=list(Color),
            default=Color.AUTO,
            help="highlight the output (default: auto, when stdout is a terminal)",
        )
        leaf.add_argument("--json", action="store_true", help="print {path: text} as a JSON object")
    init = sub.add_parser(
        "init",
        help="create the state root's layout",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Create the hive's state root (agents/, credentials/ 0700, applied/, "
        "meta/,\nshared/, the lock file). Safe to run again: it only creates "
        "what is missing\nand puts credentials/ back to 0700.",
    )
    init.add_argument("--json", action="store_true", help="print a JSON object")
    init.set_defaults(handler=_cmd_init)

    meta = sub.add_parser(
        "meta",
        help="the meta flake: sync, check, bump inputs",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="The meta flake (<state>/meta) holds one nixosConfiguration per "
        "registered agent.",
        epilog=textwrap.dedent("""\
            examples:
              hivegen meta sync               render, lock and commit it if anything changed
              hivegen meta sync --check       exit 3 and say what differs, change nothing
              hivegen meta update hyperhive   fetch and bump the hyperhive input
              hivegen meta update agent-alice hyperhive"""),
    )
    meta_sub = meta.add_subparsers(dest="meta_command", metavar="ACTION", required=True)
    sync = meta_sub.add_parser(
        "sync",
        help="bring the meta flake up to date with the registered agents",
        allow_abbrev=False,
    )
    sync.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 3 and print what a sync would change",
    )
    sync.add_argument("--json", action="store_true", help="print a JSON object")
    sync.set_defaults(handler=_cmd_meta_sync)
    update = meta_sub.add_parser(
        "update",
        help="fetch and bump inputs of the meta flake",
        allow_abbrev=False,
        description="Fetch each INPUT first (a fetch failure stops before the lock is "
        "touched),\nthen bump them all and commit 'lock update: INPUT, ...'.",
    )
    update.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="hyperhive, or agent-NAME for a registered agent"
    )
    update.add_argument("--json", action="store_true", help="print a JSON object")
    update.set_defaults(handler=_cmd_meta_update)
    _add_lifecycle_commands(sub)
    return parser


LIFECYCLE_HELP = {
    "spawn": (
        "create an agent and start its container",
        "Seed the agent's repos, add it to the meta flake, create and start its container.\n"
        "Re-running it after a failure completes it; on a destroyed agent it revives it.",
    ),
    "start": ("start an agent's container", "Rewrite its nspawn flags and limits, then start."),
    "stop": ("stop an agent's container", "Stop the container; nothing else changes."),
    "restart": (
        "restart an agent's container",
        "Rewrite its nspawn flags and limits, then stop and start the container.",
    ),
    "rebuild": (
        "rebuild an agent from what is deployed",
        "Sync the meta flake, bump the agent's input to its applied main, rewrite flags and\n"
        "limits, and `nixos-container update`. The container is restarted only when its\n"
        "flags or limits changed (otherwise update's reload suffices).",
    ),
    "destroy": (
        "destroy an agent's container (keeps its repos)",
        "Destroy the container and its limits drop-in and take the agent out of the meta\n"
        "flake. Its repos, credentials and notes stay (spawn revives it) unless --purge.",
    ),
}


def _add_lifecycle_commands(sub: Any) -> None:
    for verb, (summary, description) in LIFECYCLE_HELP.items():
        parser = sub.add_parser(
            verb,
            help=summary,
            description=description,
            formatter_class=_Formatter,
            allow_abbrev=False,
            epilog=f"example:\n  hivegen {verb} alice",
        )
        parser.add_argument("name", metavar="NAME", help="agent name")
        parser.add_argument("--json", action="store_true", help="print a JSON object")
        if verb == "destroy":
            parser.add_argument(
                "--purge",
                action="store_true",
                help="also delete its repos, credentials, notes and runtime dir",
            )
            parser.add_argument(
                "--yes",
                action="store_true",
                help="do not ask before a purge or destroying the manager (needed without a TTY)",
            )
        parser.set_defaults(handler=_cmd_lifecycle, verb=verb)
    listing = sub.add_parser(
        "list",
        help="list the hive's agents",
        allow_abbrev=False,
        description="Name, container, role and port of every registered agent.",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.set_defaults(handler=_cmd_list)
    status = sub.add_parser(
        "status",
        help="show every agent's state",
        allow_abbrev=False,
        description="State (running, stopped, failed, missing, tombstone; foreign for h-*\n"
        "containers hivegen did not create), port, deployed tag and sha, limits and\n"
        "pending proposals. With NAMEs, only those; with one, every detail.",
        epilog="examples:\n  hivegen status\n  hivegen status alice\n  hivegen status --watch",
        formatter_class=_Formatter,
    )
    status.add_argument(
        "names", nargs="*", metavar="NAME", help="only these agents (one: a detail view)"
    )
    status.add_argument("--json", action="store_true", help="print a JSON array")
    status.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="show it again every SECONDS (default 2) until Ctrl-C, like watch(1)",
    )
    status.set_defaults(handler=_cmd_status)
    _add_proposal_commands(sub)
    doctor = sub.add_parser(
        "doctor",
        help="check every invariant of the hive (and --repair)",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="Check repos, tags, interrupted approves, the meta flake and its lock,\n"
        "containers, nspawn flags, drop-ins, credentials modes and ports. One line\n"
        "per finding; exit 3 if any problem is found. --repair fixes what is safe\n"
        "to fix and never deletes an agent's repos, credentials or notes.",
        epilog="examples:\n  hivegen doctor\n  hivegen doctor --repair",
    )
    doctor.add_argument("--repair", action="store_true", help="fix what can be fixed safely")
    doctor.add_argument("--json", action="store_true", help="print a JSON object")
    doctor.set_defaults(handler=_cmd_doctor)
    reconcile = sub.add_parser(
        "reconcile",
        help="start the agents that should run (at boot, after a restore)",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="Bring the hive back to what the operator asked for: settle interrupted\n"
        "approves, check and recreate every agent's bind sources, conf and limits\n"
        "drop-in, and start exactly the agents recorded as wanted running (spawn,\n"
        "start and restart record it; stop and destroy clear it), the manager first.\n"
        "A running agent is never stopped and a foreign container never touched.\n"
        "Run at boot by hivegen-reconcile.service; exit 1 if any agent failed.",
        epilog="examples:\n  hivegen reconcile\n  hivegen reconcile --json",
    )
    reconcile.add_argument("--json", action="store_true", help="print a JSON object")
    reconcile.set_defaults(handler=_cmd_reconcile)
    serve = sub.add_parser(
        "serve",
        help="the containers' request sockets and the operator's dashboard",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="Run until stopped (SIGTERM, Ctrl-C), as hivegen-serve.service does:\n"
        "- a socket for every agent, <runtime dir>/hive.sock, seen inside as\n"
        "  /run/hive/hive.sock. Who asks is the socket a request arrives on: the\n"
        "  manager may propose and ask for a spawn, every agent may read its own\n"
        "  status and proposals, and no container can approve anything. From inside:\n"
        "    curl --unix-socket /run/hive/hive.sock http://hive/\n"
        "- the dashboard, on a unix socket only root can open (default\n"
        "  <runtime root>/../hivegen/dashboard.sock; reach it with\n"
        "  ssh -L 7000:/run/hivegen/dashboard.sock HOST, then http://localhost:7000).\n"
        "  --listen also serves it on TCP, behind the token in --token-file (made\n"
        "  if missing, root's alone): every agent can reach the host's ports.\n"
        "The CLI works beside it: both take the hive lock, and each sees the other's\n"
        "proposals and decisions.",
        epilog="examples:\n  hivegen serve\n  hivegen serve --listen 127.0.0.1:7000",
    )
    serve.add_argument(
        "--socket",
        metavar="PATH",
        type=Path,
        help="the dashboard's unix socket (default: beside the runtime root, "
        "hivegen/dashboard.sock)",
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="also serve the dashboard on TCP, behind the token (port 0: any free port)",
    )
    serve.add_argument(
        "--token-file",
        metavar="PATH",
        type=Path,
        help="the dashboard token for --listen (default: <state root>/dashboard.token)",
    )
    serve.add_argument(
        "--allow-host",
        metavar="NAME",
        action="append",
        default=[],
        help="a host name the dashboard answers to besides localhost and the listen "
        "address (repeatable)",
    )
    serve.set_defaults(handler=_cmd_serve)
    mcp = sub.add_parser(
        "mcp",
        help="the socket's requests as MCP tools, over stdio (inside a container)",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="An MCP server on stdin/stdout for an agent that speaks MCP: each tool\n"
        "call is one request to the container's hivegen socket, so the server decides\n"
        "as for curl. The tools are those the socket takes: every agent gets\n"
        "hive_status, hive_proposals and hive_proposal (which can wait for a decision);\n"
        "the manager also hive_propose, hive_request_spawn and hive_spawn_requests.",
        epilog='example (an MCP client\'s config):\n  {"command": "hivegen", "args": ["mcp"]}',
    )
    mcp.add_argument(
        "--socket",
        metavar="PATH",
        type=Path,
        default=Path("/run/hive/hive.sock"),
        help="the socket to forward to (default: /run/hive/hive.sock)",
    )
    mcp.set_defaults(handler=_cmd_mcp)
    demo = sub.add_parser(
        "demo",
        help="build a throwaway demo hive and show each step",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="Build a throwaway hive in DIR on hivegen's simulated host (no NixOS\n"
        "needed, but Nix is): the manager and two agents, spawned and shown\n"
        "with `status`. Every step prints the hivegen command it runs.",
        epilog="example:\n  hivegen demo /tmp/hive-demo",
    )
    demo.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        default="hive-demo",
        help="where to build it (default: ./hive-demo; an earlier demo "
        "there is replaced, anything else is refused)",
    )
    demo.set_defaults(handler=_cmd_demo)


def _add_proposal_commands(sub: Any) -> None:
    def add(name: str, summary: str, description: str, example: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name,
            help=summary,
            description=description,
            formatter_class=_Formatter,
            allow_abbrev=False,
            epilog=f"example:\n  {example}",
        )
        return parser

    propose = add(
        "propose",
        "propose a commit of an agent's proposed repo for deployment",
        "Pin the manager's commit REV of AGENT's proposed repo in its applied repo as\n"
        "proposal/<id>, after checking it has flake.nix and agent.nix and that every .nix\n"
        "file parses. Prints the new proposal's id. REV is a commit id (7 to 40 hex\n"
        "digits), or main or HEAD: the tip of the repo's main, which hivegen reads itself\n"
        "(the default). A commit already pending for AGENT is refused.\n\n"
        "The commit is read from a private copy of the repo (git never runs in the\n"
        "manager's repo) and refused (exit 2) if it holds a symlink or submodule, a file\n"
        "over the size limits, or a flake.nix other than the per-agent flake hivegen\n"
        "renders, or a flake.lock (unless --allow-flake-inputs).",
        "hivegen propose alice            (the tip of alice's main)\n  "
        "hivegen propose alice 1a2b3c4",
    )
    propose.add_argument("agent", metavar="AGENT")
    propose.add_argument("rev", metavar="REV", nargs="?", default="main")
    propose.add_argument(
        "--allow-flake-inputs",
        action="store_true",
        help="accept a flake.nix other than hivegen's (new inputs) or a flake.lock, after "
        "you have checked every input: they are copied into the store every container "
        "reads. Inputs on the host's filesystem (path:, file:, git+file:) are refused anyway",
    )
    propose.add_argument("--json", action="store_true", help="print the proposal as JSON")
    propose.set_defaults(handler=_cmd_propose)

    pending = add(
        "pending",
        "list open proposals",
        "Open proposals: id, agent, short sha, subject and age; then the manager's\n"
        "spawn requests (hivegen spawn NAME grants one, hivegen dismiss NAME refuses it).\n"
        "--json prints the proposals; `--json --spawn-requests` the requests.",
        "hivegen pending",
    )
    pending.add_argument("--json", action="store_true", help="print a JSON array")
    pending.add_argument(
        "--spawn-requests",
        action="store_true",
        help="with --json: print the queued spawn requests instead",
    )
    pending.set_defaults(handler=_cmd_pending)

    dismiss = add(
        "dismiss",
        "answer the manager's spawn request with no",
        "The manager asks for new agents through its socket (hivegen serve); `pending`\n"
        "lists the requests, `hivegen spawn NAME` grants one, and this refuses it. The\n"
        "manager reads the answer and the note (GET /spawn-requests).",
        "hivegen dismiss carol --note 'one researcher is enough'",
    )
    dismiss.add_argument("name", metavar="NAME")
    dismiss.add_argument("--note", default="", help="why (the manager reads it)")
    dismiss.add_argument("--json", action="store_true", help="print the request as JSON")
    dismiss.set_defaults(handler=_cmd_dismiss)

    diff = add(
        "diff",
        "show what a proposal changes",
        "The diff from what AGENT runs (applied main) to proposal ID.",
        "hivegen diff 3",
    )
    diff.add_argument("id", metavar="ID", type=int)
    diff.add_argument(
        "--color",
        type=Color,
        choices=list(Color),
        default=Color.AUTO,
        help="highlight the diff (default: auto)",
    )
    diff.set_defaults(handler=_cmd_diff)

    approve = add(
        "approve",
        "build and deploy a proposal (rolled back if it fails to build)",
        "Tag approved/<id> and building/<id>, move main to the proposal, bump the meta\n"
        "flake and rebuild the container. Success: deployed/<id> and a meta commit.\n"
        "Failure: failed/<id> holds the build error and everything is put back.\n"
        "A proposal that does not contain the agent's current deploy (made before a\n"
        "newer one was deployed; `pending` marks it superseded) is refused: its\n"
        "approve would revert that deploy. --force deploys it anyway.",
        "hivegen approve 3",
    )
    approve.add_argument("id", metavar="ID", type=int)
    approve.add_argument(
        "--force",
        action="store_true",
        help="deploy a superseded proposal, reverting what was deployed since it was made",
    )
    approve.add_argument("--json", action="store_true", help="print the result as JSON")
    approve.set_defaults(handler=_cmd_approve)

    deny = add(
        "deny",
        "refuse a proposal",
        "Tag denied/<id> (annotated with the note) and close the proposal.",
        "hivegen deny 3 --note 'no network access for this agent'",
    )
    deny.add_argument("id", metavar="ID", type=int)
    deny.add_argument("--note", default="", help="why (kept in the tag)")
    deny.add_argument("--json", action="store_true", help="print the proposal as JSON")
    deny.set_defaults(handler=_cmd_deny)

    history = add(
        "history",
        "every proposal and deploy of an agent, newest first",
        "Id, tag, sha, status, when, and the note or the build error's first line.",
        "hivegen history alice",
    )
    history.add_argument("agent", metavar="AGENT")
    history.add_argument("--json", action="store_true", help="print a JSON array")
    history.set_defaults(handler=_cmd_history)

    rollback = add(
        "rollback",
        "deploy an earlier deployed commit again",
        "A new proposal (kind rollback) of the commit of TAG, approved and deployed\n"
        "through the same path: history stays append-only.",
        "hivegen rollback alice --to deployed/0",
    )
    rollback.add_argument("agent", metavar="AGENT")
    rollback.add_argument("--to", required=True, metavar="TAG", help="deployed/<id>")
    rollback.add_argument(
        "--yes", action="store_true", help="do not ask first (needed without a TTY)"
    )
    rollback.add_argument("--json", action="store_true", help="print the result as JSON")
    rollback.set_defaults(handler=_cmd_rollback)


def _proposals(args: argparse.Namespace) -> Any:
    from hivegen.proposals import Proposals

    return Proposals(_hive(args))


def _proposal_json(proposal: Any) -> dict[str, object]:
    from hivegen.store import proposal_json

    return proposal_json(proposal)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _cmd_propose(args: argparse.Namespace) -> int:
    proposals = _proposals(args)
    proposal = proposals.propose(args.agent, args.rev, allow_flake_inputs=args.allow_flake_inputs)
    if args.json:
        _print_json({**_proposal_json(proposal), "subject": proposals.subject(proposal)})
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

    from hivegen.spawnrequests import SpawnRequests

    proposals = _proposals(args)
    entries = proposals.pending()
    requests = SpawnRequests(proposals.hive.config).queued()
    now = time.time()
    if args.json and args.spawn_requests:
        _print_json([r.as_json() for r in requests])
    elif args.json:
        _print_json(
            [
                {
                    **_proposal_json(e.proposal),
                    "subject": e.subject,
                    "superseded": e.superseded,
                    "flake_inputs": _flake_json(e.flake),
                }
                for e in entries
            ]
        )
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
    if requests and not args.json:
        print("\nspawn requests from the manager (hivegen spawn NAME; hivegen dismiss NAME):")
        _print_table(["NAME", "AGE"], [[r.name, _age(now - r.requested)] for r in requests])
    return ExitCode.OK


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
        _print_json(answered.as_json())
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
        _print_json({**_proposal_json(deployment.proposal), "steps": list(deployment.steps)})
    else:
        for step in deployment.steps:
            print(f"{deployment.proposal.agent}: {terminal_line(step)}")
    return ExitCode.OK


def _cmd_approve(args: argparse.Namespace) -> int:
    from hivegen.proposals import BuildFailed

    proposals = _proposals(args)
    try:
        deployment = proposals.approve(args.id, force=args.force)
    except BuildFailed:
        if args.json:
            # A failed build is a result too: the proposal as it now is, with its error.
            _print_json({**_proposal_json(proposals.store.get(args.id)), "steps": []})
        raise
    return _print_deployment(args, deployment)


def _cmd_rollback(args: argparse.Namespace) -> int:
    proposals = _proposals(args)
    proposals.hive.registered(args.agent)  # a bad name is refused before the question
    _confirm(args, f"deploy {args.agent}'s {args.to} again, replacing what it runs now")
    return _print_deployment(args, proposals.rollback(args.agent, args.to))


def _confirm(args: argparse.Namespace, action: str) -> None:
    """Ask on a TTY before a verb that is hard to undo; without one, --yes is required."""
    if args.yes:
        return
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise UsageError(
            f"refusing to {action} without confirmation (no terminal to ask on)",
            hint="add --yes to do it",
        )
    print(f"{PROG}: about to {action}. Continue? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise HivegenError("not confirmed: nothing was changed")


def _cmd_deny(args: argparse.Namespace) -> int:
    proposal = _proposals(args).deny(args.id, args.note)
    if args.json:
        _print_json(_proposal_json(proposal))
    else:
        print(f"proposal {proposal.id} denied (tag denied/{proposal.id})")
    return ExitCode.OK


def _cmd_history(args: argparse.Namespace) -> int:
    import time

    entries = _proposals(args).history(args.agent)
    if args.json:
        _print_json(
            [
                {
                    "id": e.id,
                    "kind": e.kind,
                    "tag": e.tag,
                    "sha": e.sha,
                    "status": e.status,
                    "when": e.when,
                    "note": e.note,
                }
                for e in entries
            ]
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


def _cmd_doctor(args: argparse.Namespace) -> int:
    from hivegen.doctor import Doctor

    report = Doctor(_hive(args)).run(repair=args.repair)
    if args.json:
        _print_json(
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
            }
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
            }
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


def _serve_hive_factory(config: Any) -> Any:
    """A Hive for each verb the server runs: it waits for the hive lock, as the CLI does."""
    import os

    from hivegen.hive import Hive, LockPolicy

    log = logging.getLogger("hivegen.serve")

    def make_hive(on_output: Callable[[str], None] | None) -> Hive:
        return Hive(
            config,
            LockPolicy(
                wait=True,
                on_wait=lambda holder: log.info("waiting for the hive lock (%s)", holder),
                holder=f"{PROG} serve (pid {os.getpid()})",
            ),
            on_output=on_output,
        )

    return make_hive


def _cmd_mcp(args: argparse.Namespace) -> int:
    from hivegen.serve.mcp import McpServer, parse

    server = McpServer(args.socket)
    for line in sys.stdin:
        if not line.strip():
            continue
        message = parse(line)
        if message is None:
            reply: dict[str, object] | None = {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32700, "message": "not a JSON-RPC message"},
            }
        else:
            try:
                reply = server.handle(message)
            except OSError as exc:
                reply = {
                    "jsonrpc": "2.0",
                    "id": message.get("id"),
                    "error": {"code": -32603, "message": f"cannot reach {args.socket}: {exc}"},
                }
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    return ExitCode.OK


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from hivegen import serve
    from hivegen.config import HostRuntime

    config = _load_config(args)
    if config.host.runtime is HostRuntime.NATIVE and os.geteuid() != 0:
        raise UsageError("must run as root: hivegen serve owns the hive", hint=f"sudo {PROG} serve")
    options = serve.ServeOptions(
        dashboard_socket=args.socket or serve.default_dashboard_socket(config),
        token_file=args.token_file or serve.default_token_file(config),
        listen=serve.parse_listen(args.listen) if args.listen else None,
        allowed_hosts=tuple(args.allow_host),
    )
    # The server's own log lines (requests, jobs) go to stderr: the journal, as a service.
    # (-v adds every command hivegen runs, as for any verb.)
    log = logging.getLogger("hivegen.serve")
    log.setLevel(logging.INFO)

    def ready(where: serve.Ready) -> None:
        log.info("dashboard on unix socket %s", where.dashboard_socket)
        if where.dashboard_url:
            log.info(
                "dashboard on %s (log in with the token in %s)",
                where.dashboard_url,
                where.token_file,
            )
        names = ", ".join(where.agents) or "none yet"
        log.info("agent sockets: %s", names)

    stopped = serve.run(config, options, _serve_hive_factory(config), ready)
    log.info("stopped (%s)", stopped)
    return ExitCode.INTERRUPTED if stopped is serve.Stopped.INTERRUPTED else ExitCode.OK


def _cmd_lifecycle(args: argparse.Namespace) -> int:
    from hivegen.names import Role

    hive = _hive(args)
    name = args.name
    if args.verb == "destroy":
        manager = hive.spec(name).role is Role.MANAGER  # also validates the name
        if args.purge or manager:
            what = "delete" if args.purge else "destroy"
            detail = (
                f"{name}'s container, repos, credentials and notes (--purge)"
                if args.purge
                else f"the manager's container ({name}), which every agent answers to"
            )
            _confirm(args, f"{what} {detail}")
    match args.verb:
        case "spawn":
            log = hive.spawn(name)
        case "start":
            log = hive.start(name)
        case "stop":
            log = hive.stop(name)
        case "restart":
            log = hive.restart(name)
        case "rebuild":
            log = hive.rebuild(name)
        case "destroy":
            log = hive.destroy(name, purge=args.purge)
        case other:
            raise AssertionError(f"unhandled verb {other}")
    if args.json:
        _print_json({"agent": name, "verb": args.verb, "steps": list(log.steps)})
    else:
        for step in log.steps:
            print(f"{name}: {terminal_line(step)}")
    return ExitCode.OK


def _cmd_list(args: argparse.Namespace) -> int:
    agents = _hive(args).agents()
    rows = [
        {"name": a.name, "container": a.container, "role": str(a.role), "port": a.port}
        for a in agents
    ]
    if args.json:
        _print_json(rows)
    else:
        _print_table(
            ["NAME", "CONTAINER", "ROLE", "PORT"],
            [[r["name"], r["container"], r["role"], r["port"]] for r in rows],
        )
    return ExitCode.OK


def _cmd_status(args: argparse.Namespace) -> int:
    import time

    hive = _hive(args)
    if args.watch is None:
        _show_status(args, _chosen(args, hive.status()))
        return ExitCode.OK
    if args.watch <= 0:
        raise UsageError(f"--watch {args.watch}: must be a positive number of seconds")
    clear = sys.stdout.isatty()
    try:
        while True:
            statuses = _chosen(args, hive.status())
            if clear:
                sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: as watch(1) redraws
            print(f"every {args.watch:g}s: {PROG} status  {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            _show_status(args, statuses)
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return ExitCode.OK  # Ctrl-C is how a watch ends


def _chosen(args: argparse.Namespace, statuses: list[Any]) -> list[Any]:
    """The statuses of the NAMEs asked for (by agent or container name), in that order."""
    if not args.names:
        return statuses
    import difflib

    by_name = {s.name: s for s in statuses} | {s.container: s for s in statuses}
    chosen = []
    for name in args.names:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.6)
            raise UsageError(
                f"no agent named {name!r}",
                hint=f"did you mean {close[0]!r}?" if close else "hivegen status lists the hive",
            )
        chosen.append(by_name[name])
    return chosen


def _status_json(s: Any) -> dict[str, object]:
    from hivegen.status import status_json

    return status_json(s)


def _show_status(args: argparse.Namespace, statuses: list[Any]) -> None:
    if args.json:
        _print_json([_status_json(s) for s in statuses])
        return
    if len(args.names) == 1:
        [one] = statuses
        detail = {
            "agent": one.name,
            "container": one.container,
            "role": one.role or "-",
            "port": one.port or "-",
            "state": _state_cell(one),
            "wanted": one.desired or "(not recorded)",
            "deployed": f"{one.deployed_tag or '(untagged)'} {one.deployed_sha or ''}".strip(),
            "leader pid": one.main_pid or "-",
            "memory max": one.limits.memory_max if one.limits else "-",
            "cpu quota": one.limits.cpu_quota if one.limits else "-",
            "pending": one.pending if one.role else "-",
        }
        width = max(len(key) for key in detail)
        for key, value in detail.items():
            print(f"{key + ':':<{width + 1}} {terminal_line(str(value))}")
        return
    rows = [
        [
            s.name,
            s.container,
            str(s.role or "-"),
            s.port or "-",
            _state_cell(s),
            f"{s.deployed_tag or '(untagged)'} {_short(s.deployed_sha, 7)}"
            if s.deployed_sha
            else "-",
            s.limits.memory_max if s.limits else "-",
            s.limits.cpu_quota if s.limits else "-",
            s.pending if s.role else "-",
        ]
        for s in statuses
    ]
    if not rows:
        print("no agents yet: hivegen spawn NAME creates one")
        return
    _print_table(
        ["NAME", "CONTAINER", "ROLE", "PORT", "STATE", "DEPLOYED", "MEMORY", "CPU", "PENDING"],
        rows,
    )


def _state_cell(status: Any) -> str:
    """The state, and what the operator asked for where it differs (reconcile's work)."""
    from hivegen.desired import Desired
    from hivegen.status import AgentState

    up = status.state in (AgentState.RUNNING, AgentState.STARTING, AgentState.RESTARTING)
    down = status.state in (AgentState.STOPPED, AgentState.FAILED, AgentState.MISSING)
    if status.desired is Desired.RUNNING and down:
        return f"{status.state} (wanted running)"
    if status.desired is Desired.STOPPED and up:
        return f"{status.state} (wanted stopped)"
    return str(status.state)


def _cmd_demo(args: argparse.Namespace) -> int:
    import os
    import shlex

    from hivegen.demo import (
        DEMO_AGENTS,
        DEMO_BROKEN_CHANGE,
        DEMO_GOOD_CHANGE,
        latest_proposal,
        manager_commit,
        prepare,
    )

    print(f"# building a throwaway demo hive in {Path(args.directory).absolute()}", flush=True)
    demo = prepare(Path(args.directory))
    # Later settings win: the demo's offline settings go after the operator's own.
    nix_config = "\n".join(x for x in (os.environ.get("NIX_CONFIG"), demo.nix_config) if x)
    os.environ["NIX_CONFIG"] = nix_config
    config = _load_config(argparse.Namespace(config=demo.config_path))
    print("# Nix runs offline here; to repeat these commands by hand, first:")
    print(f"export NIX_CONFIG={shlex.quote(nix_config)}")
    flags = ["--config", str(demo.config_path), *(["-v"] if args.verbose else [])]
    steps = [
        ["init"],
        ["spawn", config.hive.manager],
        *(["spawn", name] for name in DEMO_AGENTS),
        ["status"],
    ]

    def hivegen(*step: str, expect: ExitCode = ExitCode.OK) -> None:
        print(f"\n$ hivegen {shlex.join([*flags, *step])}", flush=True)
        code = main([*flags, *step])
        if code != expect:
            raise HivegenError(f"demo step `hivegen {shlex.join(step)}` exited {code}")

    for step in steps:
        hivegen(*step)

    # The manager proposes a change to alice through its socket (hivegen serve runs);
    # the operator reviews and approves it. A second one, proposed with the CLI, fails.
    agent = DEMO_AGENTS[0]
    proposed = config.layout.proposed(agent)
    with _demo_server(config, flags) as ask:
        for agent_nix, message, outcome in (
            (DEMO_GOOD_CHANGE, f"{agent} greets the operator", ExitCode.OK),
            (DEMO_BROKEN_CHANGE, f"{agent}: a change that does not build", ExitCode.FAILED),
        ):
            print(f"\n# the manager ({config.hive.manager}) edits {agent}'s config and commits:")
            print(f"$ cat > {proposed / 'agent.nix'} <<'EOF'\n{agent_nix}EOF")
            print(f"$ git -C {proposed} commit -am {shlex.quote(message)}")
            sha = manager_commit(config, agent, agent_nix, message)
            if outcome is ExitCode.OK:
                print("\n# ...and asks the operator to deploy it, through its socket:")
                made = ask("POST", "/propose", {"agent": agent})
                proposal_id = str(made["id"])
                hivegen("pending")
                hivegen("diff", proposal_id)
            else:
                print("\n# (the operator can propose a manager's commit too)")
                hivegen("propose", agent, sha[:12])
                proposal_id = str(latest_proposal(config))
                print("# this one fails to build: hivegen puts everything back as it was")
            hivegen("approve", proposal_id, expect=outcome)
            if outcome is ExitCode.OK:
                print("\n# the manager sees the decision (GET ...?wait=60 waits for one):")
                ask("GET", f"/proposals/{proposal_id}")
    hivegen("history", agent)
    hivegen("status")
    print(
        textwrap.dedent(f"""
        # The demo hive is up. Try, with --config {demo.config_path}:
        #   hivegen ... rollback {agent} --to deployed/0   deploy its first config again
        #   hivegen ... stop {agent}; hivegen ... status
        #   hivegen ... render meta            the meta flake the containers are built from
        #   hivegen ... destroy bob            bob's repos and notes stay: spawn bob revives him
        #   hivegen ... serve --listen 127.0.0.1:7000
        #       the agents' sockets and the dashboard: open http://127.0.0.1:7000 and log in
        #       with the token in {config.layout.root / "dashboard.token"} (on a real host
        #       keep it on its root-only socket: ssh -L 7000:/run/hivegen/dashboard.sock HOST)
        # Delete {demo.root} when done.""")
    )
    return ExitCode.OK


@contextlib.contextmanager
def _demo_server(config: Any, flags: list[str]) -> Iterator[Callable[..., Any]]:
    """`hivegen serve` for the demo (in this process), and the manager's way to ask it."""
    import json
    import shlex
    import threading

    from hivegen import serve
    from hivegen.serve.client import ask

    print("\n# the operator runs the server: a socket per container, and the dashboard")
    print(f"$ hivegen {shlex.join([*flags, 'serve'])} &", flush=True)
    ready, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []
    options = serve.ServeOptions(
        dashboard_socket=serve.default_dashboard_socket(config),
        token_file=serve.default_token_file(config),
    )

    def run() -> None:
        try:
            serve.run(config, options, _serve_hive_factory(config), lambda _: ready.set(), stop)
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="demo-serve", daemon=True)
    thread.start()
    ready.wait(60)
    if failure or not ready.is_set():
        raise HivegenError(
            f"the demo's server did not start: {failure[0] if failure else 'timeout'}"
        )
    manager_socket = config.runtime_dir(config.agent(config.hive.manager)) / "hive.sock"

    def ask_as_manager(method: str, url: str, body: object = None) -> Any:
        data = f" -d {shlex.quote(json.dumps(body))}" if body is not None else ""
        print(f"$ curl --unix-socket /run/hive/hive.sock http://hive{url}{data}")
        print(f"# (inside {config.hive.manager}; here its socket is {manager_socket})")
        answer = ask(manager_socket, method, url, body)
        print(terminal(answer.body.decode(errors="replace")).rstrip(), flush=True)
        if answer.status >= 300:
            raise HivegenError(f"the demo's request was refused (HTTP {answer.status})")
        return answer.json()

    try:
        yield ask_as_manager
    finally:
        stop.set()
        thread.join(30)


def _print_table(header: list[str], rows: Sequence[Sequence[object]]) -> None:
    # Every cell is one line: a subject, note or error headline from the manager's repos
    # can neither drive the terminal nor forge a row.
    cells = [header, *[[terminal_line(str(c)) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _hive(args: argparse.Namespace) -> Any:
    import os
    import shlex

    from hivegen.config import HostRuntime
    from hivegen.hive import Hive, LockPolicy

    config = _load_config(args)
    if config.host.runtime is HostRuntime.NATIVE and os.geteuid() != 0:
        raise UsageError(
            f"must run as root: hivegen drives nixos-container and systemd, and owns "
            f"{config.hive.state_root}",
            hint=f"sudo {PROG} {args.command}",
        )

    def say_waiting(holder: str) -> None:
        # The holder's line is another hivegen's argv: shown as one safe line.
        print(
            f"{PROG}: waiting for another hivegen ({terminal_line(holder)}) to release the "
            "hive lock...",
            file=sys.stderr,
            flush=True,
        )

    def show_output(line: str) -> None:
        # Build output quotes the agent's config: nothing in it may drive the terminal.
        print(terminal_line(line), file=sys.stderr, flush=True)

    return Hive(
        config,
        LockPolicy(
            wait=not args.no_wait,
            on_wait=say_waiting,
            holder=f"{PROG} {shlex.join(args.argv)}"[:200],
        ),
        on_output=show_output,
    )


def _cmd_init(args: argparse.Namespace) -> int:
    hive = _hive(args)
    result = hive.init()
    if args.json:
        _print_json(
            {
                "state_root": str(hive.layout.root),
                "created": [str(p) for p in result.created],
                "fixed_modes": [str(p) for p in result.fixed_modes],
                "migrated_notes": list(result.migrated_notes),
            }
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
                {
                    "up_to_date": not plan.needed,
                    "agents": list(plan.agents),
                    "changes": plan.describe(),
                }
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
            {
                "changed": result.commit is not None,
                "commit": result.commit,
                "overwritten": result.overwritten,
                "agents": list(result.plan.agents),
                "changes": result.plan.describe(),
            }
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
            }
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


def _short(rev: str | None, length: int = 12) -> str:
    return rev[:length] if rev else "-"


def _load_config(args: argparse.Namespace) -> Any:
    from hivegen.config import load_config

    return load_config(args.config)


def _print_json(value: object) -> None:
    # ensure_ascii: every non-ASCII character (C1 controls, bidi overrides) is a \uXXXX
    # escape, so no raw control reaches the terminal; the decoded value is the exact text.
    json.dump(value, sys.stdout, indent=2, sort_keys=True, ensure_ascii=True)
    sys.stdout.write("\n")


def _cmd_port(args: argparse.Namespace) -> int:
    config = _load_config(args)
    agent = config.agent(args.name)
    if args.json:
        _print_json(
            {
                "name": agent.name,
                "port": agent.port,
                "container": agent.container,
                "role": str(agent.role),
            }
        )
    else:
        print(agent.port)
    return ExitCode.OK


def _print_files(files: Mapping[str, str], args: argparse.Namespace) -> int:
    from hivegen.highlight import highlight, wants_color

    if args.json:
        _print_json(dict(files))
        return ExitCode.OK
    color = wants_color(args.color, sys.stdout)
    for index, (path, raw) in enumerate(sorted(files.items())):
        if len(files) > 1:
            print(f"{'' if index == 0 else chr(10)}# ---- {terminal_line(path)}")
        text = terminal(raw)
        sys.stdout.write(highlight(text, Language.NIX) if color else text)
    return ExitCode.OK


def _cmd_render_agent_nix(args: argparse.Namespace) -> int:
    from hivegen.render import AGENT_NIX, render_agent_nix

    config = _load_config(args)
    name = config.agent(args.name).name
    return _print_files({AGENT_NIX: render_agent_nix(name)}, args)


def _cmd_render_agent_flake(args: argparse.Namespace) -> int:
    from hivegen.render import FLAKE_NIX, render_agent_flake

    return _print_files({FLAKE_NIX: render_agent_flake()}, args)


def _cmd_render_meta(args: argparse.Namespace) -> int:
    from hivegen.registry import registered_agents
    from hivegen.render import MetaModel, render_meta

    config = _load_config(args)
    agents: Sequence[str] = args.agents if args.agents else registered_agents(config)
    if not agents:
        print(
            f"{PROG}: note: no registered agents under {config.hive.state_root}/applied; "
            "rendering an empty hive (name agents with --agent)",
            file=sys.stderr,
        )
    return _print_files(render_meta(MetaModel.from_config(config, agents)), args)


class _TerminalFormatter(logging.Formatter):
    """Log lines (`-v` commands quote refs and paths) shown with controls made visible."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal(super().format(record))


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_TerminalFormatter("%(message)s"))
    root = logging.getLogger("hivegen")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def _report(error: HivegenError) -> None:
    # Messages quote build errors, git output and file names from the manager's commits.
    print(f"{PROG}: error: {terminal(error.message)}", file=sys.stderr)
    if error.hint:
        print(f"{PROG}: hint: {terminal(error.hint)}", file=sys.stderr)


def _os_error(error: OSError) -> HivegenError:
    import errno
    import os

    where = f"{error.filename}: " if error.filename else ""
    message = f"{where}{error.strerror or error}"
    match error.errno:
        case errno.ENOSPC | errno.EDQUOT:
            return HivegenError(
                message,
                hint="free space on that filesystem, then re-run the command: files are "
                "replaced whole, and the command resumes where it stopped",
            )
        case errno.EACCES | errno.EPERM | errno.EROFS if os.geteuid() != 0:
            return UsageError(message, hint="hivegen must run as root")
        case _:
            return HivegenError(message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # For the hive lock's record of who holds it.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _setup_logging(args.verbose)
    handler: Handler = args.handler
    try:
        return handler(args)
    except HivegenError as error:
        if args.debug:
            import traceback

            traceback.print_exc()
        _report(error)
        return int(error.exit_code)
    except BrokenPipeError:
        # `hivegen render meta | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return int(ExitCode.OK)
    except OSError as os_error:
        # A full disk, a missing permission, an I/O error: one line naming the path.
        # (After BrokenPipeError, which is an OSError too.)
        if args.debug:
            import traceback

            traceback.print_exc()
        reported = _os_error(os_error)
        _report(reported)
        return int(reported.exit_code)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
