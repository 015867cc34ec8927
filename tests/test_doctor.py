"""doctor finds each kind of drift; --repair fixes the safe ones and deletes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hivegen import nspawn
from hivegen.cli import main
from hivegen.config import load_config
from hivegen.doctor import Doctor
from hivegen.findings import Check
from hivegen.hive import Hive
from tests.conftest import commit_dir, files_of, git, sim_config


@pytest.fixture
def hive(tmp_path: Path, hyperhive_flake: str) -> Hive:
    hive = Hive(load_config(sim_config(tmp_path, hyperhive_flake)))
    hive.spawn("hm1nd")
    hive.spawn("alice")
    return hive


def checks(hive: Hive) -> set[tuple[Check, str | None]]:
    return {(f.check, f.agent) for f in Doctor(hive).run().problems}


def test_healthy_hive_has_no_findings(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert checks(hive) == set()
    assert main(["--config", str(tmp_path / "hive.toml"), "doctor"]) == 0
    assert "the hive is healthy" in capsys.readouterr().out


def test_each_drift_is_found_and_repaired(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = hive.layout
    proposed_before = files_of(layout.proposed("alice"))
    (layout.notes("alice") / "notes.md").write_text("keep\n")
    layout.credentials("alice").chmod(0o755)
    nspawn.dropin_dir(hive.config, "h-alice").joinpath("hyperhive-limits.conf").unlink()
    conf = nspawn.conf_path(hive.config, "hm1nd")
    conf.write_text(conf.read_text().replace("PRIVATE_NETWORK=0", "PRIVATE_NETWORK=1"))
    flake = layout.meta / "flake.nix"
    flake.write_text(flake.read_text().replace('"8879"', '"1"'))
    applied = layout.applied("alice")
    (applied / "agent.nix").write_text("{ ... }: { }  # stray edit\n")
    stray = commit_dir(applied, "moved by hand")  # applied main is no longer the last deploy
    (layout.applied_root / ".seeding-bob").mkdir()
    assert checks(hive) == {
        (Check.CREDENTIALS_MODE, "alice"),
        (Check.DROPIN, "alice"),
        (Check.CONF, "hm1nd"),
        (Check.META, None),
        (Check.APPLIED_MAIN, "alice"),
        (Check.LEFTOVER, "bob"),
    }
    config = ["--config", str(tmp_path / "hive.toml")]
    assert main([*config, "doctor"]) == 3
    out = capsys.readouterr().out
    assert out.count("[--repair fixes it]") == 6
    assert main([*config, "doctor", "--repair", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["repaired"]) >= 6
    assert report["findings"] == []
    assert checks(hive) == set()
    assert files_of(layout.proposed("alice")) == proposed_before
    assert (layout.notes("alice") / "notes.md").read_text() == "keep\n"
    assert (layout.credentials("alice")).is_dir()
    # main is back on the last deploy; the stray commit is moved off main, not destroyed.
    assert git(applied, "rev-parse", "main") == git(applied, "rev-parse", "deployed/0")
    assert git(applied, "cat-file", "-t", stray) == "commit"


def test_what_only_the_operator_can_decide_is_reported_not_repaired(hive: Hive) -> None:
    nspawn.conf_path(hive.config, "h-zz").write_text("PRIVATE_NETWORK=1\n")  # foreign
    for child in hive.layout.credentials("alice").iterdir():
        child.unlink()
    hive.host.destroy("h-alice")  # container gone behind hivegen's back
    report = Doctor(hive).run(repair=True)
    found = {(f.check, f.agent, f.severity) for f in report.findings}
    assert (Check.CONTAINER, "alice", "problem") in found
    assert (Check.FOREIGN, None, "note") in found
    assert nspawn.conf_path(hive.config, "h-zz").exists()
    assert hive.layout.applied("alice").exists()


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ((2, 8, 0), (0, None)),
        ((2, 26, 3), (0, None)),
        ((2, 18, 1), (0, "nix 2.18.1 is supported, but hivegen's tests ran on 2.8, 2.26 only")),
        ((2, 3, 16), (3, "nix 2.3.16 is older than the oldest hivegen supports (2.8.0)")),
    ],
)
@pytest.mark.usefixtures("hive")
def test_doctor_names_a_nix_it_does_not_support_or_was_not_tested_on(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    version: tuple[int, int, int],
    expected: tuple[int, str | None],
) -> None:
    from hivegen import nix

    code, said = expected

    monkeypatch.setattr(nix, "version", lambda: nix.NixVersion(*version))
    assert main(["--config", str(tmp_path / "hive.toml"), "doctor", "--json"]) == code
    findings = json.loads(capsys.readouterr().out)["findings"]
    nix_said = [f["message"] for f in findings if f["check"] == "nix"]
    assert nix_said == ([said] if said else [])


@pytest.mark.usefixtures("hive")
def test_doctor_says_when_there_is_no_nix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hivegen import nix

    nix.version.cache_clear()
    monkeypatch.setattr(nix, "NIX", ("hivegen-no-such-nix",))
    try:
        assert main(["--config", str(tmp_path / "hive.toml"), "doctor"]) == 3
    finally:
        nix.version.cache_clear()
    out = capsys.readouterr().out
    assert "cannot run 'hivegen-no-such-nix': not found on PATH" in out


def test_git_failing_to_compare_a_work_tree_is_not_drift(
    hive: Hive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`git diff --quiet` exits 1 for a difference; any other failure (a full disk, a
    lock in the way) is reported as what it is, with nothing to "repair"."""
    from hivegen import process
    from hivegen.git import Git

    run = Git.run

    def failing_diff(
        self: Git, repo: Path, *args: str, input: str | None = None, check: bool = True
    ) -> process.CmdOut:
        if args[:2] == ("diff", "--quiet") and repo == hive.layout.applied("alice"):
            return process.CmdOut(("git", *args), 128, "", "fatal: No space left on device\n")
        return run(self, repo, *args, input=input, check=check)

    monkeypatch.setattr(Git, "run", failing_diff)
    found = [f for f in Doctor(hive).run().problems if f.check is Check.APPLIED_TREE]
    assert [(f.agent, f.message, f.repairable) for f in found] == [
        (
            "alice",
            "cannot compare the applied work tree of alice with main: "
            "fatal: No space left on device",
            False,
        )
    ]
    assert found[0].hint == "free space, then run doctor again"
