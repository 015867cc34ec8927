"""The verbs on one agent and the views of them: spawn, start, stop, restart, rebuild,
destroy; list and status."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hivegen.cli.common import (
    PROG,
    _hive,
    _load_config,
    _print_json,
    _print_table,
    _short,
)
from hivegen.errors import ExitCode, UsageError
from hivegen.jsondoc import Kind
from hivegen.sanitize import terminal_line


def _cmd_list(args: argparse.Namespace) -> int:
    if args.names_only:
        from hivegen import registry

        # The registry alone, as files (no root check, no lock, no process): shell
        # completion runs it on every TAB, as the operator. Its names are validated
        # agent names, so nothing here can drive the terminal or the shell.
        for name in registry.registered_agents(_load_config(args)):
            print(name)
        return ExitCode.OK
    agents = _hive(args).agents()
    rows = [
        {"name": a.name, "container": a.container, "role": str(a.role), "port": a.port}
        for a in agents
    ]
    if args.json:
        _print_json(Kind.LIST, {"agents": rows})
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
    clear = sys.stdout.isatty() and not args.json
    try:
        while True:
            statuses = _chosen(args, hive.status())
            if clear:
                sys.stdout.write("\x1b[H\x1b[2J")  # home, clear: as watch(1) redraws
            if not args.json:  # with --json: a document a tick, each with its time
                print(
                    f"every {args.watch:g}s: {PROG} status  {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                )
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
        import time

        from hivegen import jsondoc

        _print_json(
            Kind.STATUS,
            {"time": jsondoc.time(time.time()), "agents": [_status_json(s) for s in statuses]},
        )
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
            "unproposed": "-" if one.unproposed is None else one.unproposed,
            "needs rebuild": _rebuild_cell(one),
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
    waiting = [f"{s.name} {s.unproposed}" for s in statuses if s.unproposed]
    if waiting:
        print(
            "\ncommits the manager made that nobody proposed (hivegen pending lists them): "
            + ", ".join(waiting)
        )
    stale = [s.name for s in statuses if s.needs_rebuild]
    if stale:
        print(
            f"\nbuilt from an older lock than the meta flake's (hivegen rollout to update): "
            f"{', '.join(stale)}"
        )


def _rebuild_cell(status: Any) -> str:
    if status.stale_inputs is None:
        return "(not recorded)"
    if not status.stale_inputs:
        return "no"
    return f"yes ({', '.join(status.stale_inputs)} moved since its build)"


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
