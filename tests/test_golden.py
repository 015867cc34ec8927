"""Golden cases: tests/golden/<case>/{hive.toml,agents} → tests/golden/<case>/expected/.

`pytest --update-goldens` rewrites `expected/`; read the diff before committing it.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

from hivegen.config import Config, parse_config
from hivegen.nspawn import extra_nspawn_flags, rewrite_conf
from hivegen.render import (
    MetaModel,
    dropin_relpath,
    render_agent_repo,
    render_limits_dropin,
    render_meta,
)
from tests.conftest import nix_parse

pytestmark = pytest.mark.nix  # run on Nix 2.8 here and on 2.26 in tests/nixroot

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "hive.toml").is_file())


def load_case(case: Path) -> tuple[Config, list[str]]:
    config = parse_config((case / "hive.toml").read_bytes(), case / "hive.toml")
    agents = (case / "agents").read_text().split()
    return config, agents


def created_conf(config: Config, index: int) -> str:
    """The conf `nixos-container create --flake <S>/meta#<n>` writes (nixos-container.pl),
    with an operator's own line at the end that a rewrite must keep."""
    return (
        "PRIVATE_NETWORK=1\n"
        f"HOST_ADDRESS=10.233.{index}.1\n"
        f"LOCAL_ADDRESS=10.233.{index}.2\n"
        "HOST_BRIDGE=\n"
        "HOST_PORT=\n"
        "AUTO_START=0\n"
        f"FLAKE={config.layout.meta}\n"
        "EXTRA_OPERATOR_SETTING=kept\n"
    )


def render_case(config: Config, agents: list[str]) -> dict[str, str]:
    """Every file hivegen renders for this hive, keyed by its path under the state root
    (`systemd/` and `nixos-containers/` stand for the host's drop-in and conf dirs)."""
    files: dict[str, str] = {}
    for path, text in render_meta(MetaModel.from_config(config, agents)).items():
        files[f"meta/{path}"] = text
    for index, name in enumerate(agents, start=1):
        spec = config.agent(name)
        original = created_conf(config, index)
        files[f"nixos-containers/{spec.container}.conf.created"] = original
        rewritten = rewrite_conf(original, extra_nspawn_flags(config, spec))
        # A second rewrite changes no byte.
        assert rewrite_conf(rewritten, extra_nspawn_flags(config, spec)) == rewritten
        files[f"nixos-containers/{spec.container}.conf"] = rewritten
        for path, text in render_agent_repo(name).items():
            files[f"agents/{name}/config/{path}"] = text
        dropin = render_limits_dropin(config.limits_for(name))
        files[f"systemd/{dropin_relpath(spec.container)}"] = dropin
    return dict(sorted(files.items()))


def read_tree(root: Path) -> dict[str, str]:
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def write_tree(root: Path, files: dict[str, str]) -> None:
    if root.exists():
        shutil.rmtree(root)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def golden_diff(expected: dict[str, str], actual: dict[str, str]) -> str:
    chunks: list[str] = []
    for rel in sorted(expected.keys() | actual.keys()):
        old, new = expected.get(rel), actual.get(rel)
        if old == new:
            continue
        chunks.extend(
            difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                (new or "").splitlines(keepends=True),
                fromfile=f"expected/{rel}" if old is not None else "/dev/null",
                tofile=f"actual/{rel}" if new is not None else "/dev/null",
            )
        )
    return "".join(chunks)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, update_goldens: bool) -> None:
    case_dir = GOLDEN / case
    config, agents = load_case(case_dir)
    actual = render_case(config, agents)
    # assert_stable: rendering is a pure function of the model.
    assert render_case(*load_case(case_dir)) == actual, "rendering is not byte-stable"
    expected_dir = case_dir / "expected"
    if update_goldens:
        write_tree(expected_dir, actual)
    diff = golden_diff(read_tree(expected_dir), actual)
    assert not diff, f"golden {case} differs (pytest --update-goldens rewrites it):\n{diff}"
    nix_parse(sorted(expected_dir.rglob("*.nix")))


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 3
