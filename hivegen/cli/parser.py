"""The command line's grammar: `hivegen --help`, and every verb's arguments and help,
in the order `--help` lists them. Each verb's handler lives in the module of its
kind (render_verbs, hive_verbs, agent_verbs, lifecycle_verbs, logs_verb,
proposal_verbs, rollout_verbs, serve_verbs, demo_verb, shell_verbs), imported when its
verb runs; the proposal and serve verbs' definitions are in parser_proposals and
parser_serve."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from hivegen import __version__
from hivegen.cli.common import (
    PROG,
    _add_color_option,
    _add_global_options,
    _add_json_option,
    _Formatter,
    _Lazy,
    _Parser,
    _VerbChoices,
    _VerbParser,
)
from hivegen.cli.parser_proposals import _add_proposal_commands
from hivegen.cli.parser_serve import _add_serve_commands

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


def build_parser() -> argparse.ArgumentParser:
    """The whole grammar, every verb's parser built (completion, man, the tests)."""
    return _build(None)


def parser_for(words: Sequence[str]) -> argparse.ArgumentParser:
    """The grammar for one command line: only the parser of the verb it names is built
    (see _VerbChoices). What it parses, and how, is build_parser()'s."""
    verb = verb_of(words)
    return _build(frozenset([verb] if verb is not None else []))


def verb_of(words: Sequence[str]) -> str | None:
    """The verb a command line names, as the top-level parser reads it: the first word
    that is neither one of its options nor --config's value (None: there is none)."""
    rest = iter(words)
    for word in rest:
        if word == "--":
            return next(rest, None)
        if word == "--config":
            next(rest, None)
        elif word == "-" or not word.startswith("-"):
            return word
    return None


def _verbs(parser: argparse.ArgumentParser) -> Mapping[str, argparse.ArgumentParser]:
    [verbs] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return verbs.choices


def _build(only: frozenset[str] | None) -> argparse.ArgumentParser:
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
        dest="command",
        metavar="COMMAND",
        required=True,
        parser_class=_VerbParser,
        action=_VerbChoices,
    )
    assert isinstance(sub, _VerbChoices)
    sub.only = only
    sub.build_all = lambda: _verbs(build_parser())
    # In the order `hivegen --help` lists the verbs.
    _add_render_commands(sub)  # port, render
    _add_hive_commands(sub)  # init, meta
    _add_agent_commands(sub)  # spawn ... destroy, list, status
    _add_proposal_commands(sub)  # propose ... rollback
    _add_rollout_commands(sub)  # rollout, upgrade
    _add_check_commands(sub)  # doctor, reconcile
    _add_serve_commands(sub)  # serve, mcp, demo
    return parser


def _add_render_commands(sub: Any) -> None:
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
    _add_json_option(port, "port")
    port.set_defaults(handler=_Lazy("render_verbs", "_cmd_port"))

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
    agent_nix.set_defaults(handler=_Lazy("render_verbs", "_cmd_render_agent_nix"))
    agent_flake = render_sub.add_parser(
        "agent-flake", help="the per-agent module-only flake.nix", allow_abbrev=False
    )
    agent_flake.set_defaults(handler=_Lazy("render_verbs", "_cmd_render_agent_flake"))
    meta_render = render_sub.add_parser("meta", help="the meta flake", allow_abbrev=False)
    meta_render.add_argument(
        "--agent",
        dest="agents",
        action="append",
        metavar="NAME",
        help="include this agent (repeat; default: the registered agents)",
    )
    meta_render.set_defaults(handler=_Lazy("render_verbs", "_cmd_render_meta"))
    for leaf in (agent_nix, agent_flake, meta_render):
        _add_color_option(leaf, "the output")
        _add_json_option(leaf, "render", what="{path: text}")


def _add_hive_commands(sub: Any) -> None:
    init = sub.add_parser(
        "init",
        help="create the state root's layout",
        formatter_class=_Formatter,
        allow_abbrev=False,
        description="Create the hive's state root (agents/, credentials/ 0700, applied/, "
        "meta/,\nshared/, the lock file). Safe to run again: it only creates "
        "what is missing\nand puts credentials/ back to 0700.",
    )
    _add_json_option(init, "init")
    init.set_defaults(handler=_Lazy("hive_verbs", "_cmd_init"))

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
    _add_json_option(sync, "meta-sync", "meta-check")
    sync.set_defaults(handler=_Lazy("hive_verbs", "_cmd_meta_sync"))
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
    _add_json_option(update, "meta-update")
    update.set_defaults(handler=_Lazy("hive_verbs", "_cmd_meta_update"))


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


def _lifecycle_epilog(verb: str) -> str:
    several = "the manager first" if verb in ("spawn", "start", "restart") else "the manager last"
    lines = [
        "examples:",
        f"  hivegen {verb} alice",
        f"  hivegen {verb} alice bob",
    ]
    if verb not in ("spawn", "destroy"):
        lines.append(f"  hivegen {verb} --all")
    lines.append("")
    lines.append(
        f"With several agents: every name is checked first, then each in turn ({several});\n"
        "one that fails does not stop the others, and the exit code is its."
    )
    if verb == "rebuild":
        lines.append("For the whole hive, `hivegen rollout --all` builds once and checks health.")
    return "\n".join(lines)


