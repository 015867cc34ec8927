"""Escaping of values that enter Nix source. Every template value goes through here."""

from __future__ import annotations

import re
import unicodedata

from hivegen.errors import NixValueError

# Characters a Nix double-quoted string needs escaped, and how.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile(r'[\\"\n\r\t]|\$\{')

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_'-]*\Z")
_KEYWORDS = frozenset({"if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or"})


def check_nix_string(value: str) -> None:
    """Raise NixValueError when a Nix string literal cannot carry `value` faithfully.

    Nix strings are NUL-terminated C strings, and other control characters would reach
    files, environment variables and terminals unseen: they are rejected, never passed on.
    Tab, newline and carriage return are escaped instead.
    """
    for index, char in enumerate(value):
        if char in "\t\n\r":
            continue
        category = unicodedata.category(char)
        if category == "Cc":
            raise NixValueError(
                f"control character U+{ord(char):04X} at position {index} cannot be "
                "written into Nix",
                hint="remove it; tab, newline and carriage return are the only ones allowed",
            )
        if category == "Cs":
            raise NixValueError(
                f"lone surrogate U+{ord(char):04X} at position {index} is not valid Unicode"
            )


class NixCode(str):
    """Text already safe to place in Nix source. Templates refuse any other value."""

    __slots__ = ()


def nix_str(value: object) -> NixCode:
    """`value` as a Nix double-quoted string literal that evaluates back to it exactly."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise TypeError(f"nix_str takes str or int, not {type(value).__name__}")
    text = str(value)
    check_nix_string(text)
    escaped = _NEEDS_ESCAPE.sub(lambda m: _ESCAPES.get(m.group(0), "\\${"), text)
    return NixCode(f'"{escaped}"')


def nix_ident(value: str) -> NixCode:
    """`value` as an attribute name: bare when Nix allows it, a quoted string otherwise."""
    if _IDENT.match(value) and value not in _KEYWORDS:
        return NixCode(value)
    return nix_str(value)


def nix_comment(value: object) -> NixCode:
    """`value` inside a `#` comment: one line of printable text, so it cannot end the comment."""
    text = str(value)
    if not text.isprintable():
        raise NixValueError(f"{text!r} cannot go into a Nix comment: not one printable line")
    return NixCode(text)
