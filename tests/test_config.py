from __future__ import annotations

from pathlib import Path

import pytest

from hivegen.config import Config, Limits, load_config, parse_config
from hivegen.errors import ConfigError, ExitCode


def parse(text: str, path: Path = Path("/etc/hivegen/hive.toml")) -> Config:
    return parse_config(text.encode(), path)


FULL = """
[hive]
state_root = "/var/lib/hyperhive"
hyperhive_flake = "git+https://example.org/hyperhive"
manager = "hm1nd"
manager_port = 8000
dashboard_port = 7000
operator_pronouns = "they/them"
committer_name = "c0re"
committer_email = "c0re@hyperhive"

[host]
containers_conf_dir = "/etc/nixos-containers"
systemd_dir = "/etc/systemd/system.control"
runtime_root = "/run/hyperhive"

[limits]
memory_max = "2G"
cpu_quota = "50%"

[agents.alice]
memory_max = "4G"
"""


def test_design_example_equals_defaults_plus_override() -> None:
    config = parse(FULL)
    defaults = Config()
    assert config.hive == defaults.hive
    assert config.host == defaults.host
    assert config.limits == defaults.limits
    assert config.limits_for("alice") == Limits(memory_max="4G", cpu_quota="50%")
    assert config.limits_for("bob") == Limits()


def test_empty_file_is_all_defaults() -> None:
    assert parse("").hive == Config().hive


def test_missing_default_file_means_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("hivegen.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert load_config(None).source is None


def test_explicit_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_env_variable_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "hive.toml"
    path.write_text('[hive]\nmanager = "boss"\n')
    monkeypatch.setenv("HIVEGEN_CONFIG", str(path))
    assert load_config(None).hive.manager == "boss"
    # --config wins over the environment.
    other = tmp_path / "other.toml"
    other.write_text('[hive]\nmanager = "chief"\n')
    assert load_config(other).hive.manager == "chief"


def test_paths_are_normalised() -> None:
    assert str(parse('[hive]\nstate_root = "/srv//hive/"\n').hive.state_root) == "/srv/hive"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[hive]\nstate_rot = '/x'\n", "[hive] state_rot: unknown key"),
        ("[hives]\n", "top level hives: unknown key"),
        ("[limits]\nmemory = '1G'\n", "[limits] memory: unknown key"),
        ("[agents.alice]\nmemory = '1G'\n", "[agents.alice] memory: unknown key"),
        ("[hive]\nmanager_port = '8000'\n", "[hive] manager_port: must be an integer"),
        ("[hive]\nmanager_port = true\n", "[hive] manager_port: must be an integer"),
        ("[hive]\ndashboard_port = 70000\n", "[hive] dashboard_port: port 70000 is out of"),
        ("[hive]\nstate_root = 5\n", "[hive] state_root: must be a string"),
        ("[hive]\nstate_root = 'relative/dir'\n", "[hive] state_root: 'relative/dir' is not"),
        ("[hive]\nstate_root = '/with space'\n", "[hive] state_root: '/with space' is not"),
        ("[hive]\nstate_root = '/a:b'\n", "[hive] state_root: '/a:b' is not allowed"),
        ("[hive]\nstate_root = '/a/../b'\n", "[hive] state_root: '/a/../b' is not allowed"),
        ("[host]\nruntime_root = '/run/x\\ny'\n", "[host] runtime_root:"),
        ("[hive]\nmanager = 'h-boss'\n", "[hive] manager: invalid manager name"),
        ("[hive]\nmanager = 'Boss'\n", "[hive] manager: invalid manager name"),
        ('[hive]\noperator_pronouns = "a\\u0000b"\n', "[hive] operator_pronouns: control"),
        ('[hive]\ncommitter_name = "a\\u001bb"\n', "[hive] committer_name: control"),
        ("[hive]\ncommitter_name = ''\n", "[hive] committer_name: '' is not a usable"),
        ("[hive]\ncommitter_email = 'a b@c'\n", "[hive] committer_email: 'a b@c' is not"),
        ("[hive]\nhyperhive_flake = '--upload-pack=x'\n", "[hive] hyperhive_flake:"),
        ("[limits]\nmemory_max = '2G; rm -rf /'\n", "[limits] memory_max: '2G; rm -rf /'"),
        ("[limits]\nmemory_max = '-1'\n", "[limits] memory_max: '-1' is not a memory"),
        ("[limits]\nmemory_max = '1e9'\n", "[limits] memory_max: '1e9' is not a memory"),
        ("[limits]\nmemory_max = 2\n", "[limits] memory_max: must be a string"),
        ("[limits]\ncpu_quota = '50'\n", "[limits] cpu_quota: '50' is not a CPU quota"),
        ("[limits]\ncpu_quota = '0%'\n", "[limits] cpu_quota: '0%' is not a CPU quota"),
        ("[agents.Alice]\n", "[agents] Alice: invalid agent name"),
        ("[agents.'a b']\n", "[agents] a b: invalid agent name"),
        ("[agents.abcdefghij]\n", "[agents] abcdefghij: invalid agent name"),
        ("[agents.alice]\ncpu_quota = 'lots'\n", "[agents.alice] cpu_quota: 'lots'"),
        ("agents = 3\n", "top level agents: must be a table"),
        ("[agents]\nalice = 3\n", "[agents] alice: must be a table"),
        ("[hive\n", "not valid TOML"),
    ],
)
def test_invalid_config_names_file_table_and_key(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, Path("/etc/hivegen/hive.toml"))
    assert info.value.exit_code == ExitCode.USAGE
    assert str(info.value).startswith("/etc/hivegen/hive.toml: ")
    assert where in str(info.value)


def test_not_utf8() -> None:
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        parse_config(b"[hive]\nmanager = '\xff'\n", Path("h.toml"))


def test_manager_may_have_overrides_under_its_own_name() -> None:
    config = parse('[hive]\nmanager = "overseer-01"\n[agents.overseer-01]\ncpu_quota = "90%"\n')
    assert config.limits_for("overseer-01").cpu_quota == "90%"


def test_legal_hostile_strings_are_kept_verbatim() -> None:
    config = parse('[hive]\noperator_pronouns = "a \\"b\\" ${c} \\\\ \\n ✓"\n')
    assert config.hive.operator_pronouns == 'a "b" ${c} \\ \n ✓'