def _add_agent_commands(sub: Any) -> None:
    for verb, (summary, description) in LIFECYCLE_HELP.items():
        parser = sub.add_parser(
            verb,
            help=summary,
            description=description,
            formatter_class=_Formatter,
            allow_abbrev=False,
            epilog=_lifecycle_epilog(verb),
        )
        if verb in ("spawn", "destroy"):
            parser.add_argument("names", nargs="+", metavar="NAME", help="agent names")
        else:
            parser.add_argument("names", nargs="*", metavar="NAME", help="agent names")
            parser.add_argument(
                "--all",
                action="store_true",
                help="every registered agent (the manager "
                + ("first)" if verb in ("start", "restart") else "last)"),
            )
        _add_json_option(parser, "lifecycle", what="each agent's outcome")
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
        parser.set_defaults(handler=_Lazy("lifecycle_verbs", "_cmd_lifecycle"), verb=verb)
    listing = sub.add_parser(
        "list",
        help="list the hive's agents",
        allow_abbrev=False,
        description="Name, container, role and port of every registered agent.",
    )
    _add_json_option(listing, "list", what="the agents")
    listing.add_argument(
        "--names",
        dest="names_only",
        action="store_true",
        help="print only the names, one a line (for scripts and shell completion)",
    )
    listing.set_defaults(handler=_Lazy("agent_verbs", "_cmd_list"))
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
    _add_json_option(status, "status", what="the agents' states")
    status.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=2.0,
        metavar="SECONDS",
        help="show it again every SECONDS (default 2) until Ctrl-C, like watch(1)",
    )
    status.set_defaults(handler=_Lazy("agent_verbs", "_cmd_status"))
    logs = sub.add_parser(
        "logs",
        help="show an agent's container journal (-f to follow it)",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="The journal of the agent's container, as `journalctl -M CONTAINER` reads\n"
        "it. The lines are the container's: their control characters are shown as\n"
        "visible escapes. Ctrl-C ends -f (exit 130). A stopped container has none to\n"
        "show (exit 1): the host keeps its unit's log, journalctl -u container@CONTAINER.",
        epilog="examples:\n  hivegen logs alice\n  hivegen logs alice -f\n"
        "  hivegen logs alice -n all --json",
    )
    logs.add_argument("name", metavar="NAME", help="agent name")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="then show each new entry until Ctrl-C"
    )
    logs.add_argument(
        "-n",
        "--lines",
        type=_logs_lines,
        default=LOGS_DEFAULT_LINES,
        metavar="N",
        help=f"the last N entries, or all (default: {LOGS_DEFAULT_LINES})",
    )
    _add_json_option(logs, "log-entry", what="each entry, one a line,")
    logs.set_defaults(handler=_Lazy("logs_verb", "_cmd_logs"))


# As `docker logs --tail`, `kubectl logs --tail`: enough to see what just happened.
LOGS_DEFAULT_LINES = 50


def _logs_lines(value: str) -> int | None:
    """`-n`'s value: a count of entries, or `all` (None)."""
    if value == "all":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: a number of entries, or 'all'")
    return int(value)


_ROLLOUT_DESCRIPTION = """\
Deploy the committed meta flake to many agents at once, safely:
  1. evaluate every target's system at once (one nix eval: what they share is
     evaluated once) and build them in one nix build; a failure stops everything
     before any container is touched. Each container is then switched to its built
     system (profile set, reloaded), with no evaluation of its own;
  2. switch a canary first (--canary, default: the first sub-agent by name; never
     the manager), then the others, --jobs at a time, the manager last;
  3. after each switch, the health check of hive.toml's [health]: the unit stays
     active for `settle` seconds and the web port answers within `port_timeout`.
     An agent that does not come up is put back on the system it ran (tag
     unhealthy/<n> says why) and the rollout stops; --keep-going goes on.
One line per agent as its phase changes (built, activating, healthy, rolled
back); --json prints the report. Interrupted? Run it again: agents already done
are skipped, one caught mid-switch is checked again. Exit 1 if any agent failed."""


def _add_rollout_commands(sub: Any) -> None:
    rollout = sub.add_parser(
        "rollout",
        help="build every agent's system at once, switch a canary first, check health",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description=_ROLLOUT_DESCRIPTION,
        epilog="examples:\n  hivegen rollout --all\n  hivegen rollout alice bob --canary bob"
        "\n  hivegen rollout --all --jobs 4 --keep-going --json",
    )
    _rollout_arguments(rollout, names=True)
    rollout.set_defaults(handler=_Lazy("rollout_verbs", "_cmd_rollout"))
    upgrade = sub.add_parser(
        "upgrade",
        help="bump the base flake (meta update hyperhive), then rollout --all",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="`hivegen meta update hyperhive` (fetch the base flake's newest\n"
        "revision and commit the lock), then `hivegen rollout --all` with the options\n"
        "given. When the base did not change, the rollout only checks that every agent\n"
        "runs the committed system.",
        epilog="example:\n  hivegen upgrade --canary alice",
    )
    _rollout_arguments(upgrade, names=False)
    upgrade.set_defaults(handler=_Lazy("rollout_verbs", "_cmd_upgrade"))


def _rollout_arguments(parser: argparse.ArgumentParser, *, names: bool) -> None:
    if names:
        parser.add_argument("names", metavar="NAME", nargs="*", help="the agents (or --all)")
        parser.add_argument("--all", action="store_true", help="every registered agent")
    parser.add_argument("--canary", metavar="NAME", help="the agent switched first, alone")
    parser.add_argument(
        "--jobs", type=int, default=2, metavar="K", help="agents switched at once after it (2)"
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="go on with the others after a failure"
    )
    _add_json_option(parser, "rollout", what="the report")


def _add_check_commands(sub: Any) -> None:
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
    _add_json_option(doctor, "doctor", what="the findings")
    doctor.set_defaults(handler=_Lazy("hive_verbs", "_cmd_doctor"))
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
    _add_json_option(reconcile, "reconcile")
    reconcile.set_defaults(handler=_Lazy("hive_verbs", "_cmd_reconcile"))
