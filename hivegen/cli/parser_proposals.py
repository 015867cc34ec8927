"""The review verbs' arguments and help: propose, pending, dismiss, diff, approve,
deny, history, rollback (their handlers: proposal_verbs)."""

from __future__ import annotations

import argparse
from typing import Any

from hivegen.cli.common import _add_color_option, _add_json_option, _Formatter, _Lazy


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
    _add_json_option(propose, "proposal", what="the proposal")
    propose.set_defaults(handler=_Lazy("proposal_verbs", "_cmd_propose"))

    pending = add(
        "pending",
        "list open proposals",
        "Open proposals: id, agent, short sha, subject and age; then the commits on\n"
        "each proposed repo's main that nobody proposed (reachable from its tip, not\n"
        "from the applied main nor any commit ever proposed); then the manager's spawn\n"
        "requests (hivegen spawn NAME grants one, hivegen dismiss NAME refuses it).\n"
        "--json prints all three (a hivegen.pending/1 document: docs/json.md);\n"
        "with --unproposed or --spawn-requests, that list alone.",
        "hivegen pending",
    )
    _add_json_option(pending, "pending", what="the three lists")
    shown = pending.add_mutually_exclusive_group()
    shown.add_argument(
        "--unproposed",
        action="store_true",
        help="with --json: print only each agent's unproposed commits",
    )
    shown.add_argument(
        "--spawn-requests",
        action="store_true",
        help="with --json: print only the queued spawn requests",
    )
    pending.set_defaults(handler=_Lazy("proposal_verbs", "_cmd_pending"))

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
    _add_json_option(dismiss, "spawn-request", what="the request")
    dismiss.set_defaults(handler=_Lazy("proposal_verbs", "_cmd_dismiss"))

    diff = add(
        "diff",
        "show what a proposal changes",
        "The diff from what AGENT runs (applied main) to proposal ID.",
        "hivegen diff 3",
    )
    diff.add_argument("id", metavar="ID", type=int)
    _add_color_option(diff, "the diff")
    diff.set_defaults(handler=_Lazy("proposal_verbs", "_cmd_diff"))

    approve = add(
        "approve",
        "build and deploy a proposal (rolled back if it fails to build)",
        "Tag approved/<id> and building/<id>, move main to the proposal, bump the meta\n"
        "flake and rebuild the container. Success: deployed/<id> and a meta commit.\n"
        "Failure: failed/<id> holds the build error and everything is put back.\n"
        "A proposal that does not contain the agent's current deploy (made before a\n"
        "newer one was deployed; `pending` marks it superseded) is refused: its\n"
        "approve would revert that deploy. --force deploys it anyway.\n"
        "--dry-run builds the system approve would install and deploys nothing: no tag,\n"
        "no ref, no meta commit, no container touched; the proposal stays pending. It\n"
        "prints the system's store path (exit 0) or the build error (exit 1).",
        "hivegen approve 3\n  hivegen approve 3 --dry-run --json",
    )
    approve.add_argument("id", metavar="ID", type=int)
    approve.add_argument(
        "--force",
        action="store_true",
        help="deploy a superseded proposal, reverting what was deployed since it was made",
    )
    approve.add_argument(
        "--dry-run",
        action="store_true",
        help="build the system approve would install and print its store path; "
        "deploy nothing and change nothing",
    )
    _add_json_option(approve, "deployment", "dry-run")
    approve.set_defaults(handler=_Lazy("proposal_verbs", "_cmd_approve"))

    deny = add(
        "deny",
        "refuse a proposal",
        "Tag denied/<id> (annotated with the note) and close the proposal.",
        "hivegen deny 3 --note 'no network access for this agent'",
    )
    deny.add_argument("id", metavar="ID", type=int)
    deny.add_argument("--note", default="", help="why (kept in the tag)")
    _add_json_option(deny, "proposal", what="the proposal")
    deny.set_defaults(handler=_Lazy("proposal_verbs", "_cmd_deny"))

    history = add(
        "history",
        "every proposal and deploy of an agent, newest first",
        "Id, tag, sha, status, when, and the note or the build error's first line.",
        "hivegen history alice",
    )
    history.add_argument("agent", metavar="AGENT")
    _add_json_option(history, "history", what="the entries")
    history.set_defaults(handler=_Lazy("proposal_verbs", "_cmd_history"))

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
    _add_json_option(rollback, "deployment")
    rollback.set_defaults(handler=_Lazy("proposal_verbs", "_cmd_rollback"))
