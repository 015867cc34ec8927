"""The one error hierarchy. Library code raises these; only `cli.main` catches them."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    DRIFT = 3
    INTERRUPTED = 130


class HivegenError(Exception):
    """Base of every error hivegen reports to the operator.

    `hint` is an optional next step, printed on its own line after the message.
    """

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(HivegenError):
    """Bad command-line usage or bad input value (exit 2)."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """hive.toml is unreadable or invalid (exit 2)."""


class InvalidNameError(UsageError):
    """An agent or manager name outside what is allowed (exit 2)."""


class NixValueError(UsageError):
    """A value that a Nix string literal cannot carry (exit 2)."""


class DriftError(HivegenError):
    """A check found the hive differs from what it should be (exit 3)."""

    exit_code = ExitCode.DRIFT


class Interrupted(HivegenError):
    """Ctrl-C (exit 130): what `--json` reports when a command was interrupted."""

    exit_code = ExitCode.INTERRUPTED


class CommandError(HivegenError):
    """An external command failed; carries the argv, exit status and stderr tail."""

    def __init__(
        self,
        argv: tuple[str, ...],
        returncode: int,
        stderr_tail: tuple[str, ...],
        *,
        hint: str | None = None,
    ) -> None:
        from hivegen.process import quote_argv

        self.argv = argv
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        tail = "\n".join(f"  {line}" for line in stderr_tail)
        message = f"command failed (exit {returncode}): {quote_argv(argv)}"
        if tail:
            message += f"\n{tail}"
        super().__init__(message, hint=hint)
