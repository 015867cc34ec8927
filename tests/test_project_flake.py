from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


def test_project_flake_parses() -> None:
    # nixpkgs cannot be fetched here, so the flake is checked as far as real Nix can
    # without it: it parses, and it declares the outputs `nix run` and `nix develop` use.
    out = subprocess.run(
        ["nix-instantiate", "--parse", str(ROOT / "flake.nix")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    text = (ROOT / "flake.nix").read_text()
    for needle in (
        "packages = forAllSystems",
        "apps = forAllSystems",
        "devShells",
        "buildPythonApplication",
        "makeBinPath [ pkgs.git pkgs.nix ]",
    ):
        assert needle in text


def test_flake_version_matches_package() -> None:
    from hivegen import __version__

    assert f'version = "{__version__}";' in (ROOT / "flake.nix").read_text()
    assert f'version = "{__version__}"' in (ROOT / "pyproject.toml").read_text()


def pyproject_dependencies() -> set[str]:
    """pyproject.toml's [project] dependencies, by name (as nixpkgs names them)."""
    import tomllib

    from packaging.requirements import Requirement

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {Requirement(r).name.lower() for r in data["project"]["dependencies"]}


def stub_flake(tmp_path: Path) -> tuple[Path, Path]:
    """This project's flake (as committed files) and the stub nixpkgs, as git repos."""
    import shutil

    from tests.conftest import commit_dir

    repo = tmp_path / "hivegen"
    repo.mkdir()
    for name in ("flake.nix", "pyproject.toml", "README.md", "nix/module.nix"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    commit_dir(repo)
    stub = tmp_path / "nixpkgs"
    shutil.copytree(ROOT / "tests/fixtures/nixpkgs-stub", stub)
    commit_dir(stub)
    return repo, stub


def evaluate_flake(repo: Path, stub: Path, attr: str, apply: str, *, impure: bool = False) -> Any:
    import json

    out = subprocess.run(
        [
            "nix",
            "eval",
            "--json",
            *(["--impure"] if impure else []),
            f"git+file://{repo}#{attr}",
            "--override-input",
            "nixpkgs",
            f"git+file://{stub}",
            "--no-write-lock-file",
            "--apply",
            apply,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_project_flake_outputs_evaluate_against_a_stub_nixpkgs(tmp_path: Path) -> None:
    """`nix run` and `nix develop` need these outputs: evaluate them for real, with a
    stand-in nixpkgs (tests/fixtures/nixpkgs-stub) given through --override-input."""
    import json

    from tests.conftest import nix_system

    repo, stub = stub_flake(tmp_path)
    system = nix_system()

    def evaluate(attr: str, apply: str) -> Any:
        return evaluate_flake(repo, stub, attr, apply)

    result = {
        "app": evaluate(f"apps.{system}.default", "a: a"),
        "pkg": evaluate(
            f"packages.{system}.default", "p: { inherit (p) name wrapperArgs deps mainProgram; }"
        ),
        "shell": evaluate(f"devShells.{system}.default", "s: { inherit (s) deps pythonDeps; }"),
    }
    assert result["app"]["type"] == "app"
    assert result["app"]["program"].endswith("-hivegen-0.1.0/bin/hivegen")
    assert result["pkg"]["name"] == "hivegen-0.1.0"
    assert result["pkg"]["mainProgram"] == "hivegen"
    # build-system as pyproject.toml's (the build hook runs without isolation), and the
    # runtime dependencies as its [project] dependencies.
    assert set(result["pkg"]["deps"]) == {"aiohttp", "jinja2", "pygments", "setuptools", "wheel"}
    assert set(result["pkg"]["deps"]) - {"setuptools", "wheel"} == pyproject_dependencies()
    wrapper = json.loads(result["pkg"]["wrapperArgs"])
    # After the host's PATH: a NixOS host's own nix builds the containers.
    assert wrapper[:3] == ["--suffix", "PATH", ":"]
    assert "-git/bin" in wrapper[3]
    assert "-nix/bin" in wrapper[3]
    assert {"python3-env", "ruff", "git", "nix"} <= set(result["shell"]["deps"])
    # `nix develop` can run `hivegen serve` and the suite.
    assert pyproject_dependencies() | {"pytest", "hypothesis", "mypy"} <= set(
        result["shell"]["pythonDeps"]
    )


def test_flake_checks_run_the_offline_tests(tmp_path: Path) -> None:
    """`nix flake check` runs the tests that need no git, nix or network: the list in
    flake.nix is evaluated, and each of those files passes here with neither git nor nix
    on PATH (as in the build sandbox)."""
    import re
    import sys

    from tests.conftest import nix_system

    repo, stub = stub_flake(tmp_path)
    checks = evaluate_flake(
        repo,
        stub,
        f"checks.{nix_system()}",
        "c: { names = builtins.attrNames c; inherit (c.unit) script deps pythonDeps; }",
    )
    assert checks["names"] == ["package", "unit"]
    assert checks["deps"] == ["python3-env"]
    assert pyproject_dependencies() | {"pytest", "hypothesis"} <= set(checks["pythonDeps"])
    [command] = [line for line in checks["script"].splitlines() if "-m pytest" in line]
    files = re.findall(r"tests/test_\w+\.py", command)
    assert len(files) >= 5
    empty_path = tmp_path / "no-tools"
    empty_path.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT,
        env={"PATH": str(empty_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", result.stdout)
    assert "skipped" not in result.stdout
