"""The wheel builds as nixpkgs builds it: `python -m build --no-isolation --wheel` (the
pypa build hook) in an environment holding only `build` and what pyproject.toml's
[build-system] lists, so a build dependency missing from that list fails here, without
nixpkgs. The flake's build-system is checked against the same list in
test_project_flake.py."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parent.parent
# What the sdist needs (pyproject's readme and package dirs): a fixed list, so that other
# tests writing caches into the checkout meanwhile cannot race the copy.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "hivegen")


def build_system_requires() -> list[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requires: list[str] = data["build-system"]["requires"]
    return requires


def closure(requirements: list[str]) -> set[str]:
    """Distribution names needed for `requirements` here (markers evaluated, no extras)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = importlib.metadata.distribution(requirement.name).metadata["Name"]
        if name in seen:
            continue
        seen.add(name)
        todo += [Requirement(r) for r in importlib.metadata.requires(name) or []]
    return seen


def venv_with(tmp_path: Path, dists: set[str]) -> Path:
    """A venv without pip holding exactly `dists`, copied from this environment."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    for name in dists:
        dist = importlib.metadata.distribution(name)
        for file in dist.files or []:
            if file.parts[0] == "..":
                continue  # console scripts: `python -m build` needs none
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                target = site / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    return venv / "bin" / "python"


def build_wheel(python: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    return subprocess.run(
        [
            str(python),
            "-m",
            "build",
            "--no-isolation",
            "--wheel",
            "--outdir",
            str(tmp_path / "out"),
            str(src),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_wheel_builds_with_only_the_declared_build_system(tmp_path: Path) -> None:
    requires = build_system_requires()
    python = venv_with(tmp_path, closure([*requires, "build"]))
    # Nothing else leaked in: hivegen's own runtime dependencies are not there.
    probe = subprocess.run(
        [str(python), "-c", "import jinja2"], capture_output=True, text=True, check=False
    )
    assert probe.returncode != 0
    result = build_wheel(python, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp_path / "out").glob("hivegen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "hivegen/templates/meta-flake.nix.j2",
        "hivegen/demo/hyperhive/flake.nix",
        "hivegen/py.typed",
        "hivegen/simhost/nixos_container.py",
    ):
        assert needed in names
    # Every --json document's schema (jsondoc.schema reads them from the package).
    from hivegen.jsondoc import Kind

    assert {f"hivegen/schemas/{kind}.json" for kind in Kind} <= names
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "hivegen = hivegen.cli:main" in text


def test_a_missing_build_dependency_fails_as_in_nixpkgs(tmp_path: Path) -> None:
    """The check can fail: without `wheel`, which [build-system] requires, the build
    stops as nixpkgs' hook stopped before the flake listed it."""
    assert "wheel" in build_system_requires()
    dists = closure([*build_system_requires(), "build"]) - {"wheel"}
    result = build_wheel(venv_with(tmp_path, dists), tmp_path)
    assert result.returncode != 0
    # build < 1.3 says "Missing dependencies: wheel"; later ones list it as not installed.
    output = result.stdout + result.stderr
    assert (
        "Missing dependencies" in output
        or "\twheel\n\t\twanted: any\n\t\tfound: not installed" in output
    ), output[-600:]
