"""rollout and upgrade: their arguments, help, and the progress view."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from hivegen.cli.common import _add_json_option, _Formatter, _hive, _print_json, current_live
from hivegen.errors import ExitCode, HivegenError
from hivegen.jsondoc import Kind

_DESCRIPTION = """\
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


def add_rollout_commands(sub: Any) -> None:
    rollout = sub.add_parser(
        "rollout",
        help="build every agent's system at once, switch a canary first, check health",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description=_DESCRIPTION,
        epilog="examples:\n  hivegen rollout --all\n  hivegen rollout alice bob --canary bob"
        "\n  hivegen rollout --all --jobs 4 --keep-going --json",
    )
    _rollout_arguments(rollout, names=True)
    rollout.set_defaults(handler=_cmd_rollout)
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
    upgrade.set_defaults(handler=_cmd_upgrade)


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


class _Progress:
    """A line per agent and phase as it changes (from several threads), through the
    hive's output; on a terminal, the status line under them (cli/live.py) holds every
    agent's phase at once, redrawn in place."""

    def __init__(self, show: Callable[[str], None]) -> None:
        import threading
        import time

        self.show = show
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.phases: dict[str, str] = {}

    def step(self, step: Any) -> None:
        import time

        detail = f"  {step.detail}" if step.detail and not step.phase.done else ""
        if step.phase.name in ("ROLLED_BACK", "FAILED"):
            detail = f"  {step.detail}"
        with self.lock:
            self.phases[step.name] = str(step.phase)
            live = current_live()
            if live is not None:
                live.status(" · ".join(f"{n} {p}" for n, p in self.phases.items()))
            self.show(
                f"[{time.monotonic() - self.started:6.1f}s] {step.name:<11} {step.phase}"
                f"{f' ({step.elapsed:.1f}s)' if step.elapsed else ''}{detail}"
            )


def _run(args: argparse.Namespace, hive: Any, names: list[str]) -> int:
    from hivegen.rollout import Rollout

    progress = _Progress(hive.on_output)
    report = Rollout(
        hive,
        names,
        canary=args.canary,
        jobs=args.jobs,
        keep_going=args.keep_going,
        on_progress=progress.step,
    ).run()
    if args.json:
        _print_json(Kind.ROLLOUT, report.as_json())
    else:
        width = max(len(s.name) for s in report.steps) if report.steps else 4
        print(f"rollout of meta {report.meta_commit[:12]}: built in {report.build_seconds:.1f}s")
        for s in report.steps:
            print(f"  {s.name:<{width}}  {s.phase}  ({s.elapsed:.1f}s)")
    if not report.ok:
        bad = [s.name for s in report.steps if not s.phase.done or s.phase.name == "ROLLED_BACK"]
        raise HivegenError(
            f"the rollout did not reach every agent: {', '.join(bad)}",
            hint="hivegen history NAME and the unhealthy/<n> tags say why; "
            "fix it, then run the rollout again",
        )
    return ExitCode.OK


def _cmd_rollout(args: argparse.Namespace) -> int:
    from hivegen.batch import chosen

    hive = _hive(args)
    return _run(args, hive, chosen(hive, "rollout", args.names, everyone=args.all))


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from hivegen.batch import chosen

    hive = _hive(args)
    with hive.locked():
        result = hive.meta_update(["hyperhive"])
        if not args.json:
            changed = [c for c in result.changes if c.changed]
            hive.on_output(
                f"hyperhive: {(changed[0].old_rev or '-')[:12]} -> "
                f"{(changed[0].new_rev or '-')[:12]}"
                if changed
                else "hyperhive: unchanged"
            )
        return _run(args, hive, chosen(hive, "upgrade", [], everyone=True))
