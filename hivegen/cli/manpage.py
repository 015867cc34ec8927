"""hivegen(1), written in roff from the parser `hivegen --help` is built from: every
verb (and `meta sync`, `render meta`...) with its synopsis, description, arguments and
examples, then the sections a man page has that --help does not.

In-house rather than argparse-manpage: about as long as the configuration that tool
needs for our sections (COMMANDS with nested verbs, EXIT STATUS, FILES, ENVIRONMENT),
and one dependency fewer at build and run time.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from hivegen.cli.common import PROG

EXIT_STATUS = (
    ("0", "success"),
    ("1", "the command failed (a build, a health check, an agent that did not start)"),
    ("2", "bad usage or input: an unknown agent, proposal or option, an invalid name"),
    ("3", "a check found drift (meta sync --check, doctor)"),
    ("130", "interrupted (Ctrl-C)"),
)


def escape(text: str) -> str:
    """Text as roff prints it: backslashes, hyphens (as minus signs, so that a copied
    option is ASCII) and quotes taken literally; a line can never start a request."""
    text = (
        text.replace("\\", "\\e")
        .replace("-", "\\-")
        .replace("'", "\\(aq")
        .replace("`", "\\(ga")
        .replace('"', "\\(dq")
    )
    lines = [f"\\&{line}" if line.startswith((".", "'")) else line for line in text.split("\n")]
    return "\n".join(lines)


def bold(text: str) -> str:
    return f"\\fB{escape(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{escape(text)}\\fR"


def render_manpage(
    parser: argparse.ArgumentParser,
    *,
    version: str,
    config_path: str,
    config_env: str,
    state_root: str,
) -> str:
    description = (parser.description or "").strip()
    summary, _, rest = description.partition("\n")
    summary = summary.rstrip(".")
    out = [
        f'.TH {PROG.upper()} 1 "" "{escape(f"{PROG} {version}")}" "User Commands"',
        # Left-aligned, unhyphenated: paths and option names are never split.
        ".ad l",
        ".nh",
        ".SH NAME",
        f"{PROG} \\- {escape(summary[:1].lower() + summary[1:])}",
        ".SH SYNOPSIS",
        f".B {PROG}",
        f"[{italic('OPTION')}]... {italic('COMMAND')} [{italic('ARGUMENT')}]...",
        ".SH DESCRIPTION",
        *_text(rest.strip() or summary),
        ".PP",
        f"Every option of {bold('OPTIONS')} but {bold('--version')} is taken before "
        f"the command or after it ({bold(f'{PROG} status -v')}).",
        ".SH COMMANDS",
    ]
    for path, verb, summary_help in _verbs(parser, []):
        out += _command(path, verb, summary_help)
    out += [".SH OPTIONS", *_arguments(parser, skip_global=False)]
    out += [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS:
        out += [".TP", bold(code), escape(meaning)]
    out += [
        ".SH ENVIRONMENT",
        ".TP",
        bold(config_env),
        escape(f"the hive.toml to read when --config is not given (else {config_path})"),
        ".SH FILES",
        ".TP",
        italic(config_path),
        escape("the hive's configuration; every setting has a default when it is absent"),
        ".TP",
        italic(state_root),
        escape(
            "the default state root (hive.state_root): the agents' repos, credentials, "
            "notes and the meta flake"
        ),
        ".TP",
        italic(f"{state_root}/.hivegen.lock"),
        escape("the hive lock every mutating command holds (--no-wait: fail at once)"),
    ]
    examples = _examples(parser.epilog or "")
    if examples:
        out += [".SH EXAMPLES", ".nf", *map(escape, examples), ".fi"]
    out += [".SH SEE ALSO", f"{bold('nixos-container')}(1), {bold('systemd-nspawn')}(1)"]
    return "\n".join(out) + "\n"


def _verbs(
    parser: argparse.ArgumentParser, path: list[str]
) -> Iterator[tuple[list[str], argparse.ArgumentParser, str]]:
    """Every command parser below `parser`, depth first, in --help's order, with its
    one-line help; a verb with sub-verbs (meta, render) is listed before them."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._get_subactions()}
        for name, sub in action.choices.items():
            if name not in helps or helps[name] == argparse.SUPPRESS:
                continue  # a hidden verb or an alias: --help does not list it either
            yield [*path, name], sub, helps[name]
            yield from _verbs(sub, [*path, name])


