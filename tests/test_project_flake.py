from __future__ import annotations

import subprocess
from pathlib import Path

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
