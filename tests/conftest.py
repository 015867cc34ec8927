"""Shared test set-up: real Nix made to work offline, golden-file options, helpers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        help="rewrite tests/golden/*/expected from the current output",
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup`, each test marked xdist_group must carry its group in its
    id, which is how pytest-xdist keeps a group on one worker: if that broke (a pytest
    xdist does not match), tests that must not overlap would run side by side."""
    if not getattr(config.option, "loadgroup", False):
        return  # not a loadgroup worker
    ungrouped = [
        item.nodeid
        for item in items
        if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid
    ]
    if ungrouped:
        raise pytest.UsageError(
            f"--dist loadgroup does not group {ungrouped[0]} (and {len(ungrouped) - 1} more): "
            f"pytest {pytest.__version__} and this pytest-xdist do not work together"
        )


@pytest.fixture(autouse=True)
def _hivegen_logger_restored() -> Iterator[None]:
    """Put the "hivegen" logger back after each test. An in-process `main()` sets it up
    as the CLI does (its own handler on that test's captured stderr, not propagating),
    and a later test on the worker would log into a closed stream, out of caplog's
    sight."""
    import logging

    logger = logging.getLogger("hivegen")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture(autouse=True)
def _json_documents_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `--json` document a test makes in-process is checked against the schema it
    names (tests/jsonschemas.py): whichever test runs a verb, its output is proven to
    be what hivegen/schemas documents."""
    from hivegen import jsondoc
    from tests import jsonschemas

    make = jsondoc.document

    def checked(kind: jsondoc.Kind, body: Mapping[str, object]) -> dict[str, object]:
        document = make(kind, body)
        assert jsonschemas.validate(document) is kind
        return document

    monkeypatch.setattr(jsondoc, "document", checked)


def pytest_configure(config: pytest.Config) -> None:
    # Nix 2.8 without a daemon, offline: no global registry, no binary caches (each would
    # cost minutes of network retries here), no sandbox (no user namespaces as root).
    cache = Path(config.rootpath) / ".pytest_cache" / "nix"
    cache.mkdir(parents=True, exist_ok=True)
    registry = cache / "registry.json"
    registry.write_text('{"flakes":[],"version":2}\n')
    os.environ["NIX_CONFIG"] = "\n".join(
        [
            "experimental-features = nix-command flakes",
            "sandbox = false",
            f"flake-registry = {registry}",
            "substituters = ",
            "warn-dirty = false",
        ]
    )
    # Tests must never read the host's hive.toml.
    os.environ.pop("HIVEGEN_CONFIG", None)


def pytest_report_header(config: pytest.Config) -> str:
    """Which Nix this session's tests run against (the host's, or trixie's in
    tests/nixroot), and where it is."""
    nix = shutil.which("nix")
    if nix is None:
        return "nix: not on PATH"
    found = subprocess.run([nix, "--version"], capture_output=True, text=True, check=False)
    return f"nix: {found.stdout.strip() or found.stderr.strip()} ({nix})"


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@test", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def commit_dir(path: Path, message: str = "init") -> str:
    """Make `path` a git repo (if it is not) and commit everything in it."""
    if not (path / ".git").exists():
        git(path, "init", "-q", "--initial-branch=main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "--allow-empty", "-m", message)
    return git(path, "rev-parse", "HEAD")


def nix_system() -> str:
    out = subprocess.run(
        ["nix", "eval", "--impure", "--raw", "--expr", "builtins.currentSystem"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


@pytest.fixture(scope="session")
def hyperhive_flake(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The stub hyperhive flake, committed to a git repo, as a git+file URL."""
    repo = tmp_path_factory.mktemp("hyperhive")
    shutil.copytree(FIXTURES / "hyperhive", repo, dirs_exist_ok=True)
    (repo / "system.nix").write_text(f'"{nix_system()}"\n')
    commit_dir(repo)
    return f"git+file://{repo}"


def own_base(tmp_path: Path) -> tuple[str, Path]:
    """A hyperhive base flake of one test's own, which it may release new versions of
    (the session's `hyperhive_flake` is shared): its URL and its repo."""
    repo = tmp_path / "hyperhive"
    shutil.copytree(FIXTURES / "hyperhive", repo)
    (repo / "system.nix").write_text(f'"{nix_system()}"\n')
    commit_dir(repo)
    return f"git+file://{repo}", repo


