"""Syntax highlighting for terminals; pygments is imported only when colour is wanted."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import TextIO, assert_never


class Color(StrEnum):
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class Language(StrEnum):
    NIX = "nix"
    DIFF = "diff"


def wants_color(choice: Color, stream: TextIO) -> bool:
    match choice:
        case Color.ALWAYS:
            return True
        case Color.NEVER:
            return False
        case Color.AUTO:
            if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
                return False
            return stream.isatty()
        case _:
            assert_never(choice)


def highlight(text: str, language: Language) -> str:
    from pygments import highlight as pygments_highlight
    from pygments.formatters import TerminalFormatter
    from pygments.lexers import DiffLexer, NixLexer

    lexer = NixLexer() if language is Language.NIX else DiffLexer()
    return pygments_highlight(text, lexer, TerminalFormatter())


def html(text: str, language: Language) -> str:
    """`text` as highlighted HTML (classes only; `html_css()` styles them). Controls and
    escape sequences are first shown as visible escapes (sanitize.terminal), then pygments
    escapes every character that could be markup."""
    from pygments import highlight as pygments_highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import DiffLexer, NixLexer

    from hivegen.sanitize import terminal

    lexer = NixLexer() if language is Language.NIX else DiffLexer()
    return pygments_highlight(terminal(text), lexer, HtmlFormatter(cssclass="highlight"))


def html_css() -> str:
    from pygments.formatters import HtmlFormatter

    return str(HtmlFormatter(cssclass="highlight").get_style_defs(".highlight"))  # type: ignore[no-untyped-call]
