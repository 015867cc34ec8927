from __future__ import annotations

import json
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hivegen.errors import NixValueError
from hivegen.nixlang import NixCode, nix_comment, nix_ident, nix_str

TRICKY = [
    "",
    "plain",
    'quote " inside',
    "back\\slash",
    "${interp}",
    "$${double}",
    "$",
    "a$",
    '$"',
    "$\\",
    "\\${",
    "\\\\${x}",
    "''",
    "''${x}",
    "new\nline",
    "cr\r\nlf",
    "tab\there",
    "ünïcödé ✓ 🐝",
    "they/them",
    "}{",
    "#comment",
    "/* not a comment */",
]


def nix_eval_strings(values: list[str]) -> list[str]:
    """Evaluate the rendered literals with real Nix, in one process for all of them."""
    expr = "[ " + " ".join(nix_str(v) for v in values) + " ]"
    out = subprocess.run(
        ["nix", "eval", "--json", "--expr", expr], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"nix rejected {expr!r}:\n{out.stderr}"
    result: list[str] = json.loads(out.stdout)
    return result


def test_tricky_strings_round_trip_through_real_nix() -> None:
    assert nix_eval_strings(TRICKY) == TRICKY


# Any string nix_str accepts: no control characters but tab, newline and CR, no lone
# surrogates. Nix's special characters are weighted up so that they meet each other.
allowed_char = st.one_of(
    st.characters(exclude_categories=("Cc", "Cs")),
    st.sampled_from(list("$${}\\\"'\t\n\r")),
)
allowed_text = st.text(allowed_char, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(allowed_text, min_size=1, max_size=60))
def test_any_allowed_string_round_trips_through_real_nix(values: list[str]) -> None:
    assert nix_eval_strings(values) == values


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\ud800"])
def test_control_characters_are_rejected(char: str) -> None:
    with pytest.raises(NixValueError, match=f"U\\+{ord(char):04X}"):
        nix_str(f"a{char}b")


def test_escapes() -> None:
    assert nix_str('a"b') == '"a\\"b"'
    assert nix_str("${x}") == '"\\${x}"'
    assert nix_str("a\\b") == '"a\\\\b"'
    assert nix_str("x\ny") == '"x\\ny"'
    assert nix_str(8000) == '"8000"'
    assert isinstance(nix_str("x"), NixCode)


def test_nix_str_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        nix_str(True)
    with pytest.raises(TypeError):
        nix_str(None)


def test_nix_ident() -> None:
    assert nix_ident("agent-alice") == "agent-alice"
    assert nix_ident("with") == '"with"'
    assert nix_ident("1x") == '"1x"'
    assert nix_ident("a.b") == '"a.b"'


def test_nix_comment_refuses_line_breaks() -> None:
    assert nix_comment("alice") == "alice"
    with pytest.raises(NixValueError):
        nix_comment("alice\n}; evil = {")
