"""services.hivegen (nix/module.nix) evaluated by nixpkgs' real module system.

`../shared/nixpkgs-lib` is nixpkgs' lib/ (see its SOURCE); the NixOS options the module
sets are declared by tests/fixtures/nixos-module-eval.nix as NixOS types them. Skipped
only where ../shared is absent, and never in CI.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hivegen.config import (
    AGENT_KEYS,
    Config,
    Health,
    HiveSettings,
    HostSettings,
    Limits,
    parse_config,
)
from hivegen.errors import ConfigError
from hivegen.layout import TOP_DIRS

pytestmark = pytest.mark.nix  # run on Nix 2.8 here and on 2.26 in tests/nixroot

ROOT = Path(__file__).parent.parent
MODULE = ROOT / "nix" / "module.nix"
EVAL = ROOT / "tests" / "fixtures" / "nixos-module-eval.nix"
NIXPKGS_LIB = ROOT.parent / "shared" / "nixpkgs-lib" / "lib"
PACKAGE_OUT = "/nix/store/00000000000000000000000000000000-hivegen-0.1.0"
# What types.package accepts and lib.getExe reads: a derivation's attributes.
PACKAGE = {
    "type": "derivation",
    "name": "hivegen-0.1.0",
    "outPath": PACKAGE_OUT,
    "meta": {"mainProgram": "hivegen"},
}


@pytest.fixture(scope="module", autouse=True)
def _nixpkgs_lib() -> None:
    if not (NIXPKGS_LIB / "default.nix").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{NIXPKGS_LIB} is missing: CI must run the module tests")
        pytest.skip(f"{NIXPKGS_LIB} is absent (../shared not here)")


def hivegen_config(settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    service = {"enable": True, "package": PACKAGE, "settings": settings}
    return {"services": {"hivegen": {**service, **extra.pop("service", {})}}, **extra}


def nix_eval(configs: list[dict[str, Any]], *, accepts: bool = False) -> Any:
    out = subprocess.run(
        [
            "nix-instantiate",
            "--eval",
            "--strict",
            "--json",
            str(EVAL),
            "--argstr",
            "libPath",
            str(NIXPKGS_LIB),
            "--arg",
            "module",
            str(MODULE),
            "--argstr",
            "configs",
            json.dumps(configs),
            "--arg",
            "accepts",
            "true" if accepts else "false",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise NixEvalError(out.stderr)
    return json.loads(out.stdout)


class NixEvalError(Exception):
    pass


def summary(config: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = nix_eval([config])[0]
    return result


def loaded(text: str) -> Config:
    return parse_config(text.encode(), Path("/etc/hivegen/hive.toml"))


def without_source(config: Config) -> Config:
    return dataclasses.replace(config, source=None)


def test_defaults_are_hivegens_defaults() -> None:
    text = summary(hivegen_config({}))["hiveToml"]
    data = tomllib.loads(text)
    # Every key hive.toml has, written out, and nothing else.
    assert set(data) == {"hive", "host", "limits", "health"}
    assert set(data["hive"]) == {f.name for f in dataclasses.fields(HiveSettings)}
    assert set(data["host"]) == {f.name for f in dataclasses.fields(HostSettings)}
    assert set(data["limits"]) == {f.name for f in dataclasses.fields(Limits)}
    assert set(data["health"]) == {f.name for f in dataclasses.fields(Health)}
    assert without_source(loaded(text)) == Config()


# One value for every key that differs from its default: the module can express them all.
EVERY_KEY: dict[str, dict[str, Any]] = {
    "hive": {
        "state_root": "/srv/hive",
        "hyperhive_flake": "github:example/hyperhive?ref=v2",
        "manager": "boss",
        "manager_port": 8001,
        "dashboard_port": 7100,
        "operator_pronouns": 'she/her\tor "they" ${x}',
        "committer_name": "hive core",
        "committer_email": "core@example.org",
    },
    "host": {
        "containers_conf_dir": "/etc/containers-x",
        "systemd_dir": "/etc/systemd/system.d-x",
        "runtime_root": "/run/hive-x",
        "runtime": "simulated",
        "simulated_root": "/var/lib/sim-x",
    },
    "limits": {"memory_max": "4G", "cpu_quota": "150%"},
    "health": {"settle": 0.5, "port_timeout": 0, "address": "::1"},
}


def test_every_key_round_trips_through_the_module() -> None:
    tables = (
        ("hive", HiveSettings),
        ("host", HostSettings),
        ("limits", Limits),
        ("health", Health),
    )
    for table, cls in tables:
        # A key added to hivegen and not here (or to the module) fails this test.
        assert set(EVERY_KEY[table]) == {f.name for f in dataclasses.fields(cls)}, table
    agents: dict[str, dict[str, Any]] = {
        "alice": {
            "memory_max": "8G",
            "cpu_quota": "300%",
            "health_settle": 10,
            "health_port_timeout": 2.5,
        },
        "bob": {"cpu_quota": "20%", "health_port_timeout": 0},
        "boss": {"memory_max": "1G"},
    }
    assert set().union(*agents.values()) == AGENT_KEYS
    settings = {**EVERY_KEY, "agents": agents}
    text = summary(hivegen_config(settings))["hiveToml"]
    # Null keys are left out: bob keeps the hive's memory_max and settle.
    assert tomllib.loads(text) == settings
    config = loaded(text)
    assert dataclasses.asdict(config.hive) == {
        **EVERY_KEY["hive"],
        "state_root": Path("/srv/hive"),
    }
    assert str(config.host.runtime) == "simulated"
    assert config.limits_for("bob") == Limits(memory_max="4G", cpu_quota="20%")
    assert config.limits_for("alice") == Limits(memory_max="8G", cpu_quota="300%")
    assert config.health == Health(settle=0.5, port_timeout=0.0, address="::1")
    assert config.health_for("alice") == Health(settle=10.0, port_timeout=2.5, address="::1")
    assert config.health_for("bob") == Health(settle=0.5, port_timeout=0.0, address="::1")
    assert config.health_for("boss") == config.health


def test_health_values_load_back_as_the_module_holds_them() -> None:
    """Nix 2.8's builtins.toJSON prints a float with 6 significant digits: a float the
    file could not hold exactly is refused, never rendered as another number."""
    floats = [0.1, 0.25, 2.75, 1234.5, 3599.99, 1e-07, 0.123456789, 1234.5678901]
    configs = [hivegen_config({"health": {"settle": x, "port_timeout": x}}) for x in floats]
    accepted = nix_eval(configs, accepts=True)
    for x, ok, config in zip(floats, accepted, configs, strict=True):
        if ok:
            health = loaded(summary(config)["hiveToml"]).health
            assert (health.settle, health.port_timeout) == (x, x)
        else:
            # The documented gap: only a float of more than 6 significant digits.
            assert len(repr(x).replace(".", "").strip("0")) > 6, x
            assert _hivegen_accepts({"health": {"settle": x}})
    assert accepted[:6] == [True] * 6
    # The address is written as given and normalised by hivegen's loader.
    text = summary(hivegen_config({"health": {"address": "FE80:0::1%eth0"}}))["hiveToml"]
    assert tomllib.loads(text)["health"]["address"] == "FE80:0::1%eth0"
    assert loaded(text).health.address == "fe80::1%eth0"


def test_the_address_scope_gap_leaves_the_module_stricter() -> None:
    """Python's ipaddress takes any scope ID without % or /; the module also refuses an
    ASCII space or control character in one (no interface name has one)."""
    odd = ["fe80::1%a b", "fe80::1% ", "fe80::1%a\tb"]
    configs = [hivegen_config({"health": {"address": a}}) for a in odd]
    assert nix_eval(configs, accepts=True) == [False] * len(odd)
    assert all(_hivegen_accepts({"health": {"address": a}}) for a in odd)


def test_an_unknown_key_fails_evaluation_as_it_fails_hivegen() -> None:
    with pytest.raises(NixEvalError, match=r"services\.hivegen\.settings\.hive\.bogus' does not"):
        summary(hivegen_config({"hive": {"bogus": 1}}))
    with pytest.raises(ConfigError, match=r"\[hive\] bogus: unknown key"):
        loaded("[hive]\nbogus = 1\n")
    with pytest.raises(NixEvalError, match=r"services\.hivegen\.settings\.cache' does not"):
        summary(hivegen_config({"cache": {}}))


# (table, key, value): each is accepted by both hivegen's loader and the module, or by
# neither. Good values first in each group, then bad ones.
SAMPLES: list[tuple[str, str, Any]] = [
    ("hive", "state_root", "/var/lib/x"),
    ("hive", "state_root", "/a_b/c-d/e.f+g"),
    ("hive", "state_root", "relative/path"),
    ("hive", "state_root", "/with space"),
    ("hive", "state_root", "/a:b"),
    ("hive", "state_root", "/a/../b"),
    ("hive", "state_root", "/a/./b"),
    ("hive", "state_root", 5),
    ("hive", "manager", "hm1nd"),
    ("hive", "manager", "a"),
    ("hive", "manager", "abcdefghijk"),
    ("hive", "manager", "abcdefghijkl"),
    ("hive", "manager", "Boss"),
    ("hive", "manager", "h-boss"),
    ("hive", "manager", "1boss"),
    ("hive", "manager_port", 1),
    ("hive", "manager_port", 65535),
    ("hive", "manager_port", 0),
    ("hive", "manager_port", 65536),
    ("hive", "manager_port", "8000"),
    ("hive", "manager_port", True),
    ("hive", "dashboard_port", 7000),
    ("hive", "dashboard_port", -1),
    ("hive", "hyperhive_flake", "git+file:///srv/hyperhive"),
    ("hive", "hyperhive_flake", "-bad"),
    ("hive", "hyperhive_flake", "git+https://x y"),
    ("hive", "hyperhive_flake", ""),
    ("hive", "hyperhive_flake", "a\x01b"),
    ("hive", "operator_pronouns", "they/them"),
    ("hive", "operator_pronouns", "line\nbreak\tand\rreturn"),
    ("hive", "operator_pronouns", ""),
    ("hive", "operator_pronouns", "bell\x07"),
    ("hive", "operator_pronouns", "del\x7f"),
    ("hive", "committer_name", "c0re"),
    ("hive", "committer_name", "A B"),
    ("hive", "committer_name", " "),
    ("hive", "committer_name", ""),
    ("hive", "committer_name", "a <b>"),
    ("hive", "committer_email", "a@b"),
    ("hive", "committer_email", "a b@c"),
    ("hive", "committer_email", "<a@b>"),
    ("hive", "committer_email", ""),
    ("host", "runtime", "native"),
    ("host", "runtime", "simulated"),
    ("host", "runtime", "docker"),
    ("host", "runtime_root", "/run/x"),
    ("host", "runtime_root", "run/x"),
    ("limits", "memory_max", "512M"),
    ("limits", "memory_max", "2G"),
    ("limits", "memory_max", "1073741824"),
    ("limits", "memory_max", "100%"),
    ("limits", "memory_max", "infinity"),
    ("limits", "memory_max", "101%"),
    ("limits", "memory_max", "0"),
    ("limits", "memory_max", "1.5G"),
    ("limits", "memory_max", "2g"),
    ("limits", "memory_max", 2),
    ("limits", "cpu_quota", "50%"),
    ("limits", "cpu_quota", "200%"),
    ("limits", "cpu_quota", "0%"),
    ("limits", "cpu_quota", "50"),
    ("agents", "alice.memory_max", "4G"),
    ("agents", "hm1nd.cpu_quota", "10%"),
    ("agents", "alice.memory_max", "lots"),
    ("agents", "Alice.memory_max", "4G"),
    ("agents", "abcdefghij.memory_max", "4G"),
    ("agents", "alice.swap", "4G"),
    ("health", "settle", 0),
    ("health", "settle", 3),
    ("health", "settle", 0.5),
    ("health", "settle", 2.75),
    ("health", "settle", 1e-07),
    ("health", "settle", 3600),
    ("health", "settle", 3600.0),
    ("health", "settle", -1),
    ("health", "settle", -0.5),
    ("health", "settle", 3600.5),
    ("health", "settle", 3601),
    ("health", "settle", 1e9),
    ("health", "settle", True),
    ("health", "settle", False),
    ("health", "settle", "3"),
    ("health", "settle", [3]),
    ("health", "port_timeout", 0),
    ("health", "port_timeout", 60),
    ("health", "port_timeout", 0.25),
    ("health", "port_timeout", -1),
    ("health", "port_timeout", 3601),
    ("health", "port_timeout", True),
    ("health", "port_timeout", "60"),
    ("health", "address", "127.0.0.1"),
    ("health", "address", "::1"),
    ("health", "address", "0.10.100.0"),
    ("health", "address", "255.255.255.255"),
    ("health", "address", "::"),
    ("health", "address", "2001:DB8::1"),
    ("health", "address", "0001:2:3:4:5:6:7:8"),
    ("health", "address", "1:2:3:4:5:6:7::"),
    ("health", "address", "::2:3:4:5:6:7:8"),
    ("health", "address", "::ffff:192.0.2.1"),
    ("health", "address", "1:2:3:4:5:6:1.2.3.4"),
    ("health", "address", "fe80::1%eth0"),
    ("health", "address", "fe80::1%2"),
    ("health", "address", "not-an-ip"),
    ("health", "address", "1.2.3"),
    ("health", "address", ""),
    ("health", "address", "localhost"),
    ("health", "address", "256.0.0.1"),
    ("health", "address", "01.2.3.4"),
    ("health", "address", "1.2.3.4.5"),
    ("health", "address", "127.0.0.1/8"),
    ("health", "address", " 127.0.0.1"),
    ("health", "address", "127.0.0.1%eth0"),
    ("health", "address", "1:2:3:4:5:6:7:8:9"),
    ("health", "address", "1:2:3:4:5:6:7"),
    ("health", "address", "1::2::3"),
    ("health", "address", ":::"),
    ("health", "address", ":1:2:3:4:5:6:7"),
    ("health", "address", "12345::"),
    ("health", "address", "1:2:3:4:5:6:7:1.2.3.4"),
    ("health", "address", "::1.2.3"),
    ("health", "address", "1.2.3.4::"),
    ("health", "address", "fe80::1%"),
    ("health", "address", "fe80::1%a%b"),
    ("health", "address", "fe80::1%a/b"),
    ("health", "address", 127),
    ("health", "address", True),
    ("health", "timeout", 5),
    ("agents", "alice.health_settle", 10),
    ("agents", "alice.health_port_timeout", 0.5),
    ("agents", "hm1nd.health_port_timeout", 0),
    ("agents", "alice.health_settle", -1),
    ("agents", "alice.health_port_timeout", 3601),
    ("agents", "alice.health_settle", True),
    ("agents", "alice.health_port_timeout", "60"),
    ("agents", "alice.health_address", "::1"),
]


def _settings(table: str, key: str, value: Any) -> dict[str, Any]:
    if table == "agents":
        agent, field = key.split(".")
        return {"agents": {agent: {field: value}}}
    return {table: {key: value}}


def _toml(settings: dict[str, Any]) -> str:
    lines = []
    for table, entries in settings.items():
        if table == "agents":
            for agent, fields in entries.items():
                lines.append(f"[agents.{json.dumps(agent)}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in fields.items()]
        else:
            lines.append(f"[{table}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in entries.items()]
    return "\n".join(lines) + "\n"


def _hivegen_accepts(settings: dict[str, Any]) -> bool:
    try:
        loaded(_toml(settings))
    except ConfigError:
        return False
    return True


def test_the_module_and_hivegen_accept_the_same_values() -> None:
    configs = [hivegen_config(_settings(*sample)) for sample in SAMPLES]
    module_accepts = nix_eval(configs, accepts=True)
    disagree = [
        (sample, module, hivegen)
        for sample, module, config in zip(SAMPLES, module_accepts, configs, strict=True)
        if module != (hivegen := _hivegen_accepts(config["services"]["hivegen"]["settings"]))
    ]
    assert disagree == [], "module vs hivegen (sample, module accepts, hivegen accepts)"
    # Both kinds are in the table: the check can fail either way.
    assert True in module_accepts
    assert False in module_accepts


def test_an_invalid_agent_name_is_a_clear_assertion() -> None:
    result = summary(hivegen_config({"agents": {"Alice": {"memory_max": "4G"}}}))
    assert result["failedAssertions"] == [
        'services.hivegen.settings.agents."Alice": invalid agent name (a lowercase letter, '
        "then up to 8 of a-z 0-9 -; or the manager's name)"
    ]


def test_the_containers_assertion() -> None:
    off = summary(hivegen_config({}, boot={"enableContainers": False}))
    assert off["failedAssertions"] == [
        "services.hivegen needs boot.enableContainers = true: hivegen drives "
        "nixos-container and container@.service."
    ]
    assert summary(hivegen_config({}))["failedAssertions"] == []


def test_the_reconcile_unit() -> None:
    unit = summary(hivegen_config({}))["reconcile"]
    assert unit["wantedBy"] == ["multi-user.target"]
    assert unit["wants"] == ["network-online.target"]
    assert {"network-online.target", "nix-daemon.service", "nix-daemon.socket"} <= set(
        unit["after"]
    )
    assert "systemd-tmpfiles-setup.service" in unit["after"]
    assert "before" not in unit  # a login never waits for the containers
    assert unit["serviceConfig"] == {
        "Type": "oneshot",
        "RemainAfterExit": True,
        "ExecStart": f"{PACKAGE_OUT}/bin/hivegen reconcile",
        "TimeoutStartSec": "15min",
    }
    # The system's nix, nixos-container and systemctl come first on its PATH.
    assert unit["path"] == ["/run/current-system/sw"]
    custom = summary(hivegen_config({}, service={"reconcile": {"timeout": "3min"}}))
    assert custom["reconcile"]["serviceConfig"]["TimeoutStartSec"] == "3min"
    off = summary(hivegen_config({}, service={"reconcile": {"enable": False}}))
    assert off["reconcile"] is None


def test_the_serve_unit() -> None:
    assert summary(hivegen_config({}))["serve"] is None  # off unless asked for
    unit = summary(hivegen_config({}, service={"serve": {"enable": True}}))["serve"]
    assert unit["wantedBy"] == ["multi-user.target"]
    assert {"hivegen-reconcile.service", "nix-daemon.socket"} <= set(unit["after"])
    assert "systemd-tmpfiles-setup.service" in unit["after"]
    assert unit["path"] == ["/run/current-system/sw"]
    # hivegen sends READY=1 itself; /run/hivegen (the dashboard's socket) is root's alone.
    assert unit["serviceConfig"] == {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": f"{PACKAGE_OUT}/bin/hivegen serve --socket /run/hivegen/dashboard.sock",
        "Restart": "on-failure",
        "RestartSec": "2s",
        "RuntimeDirectory": "hivegen",
        "RuntimeDirectoryMode": "0700",
        "LimitNOFILE": 65536,
    }
    tcp = {"enable": True, "listen": "127.0.0.1:7000", "allowedHosts": ["hive.example"]}
    unit = summary(hivegen_config({}, service={"serve": tcp}))["serve"]
    assert unit["serviceConfig"]["ExecStart"] == (
        f"{PACKAGE_OUT}/bin/hivegen serve --socket /run/hivegen/dashboard.sock "
        "--listen 127.0.0.1:7000 --allow-host hive.example"
    )
    # Shell-quoted: a value is one argument.
    odd = {"enable": True, "allowedHosts": ["a b", "c"]}
    unit = summary(hivegen_config({}, service={"serve": odd}))["serve"]
    assert unit["serviceConfig"]["ExecStart"].endswith(
        "dashboard.sock --allow-host 'a b' --allow-host c"
    )


def test_state_dirs_package_and_disabled() -> None:
    result = summary(hivegen_config({"hive": {"state_root": "/srv/hive"}}))
    expected = {f"d /srv/hive/{rel} {mode:04o} root root -" for rel, mode in TOP_DIRS}
    expected |= {"d /srv/hive 0755 root root -", "d /run/hyperhive 0755 root root -"}
    assert set(result["tmpfiles"]) == expected
    assert "d /srv/hive/credentials 0700 root root -" in result["tmpfiles"]
    assert result["packages"] == ["hivegen-0.1.0"]
    service = {"settings": {"hive": {"manager": "boss"}}, "serve": {"enable": True}}
    disabled = summary({"services": {"hivegen": service}})
    assert disabled == {
        "hiveToml": None,
        "tmpfiles": [],
        "packages": [],
        "reconcile": None,
        "serve": None,
        "failedAssertions": [],
    }


def test_the_flakes_module_brings_its_own_package(tmp_path: Path) -> None:
    """nixosModules.default in flake.nix: the module, with this flake's package as the
    default of services.hivegen.package (the stub nixpkgs builds nothing)."""
    from tests.conftest import nix_system
    from tests.test_project_flake import evaluate_flake, stub_flake

    repo, stub = stub_flake(tmp_path)
    system = nix_system()
    config = {"services": {"hivegen": {"enable": True}}}
    configs = json.dumps(json.dumps([config]))
    module = f'{{ imports = [ m ]; _module.args.pkgs.stdenv.hostPlatform.system = "{system}"; }}'
    apply = (
        f"m: import {EVAL} {{ libPath = {NIXPKGS_LIB}; configs = {configs}; module = {module}; }}"
    )
    [result] = evaluate_flake(repo, stub, "nixosModules.default", apply, impure=True)
    assert result["packages"] == ["hivegen-0.1.0"]
    exec_start = result["reconcile"]["serviceConfig"]["ExecStart"]
    assert exec_start.startswith("/nix/store/")
    assert exec_start.endswith("-hivegen-0.1.0/bin/hivegen reconcile")
    assert tomllib.loads(result["hiveToml"])["hive"]["manager"] == "hm1nd"
