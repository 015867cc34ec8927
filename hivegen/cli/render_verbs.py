"""port and render: what hivegen would write, printed, with nothing written and no
hive opened."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence

from hivegen.cli.common import PROG, _load_config, _print_json
from hivegen.errors import ExitCode
from hivegen.highlight import Language
from hivegen.jsondoc import Kind
from hivegen.sanitize import terminal, terminal_line


def _cmd_port(args: argparse.Namespace) -> int:
    config = _load_config(args)
    agent = config.agent(args.name)
    if args.json:
        _print_json(
            Kind.PORT,
            {
                "name": agent.name,
                "port": agent.port,
                "container": agent.container,
                "role": str(agent.role),
            },
        )
    else:
        print(agent.port)
    return ExitCode.OK


def _print_files(files: Mapping[str, str], args: argparse.Namespace) -> int:
    from hivegen.highlight import highlight, wants_color

    if args.json:
        _print_json(Kind.RENDER, {"files": dict(files)})
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
