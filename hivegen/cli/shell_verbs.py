"""completion and man: the shell completion scripts and hivegen(1), both generated from
the parser (completion, manpage), as the package installs them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hivegen.cli.common import _built, _Formatter
from hivegen.errors import ExitCode


def _add_shell_commands(sub: Any) -> None:
    completion = sub.add_parser(
        "completion",
        help="print the shell completion script (bash, zsh or fish)",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="Print a completion script for SHELL: verbs, options, their choices, and\n"
        "agent names (asked of `hivegen list --names` at each TAB, with the --config\n"
        "typed on the line). The package installs them where each shell looks; to use\n"
        "one without it, load it from the shell's startup file.",
        epilog="examples:\n"
        "  source <(hivegen completion bash)          in ~/.bashrc\n"
        "  hivegen completion zsh > ~/.zfunc/_hivegen  a directory on $fpath\n"
        "  hivegen completion fish > ~/.config/fish/completions/hivegen.fish",
    )
    if _built(completion):  # its choices are completion's, imported for this verb only
        from hivegen.cli.completion import Shell

        completion.add_argument(
            "shell", metavar="SHELL", type=Shell, choices=list(Shell), help="bash, zsh or fish"
        )
    completion.set_defaults(handler=_cmd_completion)
    man = sub.add_parser(
        "man",
        help="print the manual page hivegen(1), in roff",
        allow_abbrev=False,
        formatter_class=_Formatter,
        description="Print hivegen(1) in roff, generated from the same parser as --help:\n"
        "every command with its arguments, the options, exit status, files and\n"
        "environment. The package installs it as share/man/man1/hivegen.1.",
        epilog="examples:\n  hivegen man | man -l -\n  hivegen man > hivegen.1",
    )
    man.set_defaults(handler=_cmd_man)


def _cmd_completion(args: argparse.Namespace) -> int:
    from hivegen.cli.completion import completion_script
    from hivegen.cli.parser import build_parser

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return ExitCode.OK


def _cmd_man(args: argparse.Namespace) -> int:
    from hivegen import __version__
    from hivegen.cli.manpage import render_manpage
    from hivegen.cli.parser import build_parser
    from hivegen.config import CONFIG_ENV, DEFAULT_CONFIG_PATH, HiveSettings

    page = render_manpage(
        build_parser(),
        version=__version__,
        config_path=str(DEFAULT_CONFIG_PATH),
        config_env=CONFIG_ENV,
        state_root=str(HiveSettings().state_root),
    )
    sys.stdout.write(page)
    return ExitCode.OK
