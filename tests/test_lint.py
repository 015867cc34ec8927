"""House rules that the toolchain checks: ruff and mypy strict, clean on every commit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_clean() -> None:
    out = tool("ruff", "check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_formatted() -> None:
    out = tool("ruff", "format", "--check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_clean() -> None:
    out = tool("mypy")
    assert out.returncode == 0, out.stdout + out.stderr


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    import re

    command = ".venv/bin/python -m pytest -n 2 --dist loadgroup"
    # CI=true: the host-in-a-box and browser tests fail, not skip, without their tools.
    assert f".venv/bin/pip install -e '.[dev]' && CI=true {command}" in readme
    assert ".venv/bin/pip install -q -e '.[dev]'" in ci
    assert command in ci
    assert "export CI=true" in ci
    # The README's command installs what CI installs.
    found = re.search(r"apt-get install -y -qq ([^>]*)>", ci)
    assert found is not None
    line = next(line for line in readme.splitlines() if command in line)
    installed = line.split("apt-get install -y ", 1)[1].split(" && ", 1)[0].split()
    assert sorted(installed) == sorted(found.group(1).split())


def test_readme_points_only_inside_the_repository() -> None:
    """A newcomer has the repository, nothing beside it: every relative link and path
    the README names must be in it."""
    import re

    readme = (ROOT / "README.md").read_text()
    assert "../" not in readme
    assert (ROOT / "LICENSE").is_file()
    for target in re.findall(r"\]\((?!https?:|#)([^)]+)\)", readme):
        assert (ROOT / target).exists(), target
    for path in re.findall(r"`((?:tests|hivegen|nix|benchmarks|\.ci)/[^`*<> ]+)`", readme):
        assert (ROOT / path).exists(), path


def test_no_subprocess_outside_the_gateway() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "hivegen").rglob("*.py")
        if "subprocess" in path.read_text()
        and path.name != "process.py"
        and "simhost" not in path.parts
    ]
    assert offenders == []


def test_library_never_prints_or_exits() -> None:
    offenders = []
    cli = ROOT / "hivegen" / "cli"  # the command line prints; the library below it never
    for path in (ROOT / "hivegen").rglob("*.py"):
        if cli in path.parents or path.name == "__main__.py" or "simhost" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith(("print(", "sys.exit(")) or "shell=True" in stripped:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {stripped}")
    assert offenders == []
