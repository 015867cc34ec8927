"""The rendered meta flake against real Nix and the stub hyperhive flake."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from hivegen.config import Config, parse_config
from hivegen.render import MetaModel, render_agent_repo, render_meta
from tests.conftest import commit_dir, git

pytestmark = pytest.mark.nix  # run on Nix 2.8 here and on 2.26 in tests/nixroot


def make_hive(tmp_path: Path, hyperhive_flake: str, agents: list[str]) -> tuple[Config, Path]:
    toml = tmp_path / "hive.toml"
    toml.write_text(
        f'[hive]\nstate_root = "{tmp_path}"\nhyperhive_flake = "{hyperhive_flake}"\n'
        'operator_pronouns = "she/her"\n'
    )
    config = parse_config(toml.read_bytes(), toml)
    for name in agents:
        repo = tmp_path / "applied" / name
        repo.mkdir(parents=True)
        for rel, text in render_agent_repo(name).items():
            (repo / rel).write_text(text)
        commit_dir(repo)
    meta = tmp_path / "meta"
    meta.mkdir()
    for rel, text in render_meta(MetaModel.from_config(config, agents)).items():
        (meta / rel).write_text(text)
    commit_dir(meta)
    nix("flake", "lock", str(meta))
    return config, meta


def nix(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["nix", *args], capture_output=True, text=True, check=False)
    if check:
        assert out.returncode == 0, f"nix {' '.join(args)} failed:\n{out.stderr}"
    return out


def env_of(meta: Path, agent: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    attr = f"{meta}#nixosConfigurations.{agent}.config.environment.variables"
    return nix("eval", "--json", attr, check=check)


def test_meta_flake_locks_and_carries_each_agents_identity(
    tmp_path: Path, hyperhive_flake: str
) -> None:
    _, meta = make_hive(tmp_path, hyperhive_flake, ["alice", "hm1nd"])
    lock = json.loads((meta / "flake.lock").read_text())
    assert set(lock["nodes"]["root"]["inputs"]) == {"hyperhive", "agent-alice", "agent-hm1nd"}

    alice = json.loads(env_of(meta, "alice").stdout)
    assert alice["HIVE_PORT"] == "8879"
    assert alice["HIVE_LABEL"] == "alice"
    assert alice["HIVE_DASHBOARD_PORT"] == "7000"
    assert alice["HIVE_OPERATOR_PRONOUNS"] == "she/her"
    assert alice["GIT_AUTHOR_NAME"] == "alice"
    assert alice["GIT_COMMITTER_NAME"] == "c0re"
    assert alice["HYPERHIVE_ROLE"] == "agent-base"

    manager = json.loads(env_of(meta, "hm1nd").stdout)
    assert manager["HIVE_PORT"] == "8000"
    assert manager["HYPERHIVE_ROLE"] == "manager"

    built = nix(
        "build",
        "--json",
        "--no-link",
        f"{meta}#nixosConfigurations.alice.config.system.build.toplevel",
    )
    out_path = Path(json.loads(built.stdout)[0]["outputs"]["out"])
    assert json.loads((out_path / "variables.json").read_text())["HIVE_LABEL"] == "alice"


def test_agent_module_sees_flake_inputs_argument(tmp_path: Path, hyperhive_flake: str) -> None:
    repo = tmp_path / "applied" / "alice"
    _, meta = make_hive(tmp_path, hyperhive_flake, ["alice"])
    (repo / "agent.nix").write_text(
        "{ config, flakeInputs, ... }:\n"
        "{ environment.variables.INPUTS = builtins.toJSON (builtins.attrNames flakeInputs);"
        "  environment.variables.ECHO = config.environment.variables.HIVE_LABEL; }\n"
    )
    commit_dir(repo, "use flakeInputs")
    nix("flake", "lock", "--update-input", "agent-alice", str(meta))
    variables = json.loads(env_of(meta, "alice").stdout)
    assert variables["INPUTS"] == "[]"
    assert variables["ECHO"] == "alice"


@pytest.mark.parametrize(
    ("agent_nix", "error"),
    [
        ("{ config, ... }: { environment.variables = { X = ; }; }\n", "syntax error"),
        ('{ ... }: throw "alice is broken"\n', "alice is broken"),
        ('{ ... }: { environment.variables.X = throw "lazy boom"; }\n', "lazy boom"),
        ('{ ... }: { environment.variables.HIVE_PORT = "1"; }\n', "conflicting definition"),
    ],
)
def test_broken_agent_module_fails_evaluation(
    tmp_path: Path, hyperhive_flake: str, agent_nix: str, error: str
) -> None:
    repo = tmp_path / "applied" / "bob"
    _, meta = make_hive(tmp_path, hyperhive_flake, ["alice", "bob"])
    (repo / "agent.nix").write_text(agent_nix)
    commit_dir(repo, "break it")
    nix("flake", "lock", "--update-input", "agent-bob", str(meta))
    git(meta, "add", "flake.lock")

    broken = env_of(meta, "bob", check=False)
    assert broken.returncode != 0
    assert error in broken.stderr
    build = nix(
        "build",
        "--no-link",
        f"{meta}#nixosConfigurations.bob.config.system.build.toplevel",
        check=False,
    )
    assert build.returncode != 0
    assert error in build.stderr
    # One agent's broken module does not touch another's evaluation.
    assert json.loads(env_of(meta, "alice").stdout)["HIVE_LABEL"] == "alice"


def test_build_systems_realises_every_system_on_this_nix(
    tmp_path: Path, hyperhive_flake: str
) -> None:
    """On every Nix the suite runs (2.8 on the host, 2.26 in tests/nixroot): the systems
    themselves are built and valid in the store, not only their derivations (2.26 reads
    a bare `….drv` argument of `nix build` as the derivation file)."""
    from hivegen import nix as hivegen_nix

    _, meta = make_hive(tmp_path, hyperhive_flake, ["alice", "bob"])
    built = hivegen_nix.build_systems(meta, ["alice", "bob"])
    assert set(built) == {"alice", "bob"}
    assert built["alice"] != built["bob"]
    for name, out in built.items():
        valid = subprocess.run(
            ["nix-store", "--check-validity", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert valid.returncode == 0, valid.stderr
        assert json.loads((out / "variables.json").read_text())["HIVE_LABEL"] == name


def test_a_build_that_realises_nothing_is_an_error(
    tmp_path: Path, hyperhive_flake: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`nix build` exiting 0 is not taken as the systems being there: had a Nix read the
    argument as something else, the deploy would go on to a path that does not exist."""
    from hivegen import nix as hivegen_nix
    from hivegen import process
    from hivegen.errors import HivegenError

    # A name no other run used: its system is not in the store from before.
    name = f"a{uuid.uuid4().hex[:8]}"
    _, meta = make_hive(tmp_path, hyperhive_flake, [name])
    run = process.run

    def build_nothing(argv: list[str], opts: process.RunOpts | None = None) -> process.CmdOut:
        return run(["true"]) if "build" in argv else run(argv, opts)

    monkeypatch.setattr(process, "run", build_nothing)
    with pytest.raises(HivegenError, match="nix build exited 0 but did not build"):
        hivegen_nix.build_systems(meta, [name])


@pytest.mark.parametrize(
    ("version", "installable"),
    [
        ((2, 8), "/nix/store/x-s.drv"),
        ((2, 12, 1), "/nix/store/x-s.drv"),
        ((2, 13), "/nix/store/x-s.drv^out"),
        ((2, 26, 3), "/nix/store/x-s.drv^out"),
    ],
)
def test_a_derivations_output_is_named_as_this_nix_spells_it(
    monkeypatch: pytest.MonkeyPatch, version: tuple[int, ...], installable: str
) -> None:
    from hivegen import nix as hivegen_nix

    monkeypatch.setattr(hivegen_nix, "version", lambda: hivegen_nix.NixVersion(*version))
    assert hivegen_nix.drv_output("/nix/store/x-s.drv") == installable
