from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hivegen import names
from hivegen.errors import InvalidNameError

agent_names = st.from_regex(names.AGENT_NAME_RE, fullmatch=True)


@pytest.mark.parametrize(
    ("name", "port"),
    [("hm1nd", 8000), ("alice", 8879), ("coder", 8202)],
)
def test_port_vectors_from_reference(name: str, port: int) -> None:
    assert names.agent_port(name) == port


def test_fnv1a_known_values() -> None:
    # Published FNV-1a 32-bit test vectors.
    assert names.fnv1a_32(b"") == 0x811C9DC5
    assert names.fnv1a_32(b"a") == 0xE40C292C
    assert names.fnv1a_32(b"foobar") == 0xBF9CF968


@given(agent_names)
def test_port_in_range_and_deterministic(name: str) -> None:
    port = names.agent_port(name)
    assert 8100 <= port <= 8999
    assert port == names.agent_port(name)


def test_manager_port_follows_config() -> None:
    assert names.agent_port("boss", manager="boss", manager_port=9000) == 9000
    # Under another manager name, 'hm1nd' is an ordinary agent hashed like any other.
    assert names.agent_port("hm1nd", manager="boss") != 8000


def test_container_names() -> None:
    assert names.container_name("alice") == "h-alice"
    assert names.container_name("hm1nd") == "hm1nd"
    assert names.container_name("boss", manager="boss") == "boss"


@given(agent_names)
def test_valid_names_fit_nixos_container(name: str) -> None:
    assert names.validate_agent_name(name) == name
    assert len(names.container_name(name)) <= names.MAX_CONTAINER_NAME


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Alice",
        "1abc",
        "-x",
        "abcdefghij",
        "a b",
        "a/b",
        "..",
        "a.b",
        "a\nb",
        "\uff41lice",  # fullwidth look-alike of "alice"
        "a_b",
        "$(id)",
        "`id`",
        "a'b",
    ],
)
def test_bad_agent_names_rejected(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="lowercase letter"):
        names.validate_agent_name(bad)


@pytest.mark.parametrize("bad", ["", "H", "h-boss", "abcdefghijkl", "a b", "9x"])
def test_bad_manager_names_rejected(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="manager name"):
        names.validate_manager_name(bad)


def test_manager_name_may_be_longer_than_an_agent_name() -> None:
    assert names.validate_manager_name("overseer-01") == "overseer-01"
    assert names.validate_agent_name("overseer-01", manager="overseer-01") == "overseer-01"
    spec = names.AgentSpec.of("overseer-01", manager="overseer-01")
    assert spec.role is names.Role.MANAGER
    assert spec.container == "overseer-01"
