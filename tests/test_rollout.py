"""hivegen rollout on the simulated host: one build for the whole set, a canary first,
the manager last, an agent that does not come up put back (and only it), --keep-going,
and a rollout killed half-way finished by running it again."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hivegen.config import load_config
from hivegen.hive import Hive
from hivegen.rollout import Phase, Rollout, read_record
from tests.conftest import (
    FIXTURES,
    commit_dir,
    git,
    killed_while_simulated_call_hangs,
    own_base,
    sim_config,
)

pytestmark = pytest.mark.nix  # run on Nix 2.8 here and on 2.26 in tests/nixroot

AGENTS = ("hm1nd", "alice", "bob", "carol")
BASE_LINE = "environment.variables.HYPERHIVE_ROLE = role;"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return own_base(tmp_path)[1]


@pytest.fixture
def hive(tmp_path: Path, base: Path) -> Hive:
    hive = Hive(load_config(sim_config(tmp_path, f"git+file://{base}")))
    for name in AGENTS:
        hive.spawn(name)
    return hive


def new_base(hive: Hive, base: Path, version: str, crash: tuple[str, ...] = ()) -> None:
    """A base flake release that changes every agent's system (and makes the `crash`
    agents' init exit soon after they start), bumped into the meta flake."""
    crashing = " || ".join(f'label == "{n}"' for n in crash) or "false"
    flake = base / "flake.nix"
    text = (FIXTURES / "hyperhive" / "flake.nix").read_text()
    flake.write_text(
        text.replace(
            "base = role: {",
            "base = role: { config, ... }: let label = config.environment.variables.HIVE_LABEL"
            ' or ""; in {',
        ).replace(
            BASE_LINE,
            f'{BASE_LINE}\n        environment.variables.BASE_VERSION = "{version}";\n'
            f'        environment.variables.SIMHOST_BOOT = if {crashing} then "crash" else "no";',
        )
    )
    commit_dir(base, f"base {version}")
    hive.meta_update(["hyperhive"])


def systems(hive: Hive) -> dict[str, Path | None]:
    return {n: hive.host.system(hive.spec(n).container) for n in AGENTS}


def version_of(system: Path | None) -> str | None:
    assert system is not None
    variables = json.loads((system / "variables.json").read_text())
    version = variables.get("BASE_VERSION")
    return None if version is None else str(version)