def _command(path: list[str], parser: argparse.ArgumentParser, summary: str) -> list[str]:
    out = [
        f'.SS "{escape(" ".join(path))}"',
        f".B {escape(' '.join([PROG, *path]))}",
        " ".join(_synopsis(parser)),
        ".PP",
        *_text((parser.description or _sentence(summary)).strip()),
    ]
    arguments = _arguments(parser, skip_global=True)
    if arguments:
        out += arguments
    example = (parser.epilog or "").strip()
    if example:
        heading, _, body = example.partition("\n")
        out += [".PP", escape(heading.rstrip(":").capitalize() + ":"), ".RS", ".nf"]
        out += [escape(line.removeprefix("  ")) for line in body.splitlines()]
        out += [".fi", ".RE"]
    return out


def _own(parser: argparse.ArgumentParser, *, skip_global: bool) -> list[argparse.Action]:
    # A verb's "global options" group holds its copies of --config, -v, --debug and
    # --no-wait (common._add_global_options): OPTIONS lists them once, with --help.
    shared = {
        id(action)
        for group in parser._action_groups
        if skip_global and group.title == "global options"
        for action in group._group_actions
    }
    return [
        a
        for a in parser._actions
        if a.help != argparse.SUPPRESS
        and not (skip_global and isinstance(a, argparse._HelpAction))
        and id(a) not in shared
    ]


def _synopsis(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in _own(parser, skip_global=True):
        if isinstance(action, argparse._SubParsersAction):
            yield italic(str(action.metavar or "COMMAND"))
            continue
        if not action.option_strings:
            yield _positional(action)
            continue
        option = bold(action.option_strings[-1])
        if action.nargs != 0:
            option += " " + _value(action)
        yield option if action.required else f"[{option}]"


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    if action.choices is not None:
        return "|".join(str(c) for c in action.choices)
    return action.dest.upper()


def _value(action: argparse.Action) -> str:
    value = italic(_metavar(action))
    return f"[{value}]" if action.nargs == "?" else value


def _positional(action: argparse.Action) -> str:
    name = italic(_metavar(action))
    match action.nargs:
        case "?":
            return f"[{name}]"
        case "*":
            return f"[{name}]..."
        case "+":
            return f"{name}..."
        case _:
            return name


def _arguments(parser: argparse.ArgumentParser, *, skip_global: bool) -> list[str]:
    out = []
    for action in _own(parser, skip_global=skip_global):
        if isinstance(action, argparse._SubParsersAction):
            continue  # each sub-verb has its own entry
        if action.option_strings:
            names = ", ".join(bold(o) for o in action.option_strings)
            term = f"{names} {_value(action)}" if action.nargs != 0 else names
        else:
            term = _positional(action)
        out += [".TP", term, escape(action.help or "")]
    return out


def _sentence(summary: str) -> str:
    """A one-line --help summary as the description of a verb that has none."""
    return summary[:1].upper() + summary[1:] + ("" if summary.endswith(".") else ".")


def _text(text: str) -> list[str]:
    """--help's text as paragraphs: filled where it is prose, kept line for line where it
    is laid out (a list, an indented example)."""
    out: list[str] = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.splitlines()
        if not lines:
            continue
        if out:
            out.append(".PP")
        if any(line.startswith((" ", "-")) for line in lines):
            out += [".nf", *map(escape, lines), ".fi"]
        else:
            out.append(escape(" ".join(line.strip() for line in lines)))
    return out


def _examples(epilog: str) -> list[str]:
    """The top-level --help's examples paragraph, without its heading."""
    for paragraph in epilog.split("\n\n"):
        heading, _, body = paragraph.partition("\n")
        if heading.startswith("example"):
            return [line.removeprefix("  ") for line in body.splitlines()]
    return []