def nix_parse(paths: list[Path]) -> None:
    """Parse every file with real `nix-instantiate --parse`; fail naming the file."""
    for path in paths:
        result = subprocess.run(
            ["nix-instantiate", "--parse", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{path} does not parse:\n{result.stderr}"


def write_config(tmp_path: Path, hyperhive_flake: str, extra: str = "") -> Path:
    """A hive.toml whose state root is `tmp_path/state`."""
    path = tmp_path / "hive.toml"
    path.write_text(
        f'[hive]\nstate_root = "{tmp_path / "state"}"\n'
        f'hyperhive_flake = "{hyperhive_flake}"\n{extra}'
    )
    return path


def files_of(repo: Path) -> dict[str, bytes]:
    """A repo's work tree, HEAD, refs and index entries: equal means nothing changed.

    git's object store and the index's stat cache are left out: they may hold
    unreachable leftovers of an undone step without any visible difference.
    """
    state = {
        str(p.relative_to(repo)): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(repo).parts
    }
    if (repo / ".git").is_dir():
        for args in (
            ["rev-parse", "HEAD"],
            ["show-ref"],
            ["ls-files", "--stage"],
            ["status", "--porcelain", "--untracked-files=all"],
        ):
            result = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, check=False
            )
            state[f"git {' '.join(args)}"] = result.stdout
    return state


def loopback_for(path: Path) -> str:
    """A loopback address of this test's own (all of 127/8 is loopback on Linux): its
    simulated agents' web ports never meet another test's, whatever runs beside it."""
    digest = hashlib.sha256(str(path).encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"


def alice_with_a_commit(tmp_path: Path, hyperhive_flake: str) -> tuple[list[str], str]:
    """A hive on the simulated host with alice spawned (through the CLI) and one commit
    of the manager's on her proposed main, not proposed yet: the CLI's --config
    arguments and that commit's sha."""
    from hivegen.cli import main

    cfg = ["--config", str(sim_config(tmp_path, hyperhive_flake))]
    assert main([*cfg, "spawn", "alice"]) == 0
    proposed = tmp_path / "state/agents/alice/config"
    (proposed / "agent.nix").write_text('{ ... }: { environment.variables.X = "1"; }\n')
    return cfg, commit_dir(proposed, "one")


def sim_config(tmp_path: Path, hyperhive_flake: str, extra: str = "") -> Path:
    host = tmp_path / "host"
    path = tmp_path / "hive.toml"
    path.write_text(
        f'[hive]\nstate_root = "{tmp_path / "state"}"\nhyperhive_flake = "{hyperhive_flake}"\n'
        f'[host]\nruntime = "simulated"\nsimulated_root = "{host}"\n'
        f'containers_conf_dir = "{host / "etc/nixos-containers"}"\n'
        f'systemd_dir = "{host / "etc/systemd/system.control"}"\n'
        f'runtime_root = "{host / "run/hyperhive"}"\n'
        # Short waits: the simulated agents come up at once, or never.
        f'[health]\nsettle = 0.2\nport_timeout = 3\naddress = "{loopback_for(tmp_path)}"\n'
        f"{extra}"
    )
    return path


KILL_AT_DEPLOYED_TAG = """#!/bin/sh
# SIGKILLs the process group (hivegen included) when git is asked to tag deployed/ID:
# after nixos-container has installed and activated the new system, before its record.
case "$*" in *"tag"*"deployed/$HG_KILL_ID"*) kill -9 0 ;; esac
exec {git} "$@"
"""


def approve_killed_at_tag(config: Path, tmp_path: Path, proposal_id: int) -> None:
    """`hivegen approve ID`, SIGKILLed as it tags deployed/ID (its own process group)."""
    import signal
    import sys

    shim = tmp_path / "kill-at-tag"
    shim.mkdir(exist_ok=True)
    real_git = shutil.which("git")
    assert real_git
    (shim / "git").write_text(KILL_AT_DEPLOYED_TAG.format(git=real_git))
    (shim / "git").chmod(0o755)
    proc = subprocess.run(
        [sys.executable, "-m", "hivegen", "--config", str(config), "approve", str(proposal_id)],
        env={**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "HG_KILL_ID": str(proposal_id)},
        start_new_session=True,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def killed_while_simulated_call_hangs(
    config: Path,
    simulated_root: Path,
    *args: str,
    call: int = 1,
    env: dict[str, str] | None = None,
    tool: str = "nixos-container",
) -> None:
    """Run `hivegen --config CONFIG ARGS` (its own process group) and SIGKILL it while its
    CALL-th simulated TOOL call hangs (the simulated host under SIMULATED_ROOT logs the
    hang)."""
    import signal
    import sys
    import time

    log = simulated_root / "log"
    before = log.read_text().count("# injected fault (hang)") if log.exists() else 0
    (simulated_root / f"fault-calls-{tool}").unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hivegen", "--config", str(config), *args],
        env={**(env or os.environ), "HIVEGEN_SIMHOST_FAULT": f"{tool}:{call}:hang"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while (log.read_text() if log.exists() else "").count("# injected fault (hang)") == before:
        assert proc.poll() is None, f"hivegen {' '.join(args)} ended before the hang"
        assert time.monotonic() < deadline, "the injected hang never came"
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Under pytest-xdist a worker hands its rows of the fault table to the controller,
    # which prints the table (pytest_testnodedown below).
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        from tests import test_faults

        output["fault_results"] = [list(row) for row in test_faults.RESULTS]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    from tests import test_faults

    rows = getattr(node, "workeroutput", {}).get("fault_results", [])
    test_faults.RESULTS.extend((str(v), str(s), bool(ok)) for v, s, ok in rows)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests import test_faults

    rows = getattr(test_faults, "RESULTS", [])
    if not rows:
        return
    terminalreporter.section("crash recovery: verb x interruption -> recovered")
    width = max(len(verb) for verb, _, _ in rows)
    for verb, step, ok in rows:
        terminalreporter.write_line(f"{verb.ljust(width)}  {step:<45} {'yes' if ok else 'NO'}")
    recovered = sum(ok for _, _, ok in rows)
    terminalreporter.write_line(f"{recovered} of {len(rows)} interruptions recovered")
