"""rollout and upgrade: their handlers and the progress view (their grammar: parser)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from hivegen.cli.common import _hive, _print_json, current_live
from hivegen.errors import ExitCode, HivegenError
from hivegen.jsondoc import Kind


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
