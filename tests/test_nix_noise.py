"""No Nix noise reaches the operator, a real Nix error does, whole (on Nix 2.8 here,
and on 2.26 in tests/nixroot).

Nix warns on healthy runs: the meta flake is evaluated with a deploy staged in it (a
dirty git tree), and a host's nix.conf may carry a setting another Nix version does not
know. Those lines never show in hivegen's output nor in the errors it keeps."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hivegen import nix, process
from hivegen.cli import main
from tests.conftest import commit_dir, git, sim_config

pytestmark = pytest.mark.nix

GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'
BROKEN = '{ ... }: { environment.variables.GREETING = throw "alice cannot build"; }\n'
UNKNOWN = "hivegen-no-such-setting"


@pytest.fixture
def noisy_nix(monkeypatch: pytest.MonkeyPatch) -> str:
    """The suite's NIX_CONFIG as an operator's host may have it: dirty trees warned
    about (nix's default) and a setting this nix does not know."""
    lines = [line for line in os.environ["NIX_CONFIG"].splitlines() if "warn-dirty" not in line]
    config = "\n".join([*lines, "warn-dirty = true", f"{UNKNOWN} = 1"])
    monkeypatch.setenv("NIX_CONFIG", config)
    return config


def test_nix_prints_the_noise_this_test_hides(noisy_nix: str, tmp_path: Path) -> None:
    """The noise is real on this nix: without hivegen's filter it would be shown."""
    flake = tmp_path / "flake"
    flake.mkdir()
    (flake / "flake.nix").write_text("{ outputs = _: { x = 1; }; }\n")
    commit_dir(flake)
    (flake / "untracked-but-added").write_text("")
    subprocess.run(["git", "-C", str(flake), "add", "-A"], check=True)
    raw = subprocess.run(
        ["nix", "eval", f"{flake}#x"], capture_output=True, text=True, check=True
    ).stderr.splitlines()
    assert f"warning: unknown setting '{UNKNOWN}'" in raw
    assert f"warning: Git tree '{flake}' is dirty" in raw
    assert all(nix.is_noise(line) for line in raw if line.startswith("warning:")), raw
    # hivegen's own call of the same: nothing of it kept.
    out = nix.run("eval", f"{flake}#x")
    assert out.stdout.strip() == "1"
    assert out.stderr == ""


def test_spawn_approve_and_a_failed_build_show_no_nix_warning(
    noisy_nix: str,
    tmp_path: Path,
    hyperhive_flake: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = ["--config", str(sim_config(tmp_path, hyperhive_flake)), "-v"]
    assert main([*config, "spawn", "alice"]) == 0
    proposed = tmp_path / "state/agents/alice/config"
    for agent_nix, proposal_id, code in ((GOOD, "1", 0), (BROKEN, "2", 1)):
        (proposed / "agent.nix").write_text(agent_nix)
        commit_dir(proposed, f"proposal {proposal_id}")
        assert main([*config, "propose", "alice", "HEAD"]) == 0
        assert main([*config, "approve", proposal_id, "--dry-run"]) == code
        assert main([*config, "approve", proposal_id]) == code
    assert main([*config, "rollout", "--all"]) == 0
    seen = capsys.readouterr()
    shown = seen.out + seen.err
    assert "warning:" not in shown, [line for line in shown.splitlines() if "warning:" in line]
    # The real error is shown whole, as kept in failed/2: nix's `error:` lines and, on
    # 2.26, the trace between them, with no warning among its lines.
    kept = git(tmp_path / "state/applied/alice", "tag", "-l", "--format=%(contents)", "failed/2")
    assert kept.startswith("error:"), kept
    assert "error: alice cannot build" in [line.strip() for line in kept.splitlines()], kept
    told = seen.err.split("failed to build or activate; alice is back on ", 1)[1]
    assert told.split(":\n", 1)[1].startswith(kept + "\n"), (told, kept)


def test_noise_is_dropped_from_the_stream_and_the_error_alike() -> None:
    lines: list[str] = []
    script = "echo 'warning: noise' >&2; echo 'kept' >&2; echo 'warning: noise' >&2; exit 3"
    opts = process.RunOpts(
        on_stderr_line=lines.append, is_noise=lambda line: line == "warning: noise", check=False
    )
    out = process.run(["sh", "-c", script], opts)
    assert lines == ["kept"]
    assert out.stderr == "kept\n"
    quiet = process.run(["sh", "-c", script], process.RunOpts(is_noise=opts.is_noise, check=False))
    assert quiet.stderr == "kept\n"
    assert quiet.stderr_tail() == ("kept",)
