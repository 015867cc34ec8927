"""The health check after a switch: an approve, a rollback or a rebuild whose new system
does not come up is put back on the system the agent ran, and says why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hivegen import process
from hivegen.activation import Unhealthy
from hivegen.config import load_config
from hivegen.hive import Hive
from hivegen.proposals import BuildFailed, Proposals
from hivegen.store import ProposalStatus
from tests.conftest import commit_dir, git, own_base, sim_config

pytestmark = pytest.mark.nix  # run on Nix 2.8 here and on 2.26 in tests/nixroot

GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'
CRASHES = '{ ... }: { environment.variables.SIMHOST_BOOT = "crash"; }\n'
EXITS_AT_ONCE = '{ ... }: { environment.variables.SIMHOST_BOOT = "fail"; }\n'
NO_PORT = '{ ... }: { environment.variables.SIMHOST_PORT = "closed"; }\n'


@pytest.fixture
def hive(tmp_path: Path, hyperhive_flake: str) -> Hive:
    hive = Hive(load_config(sim_config(tmp_path, hyperhive_flake)))
    hive.spawn("alice")
    return hive


def propose(hive: Hive, agent_nix: str, message: str = "change") -> int:
    proposed = hive.layout.proposed("alice")
    (proposed / "agent.nix").write_text(agent_nix)
    commit_dir(proposed, message)
    return Proposals(hive).propose("alice").id


def running_system(hive: Hive) -> tuple[bool, Path | None]:
    return hive.host.unit_state("h-alice").running, hive.host.system("h-alice")


def test_a_healthy_deploy_says_so(hive: Hive) -> None:
    deployment = Proposals(hive).approve(propose(hive, GOOD))
    assert any(step.startswith("alice is up (") for step in deployment.steps)
    assert running_system(hive)[0]


@pytest.mark.parametrize(
    ("agent_nix", "reason"),
    [
        (CRASHES, r"h-alice (is not running|stopped within 0\.2s of its start)"),
        (EXITS_AT_ONCE, r"h-alice (is not running|stopped within 0\.2s of its start)"),
        (NO_PORT, r"accepted no connection within 3s"),
    ],
)
def test_an_agent_that_does_not_come_up_is_put_back(
    hive: Hive, agent_nix: str, reason: str
) -> None:
    before = running_system(hive)
    main_before = git(hive.layout.applied("alice"), "rev-parse", "main")
    proposal_id = propose(hive, agent_nix)
    with pytest.raises(BuildFailed) as raised:
        Proposals(hive).approve(proposal_id)
    message = raised.value.message
    assert f"proposal {proposal_id} (alice " in message
    assert "built, but alice did not come up on its new system" in message
    assert re.search(reason, message)
    # The agent runs the system it ran; git, the index and the tag say what happened.
    assert running_system(hive) == before
    assert git(hive.layout.applied("alice"), "rev-parse", "main") == main_before
    proposal = Proposals(hive).store.get(proposal_id)
    assert proposal.status is ProposalStatus.FAILED
    assert re.search(reason, proposal.error)
    tag = git(
        hive.layout.applied("alice"), "tag", "-l", "--format=%(contents)", f"failed/{proposal_id}"
    )
    assert re.search(reason, tag)
    # Still deployable once fixed.
    assert (
        Proposals(hive).approve(propose(hive, GOOD, "fixed")).proposal.status
        is ProposalStatus.DEPLOYED
    )


def test_a_stopped_agent_is_not_checked(hive: Hive) -> None:
    hive.stop("alice")
    started = process.started_count()
    deployment = Proposals(hive).approve(propose(hive, CRASHES))
    assert deployment.proposal.status is ProposalStatus.DEPLOYED
    assert not any("is up" in step for step in deployment.steps)
    assert process.started_count() > started


def test_a_rebuild_onto_a_bad_base_is_put_back_and_recorded(tmp_path: Path) -> None:
    url, repo = own_base(tmp_path)
    hive = Hive(load_config(sim_config(tmp_path, url)))
    hive.spawn("alice")
    before = running_system(hive)
    flake = repo / "flake.nix"
    flake.write_text(
        flake.read_text().replace(
            "environment.variables.HYPERHIVE_ROLE = role;",
            "environment.variables.HYPERHIVE_ROLE = role;\n"
            '        environment.variables.SIMHOST_BOOT = "crash";',
        )
    )
    commit_dir(repo, "a base whose agents crash")
    hive.meta_update(["hyperhive"])
    with pytest.raises(Unhealthy) as raised:
        hive.rebuild("alice")
    assert re.search(
        r"alice did not come up on its new system: h-alice (is not running|stopped within 0\.2s)",
        raised.value.message,
    )
    assert running_system(hive) == before
    note = git(hive.layout.applied("alice"), "tag", "-l", "--format=%(contents)", "unhealthy/1")
    assert re.match(
        r"rebuild: alice did not come up: h-alice (is not running|stopped within 0\.2s)", note
    )
    assert f"put back on: {before[1]}" in note
    # Still built from the old base: status says so, without evaluating anything.
    (status,) = hive.status()
    assert status.stale_inputs == ("hyperhive",)
    recorded = hive.recorded_system(hive.spec("alice"))
    assert recorded is not None
    assert recorded[1] == before[1]