def test_one_build_a_canary_first_and_the_manager_last(
    hive: Hive, base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    new_base(hive, base, "2")
    seen: list[tuple[str, Phase]] = []
    caplog.set_level(logging.INFO, logger="hivegen.process")
    report = Rollout(
        hive, list(AGENTS), jobs=2, on_progress=lambda s: seen.append((s.name, s.phase))
    ).run()
    assert report.ok
    assert report.order == ("alice", "bob", "carol", "hm1nd")
    assert [s.phase for s in report.steps] == [Phase.HEALTHY] * 4
    assert {n: version_of(p) for n, p in systems(hive).items()} == dict.fromkeys(AGENTS, "2")
    # One evaluation for the whole set (a nix eval listing every system's derivation),
    # one build of those derivations, and no evaluation per container after that: each
    # is switched to its built system (nix-env --set, then a reload), not rebuilt.
    commands = [r.getMessage() for r in caplog.records]
    evals = [c for c in commands if " eval --json " in c]
    assert len(evals) == 1
    assert all(f'\\"{n}\\"' in evals[0] or f'"{n}"' in evals[0] for n in AGENTS)
    builds = [c for c in commands if " build " in c and "nix" in c]
    assert len(builds) == 1
    assert "/nix/store/" in builds[0]
    assert "nixosConfigurations" not in builds[0]  # derivations: nothing to evaluate
    assert [c for c in commands if "nixos-container update" in c] == []
    assert len([c for c in commands if "nix-env -p " in c]) == 4
    assert len([c for c in commands if "systemctl reload container@" in c]) == 4
    # The canary is up before anything else starts switching; the manager after all.
    activating = [n for n, p in seen if p is Phase.ACTIVATING]
    assert activating[0] == "alice"
    healthy = [n for n, p in seen if p is Phase.HEALTHY]
    assert healthy[0] == "alice"
    assert seen.index(("alice", Phase.HEALTHY)) < seen.index(("bob", Phase.ACTIVATING))
    assert activating[-1] == "hm1nd"
    assert seen.index(("hm1nd", Phase.ACTIVATING)) > max(
        seen.index((n, Phase.HEALTHY)) for n in ("alice", "bob", "carol")
    )
    assert read_record(hive) is None
    assert {s.name: s.needs_rebuild for s in hive.status()} == dict.fromkeys(AGENTS, False)

    # Again: nothing to switch.
    again = Rollout(hive, list(AGENTS)).run()
    assert [s.phase for s in again.steps] == [Phase.UNCHANGED] * 4


def test_a_failing_canary_stops_the_rollout_with_every_other_agent_untouched(
    hive: Hive, base: Path
) -> None:
    before = systems(hive)
    new_base(hive, base, "2", crash=("alice",))
    report = Rollout(hive, list(AGENTS)).run()
    assert not report.ok
    phases = {s.name: s.phase for s in report.steps}
    assert phases == {
        "alice": Phase.ROLLED_BACK,
        "bob": Phase.SKIPPED,
        "carol": Phase.SKIPPED,
        "hm1nd": Phase.SKIPPED,
    }
    assert systems(hive) == before
    assert all(hive.host.unit_state(hive.spec(n).container).running for n in AGENTS)
    note = git(hive.layout.applied("alice"), "tag", "-l", "--format=%(contents)", "unhealthy/1")
    # Crashed by the first look (not running) or within the settle time: either says so.
    assert re.match(
        r"rollout: alice did not come up: h-alice (is not running|stopped within 0\.2s)", note
    )


def test_a_mid_rollout_failure_rolls_back_only_that_agent_and_keep_going(
    hive: Hive, base: Path
) -> None:
    before = systems(hive)
    new_base(hive, base, "2", crash=("bob",))
    report = Rollout(hive, list(AGENTS), jobs=1).run()
    phases = {s.name: s.phase for s in report.steps}
    assert phases["alice"] is Phase.HEALTHY
    assert phases["bob"] is Phase.ROLLED_BACK
    assert phases["hm1nd"] is Phase.SKIPPED  # the manager waits for a clean run
    now = systems(hive)
    assert version_of(now["alice"]) == "2"
    assert now["bob"] == before["bob"]
    assert now["hm1nd"] == before["hm1nd"]

    kept = Rollout(hive, list(AGENTS), jobs=2, keep_going=True).run()
    phases = {s.name: s.phase for s in kept.steps}
    assert phases["alice"] is Phase.UNCHANGED
    assert phases["bob"] is Phase.ROLLED_BACK
    assert phases["carol"] in (Phase.HEALTHY, Phase.UNCHANGED)
    assert phases["hm1nd"] is Phase.HEALTHY
    assert version_of(systems(hive)["hm1nd"]) == "2"
    assert systems(hive)["bob"] == before["bob"]


def test_a_rollout_killed_half_way_is_finished_by_running_it_again(
    tmp_path: Path, hive: Hive, base: Path
) -> None:
    new_base(hive, base, "2")
    config = tmp_path / "hive.toml"
    # Killed as the second agent (bob) is reloaded onto its new system, after its
    # profile was set: systemctl calls 1-4 are alice's (show, reload, the health
    # check's two), 5 is bob's show, 6 his reload.
    killed_while_simulated_call_hangs(
        config, tmp_path / "host", "rollout", "--all", "--jobs", "1", call=6, tool="systemctl"
    )
    record = read_record(hive)
    assert record is not None
    recorded = {n: e["phase"] for n, e in record["agents"].items()}
    assert recorded["alice"] == "healthy"
    assert recorded["bob"] == "activating"
    doctor = subprocess.run(
        [sys.executable, "-m", "hivegen", "--config", str(config), "doctor"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "a rollout of meta" in doctor.stdout
    assert "caught mid-switch (not checked yet): bob" in doctor.stdout
    report = Rollout(hive, list(AGENTS)).run()
    assert report.ok
    assert report.resumed
    phases = {s.name: s.phase for s in report.steps}
    assert phases["alice"] is Phase.HEALTHY  # done before: not switched again
    assert phases["bob"] is Phase.HEALTHY
    # bob's profile was set before the kill; his container was reloaded onto it only
    # when the rollout was resumed: what he runs is the new system, checked.
    bob = hive.spec("bob").container
    shown = hive.host._run(["systemctl", "show", "-p", "SimSystem", "--value", f"container@{bob}"])
    assert shown.stdout.strip() == str(systems(hive)["bob"])
    assert {n: version_of(p) for n, p in systems(hive).items()} == dict.fromkeys(AGENTS, "2")
    assert read_record(hive) is None


def test_the_manager_is_never_the_canary(hive: Hive) -> None:
    from hivegen.errors import UsageError

    with pytest.raises(UsageError, match="cannot be the canary"):
        Rollout(hive, list(AGENTS), canary="hm1nd").run()
    order = Rollout(hive, ["hm1nd", "bob", "carol"], canary="carol").run().order
    assert order == ("carol", "bob", "hm1nd")
