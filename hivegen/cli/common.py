"""What every verb shares: the program's name, the argparse classes and global
options, the printers (JSON, tables, short shas, ages), loading the config and
opening the hive (root, the lock and its waiting line), asking before an act that
is hard to undo, and how an error or a log line reaches stderr."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hivegen.errors import HivegenError, UsageError
from hivegen.sanitize import terminal, terminal_line

if TYPE_CHECKING:
    _SubParsersAction = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _SubParsersAction = argparse._SubParsersAction

PROG = "hivegen"

Handler = Callable[[argparse.Namespace], int]


class _Lazy:
    """A verb's handler, `hivegen.cli.<module>.<name>`, imported when the verb runs: the
    parser loads no verb's code (`hivegen --help` runs none)."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def resolve(self) -> Handler:
        import importlib

        handler: Handler = getattr(importlib.import_module(f"hivegen.cli.{self.module}"), self.name)
        return handler

    def __call__(self, args: argparse.Namespace) -> int:
        return self.resolve()(args)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Lazy) and (self.module, self.name) == (other.module, other.name)

    def __hash__(self) -> int:
        return hash((self.module, self.name))

    def __repr__(self) -> str:
        return f"<handler hivegen.cli.{self.module}.{self.name}>"


def _built(parser: object) -> bool:
    """Whether `parser` is a verb's real parser, not one left unbuilt (_VerbChoices): a
    definition skips what only a real parser needs (its imports) for the others."""
    return isinstance(parser, argparse.ArgumentParser)


class _Unbuilt:
    """The parser of a verb not asked for: whatever its definition adds is dropped."""

    def __getattr__(self, name: str) -> Callable[..., _Unbuilt]:
        return self._drop

    def _drop(self, *args: object, **kwargs: object) -> _Unbuilt:
        return self


_UNBUILT: Any = _Unbuilt()


class _VerbChoices(_SubParsersAction):
    """The verbs, as `add_subparsers` makes them, but with only the parser of the verb
    the command line names built (`only`): the others are listed by --help and accepted
    as choices, their definitions dropped (building all of them costs more than the rest
    of a short command). Should argparse reach a verb left unbuilt (a command line read
    otherwise than the verb_of guess), every verb is built then (`build_all`), as if
    `only` had been None."""

    only: frozenset[str] | None = None  # None: every verb
    build_all: Callable[[], Mapping[str, argparse.ArgumentParser]] | None = None

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if self.only is None or name in self.only:
            return super().add_parser(name, **kwargs)
        if "help" in kwargs:
            self._choices_actions.append(self._ChoicesPseudoAction(name, (), kwargs["help"]))
        self._name_parser_map[name] = _UNBUILT
        return _UNBUILT

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        name = values[0]
        if self._name_parser_map.get(name) is _UNBUILT:
            assert self.build_all is not None
            self._name_parser_map[name] = self.build_all()[name]
        super().__call__(parser, namespace, values, option_string)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _add_color_option(parser: argparse.ArgumentParser, what: str) -> None:
    if not _built(parser):
        return
    from hivegen.highlight import Color

    parser.add_argument(
        "--color",
        type=Color,
        choices=list(Color),
        default=Color.AUTO,
        help=f"highlight {what} (default: auto, when stdout is a terminal)",
    )


def _add_json_option(parser: argparse.ArgumentParser, *kinds: str, what: str = "") -> None:
    """--json, its help naming the document it prints (docs/json.md has them all)."""
    if not _built(parser):
        return
    from hivegen import jsondoc

    ids = " or ".join(jsondoc.schema_id(jsondoc.Kind(k)) for k in kinds)
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"print {what or 'the result'} as JSON: a {ids} document (docs/json.md)",
    )


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
        if _JSON_ERRORS[0]:
            print_error_document(UsageError(f"{message} (see {self.prog} --help)"))
        super().error(message)


