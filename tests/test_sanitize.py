"""The terminal/HTML sanitiser: hostile control sequences become visible, text survives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hivegen import sanitize


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]52;c;ZWNobyBwd25lZA==\x07", "\\x1b]52;c;ZWNobyBwd25lZA==\\x07"),
        ("\x1b[2Jclear", "\\x1b[2Jclear"),
        (
            "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\",
            "\\x1b]8;;http://evil\\x1b\\link\\x1b]8;;\\x1b\\",
        ),
        ("safe\rEVIL", "safe\\x0dEVIL"),
        ("\u202egnp.exe", "\\u202egnp.exe"),
        ("a\u2066b\u2069c", "a\\u2066b\\u2069c"),
        ("\x9b31m", "\\x9b31m"),
        ("bell\x07 del\x7f nul\x00", "bell\\x07 del\\x7f nul\\x00"),
        ("two\nlines\tand tab", "two\nlines\tand tab"),
        ("héllo wörld ✓ 日本", "héllo wörld ✓ 日本"),
        ("bad \udcff byte", "bad \\udcff byte"),
    ],
)
def test_terminal(raw: str, shown: str) -> None:
    assert sanitize.terminal(raw) == shown


def test_terminal_line_escapes_newline_and_tab() -> None:
    assert sanitize.terminal_line("subject\nforged row\tx\r") == "subject\\x0aforged row\\x09x\\x0d"


def test_html_is_inert() -> None:
    assert sanitize.html("<script>alert('x')</script>\x1b[31m\"") == (
        "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;\\x1b[31m&quot;"
    )


@given(st.text())
def test_output_has_no_control_but_newline_and_tab(text: str) -> None:
    shown = sanitize.terminal(text)
    shown.encode("utf-8")  # never a lone surrogate
    for char in shown:
        code = ord(char)
        assert char in "\n\t" or not (code < 0x20 or 0x7F <= code <= 0x9F), repr(shown)
        assert not 0x202A <= code <= 0x202E, repr(shown)
        assert not 0x2066 <= code <= 0x2069, repr(shown)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, exclude_categories=("Cc", "Cs"))))
def test_ordinary_text_is_unchanged(text: str) -> None:
    bidi = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x61C, 0x200E, 0x200F}
    if any(ord(c) in bidi | {0x2028, 0x2029} for c in text):
        return
    assert sanitize.terminal(text) == text
