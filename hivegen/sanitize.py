"""The one sanitiser for text a container controls, before an operator sees it.

Commit subjects, author names, file names and contents in a diff, notes and nix's error
text quoted back all come from repos the manager writes. Printed raw, such text can drive
the operator's terminal: clear the screen (CSI), set the clipboard (OSC 52), forge links
(OSC 8), overwrite a line with `\\r`, or reorder what is shown with bidi overrides. Every
front end passes such text through `terminal()` (or `terminal_line()` for one-line
fields); the dashboard uses `html()`. `--json` output keeps the exact text: JSON escapes
control characters itself.

Neutralised characters stay *visible*: each becomes a `\\xNN` / `\\uNNNN` escape, so an
operator reviewing a proposal sees that something odd is there instead of losing it.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls (0x80-0x9f: 0x9b is a one-byte CSI),
# bidi embeddings/overrides/isolates and marks, and the line/paragraph separators some
# terminals treat as newlines.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
# In one-line fields (a subject, a name) a newline or tab would forge a second row.
_UNSAFE_LINE = re.compile(_UNSAFE.pattern[:-1] + "\t\n]")
# Lone surrogates (from `errors="surrogateescape"` decoding) cannot be encoded on output.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal(text: str) -> str:
    """`text` safe to write to a terminal: newlines and tabs kept, every other control,
    escape sequence introducer and bidi control shown as a visible escape."""
    return _SURROGATE.sub(_escape, _UNSAFE.sub(_escape, text))


def terminal_line(text: str) -> str:
    """Like `terminal()`, for a one-line field: newlines and tabs are escaped too."""
    return _SURROGATE.sub(_escape, _UNSAFE_LINE.sub(_escape, text))


def html(text: str) -> str:
    """`text` for an HTML text node or quoted attribute: the same visible escapes as on a
    terminal, then HTML-escaped (quotes included), so nothing in it is markup."""
    import html as _html  # the dashboard's: not for the command line

    return _html.escape(terminal(text), quote=True)