class _VerbParser(_Parser):
    """A verb's parser: it takes the global options too, and lists them in its help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _add_global_options(self, suppress=True)


def _load_config(args: argparse.Namespace) -> Any:
    from hivegen.config import load_config

    return load_config(args.config)


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

    on_output: Callable[[str], None] = show_output
    if args.command in LIVE_VERBS:
        from hivegen.cli.live import Live

        live = Live(f"{PROG} {args.command}")
        _OPEN_LIVE.append(live)
        on_output = live.line
    return Hive(
        config,
        LockPolicy(
            wait=not args.no_wait,
            on_wait=say_waiting,
            holder=f"{PROG} {shlex.join(args.argv)}"[:200],
        ),
        on_output=on_output,
    )


# The verbs that build or wait on containers: on a terminal, a status line ticks
# under their output while they run (cli/live.py).
LIVE_VERBS = frozenset(
    {"spawn", "start", "restart", "rebuild", "approve", "rollback", "rollout", "upgrade"}
)
_OPEN_LIVE: list[Any] = []


def current_live() -> Any:
    """The running verb's status line (a cli.live.Live), if it has one."""
    return _OPEN_LIVE[-1] if _OPEN_LIVE else None


def close_live() -> None:
    """Erase the status line of the verb that ran (main calls it, however it ended)."""
    while _OPEN_LIVE:
        _OPEN_LIVE.pop().close()


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


def _print_json(kind: Any, body: Mapping[str, object], *, one_line: bool = False) -> None:
    """Print `body` as a `--json` document of `kind` (a jsondoc.Kind); `one_line` for a
    verb that prints JSON Lines (`logs`)."""
    from hivegen import jsondoc

    document = jsondoc.document(kind, body)
    sys.stdout.write(jsondoc.dumps(document, indent=None if one_line else 2) + "\n")
    _PRINTED.append(kind)


# The verbs whose --json is JSON Lines, one document a line: an error is one line too.
JSON_LINES_VERBS = frozenset({"logs"})


# The kinds of the documents this command printed: main prints an error document for a
# failed `--json` command only when it printed none of its own.
_PRINTED: list[Any] = []


def error_json(error: HivegenError) -> dict[str, object]:
    """An error as the documents give it (what stderr says, and the exit code)."""
    return {"message": error.message, "hint": error.hint, "exit_code": int(error.exit_code)}


def print_error_document(error: HivegenError, *, one_line: bool = False) -> None:
    """A failed `--json` command's document, unless it printed one of its own (a failed
    build, a batch with a failed agent: their results say what failed)."""
    from hivegen import jsondoc
    from hivegen.errors import CommandError

    if _PRINTED:
        return
    detail = error_json(error)
    if isinstance(error, CommandError):
        detail["command"] = {
            "argv": list(error.argv),
            "exit_code": error.returncode,
            "stderr_tail": list(error.stderr_tail),
        }
    _print_json(jsondoc.Kind.ERROR, {"error": detail}, one_line=one_line)


# Set while the command line is parsed, when it asks for --json: a usage error is then
# a document too.
_JSON_ERRORS: list[bool] = [False]


@contextlib.contextmanager
def json_errors(wanted: bool) -> Iterator[None]:
    """Start a command: nothing printed yet, and argparse's errors as documents if
    `wanted`, while the command line is parsed."""
    _PRINTED.clear()
    _JSON_ERRORS[0] = wanted
    try:
        yield
    finally:
        _JSON_ERRORS[0] = False


def _print_table(header: list[str], rows: Sequence[Sequence[object]]) -> None:
    # Every cell is one line: a subject, note or error headline from the manager's repos
    # can neither drive the terminal nor forge a row.
    cells = [header, *[[terminal_line(str(c)) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _short(rev: str | None, length: int = 12) -> str:
    return rev[:length] if rev else "-"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _setup_logging(verbose: bool) -> None:
    import logging  # once a verb runs: not for `hivegen --help`

    class _TerminalFormatter(logging.Formatter):
        """Log lines (`-v` commands quote refs and paths) shown with controls made
        visible."""

        def format(self, record: logging.LogRecord) -> str:
            return terminal(super().format(record))

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
