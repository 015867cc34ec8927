"""A property: for any short sequence of verbs, one of them hit by a fault of the simulated
host at any of its calls, `doctor --repair` leaves the hive's invariants true: every
proposal indexed once, applied main the latest deploy, the meta lock pinning it, and the
manager's commits, notes and credentials untouched. Hypothesis draws the sequences
(derandomized, a bounded number: each example builds and deploys for real)."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hivegen import meta as meta_mod
from hivegen import registry
from hivegen.doctor import Doctor
from hivegen.errors import HivegenError
from hivegen.proposals import Proposals
from hivegen.status import AgentState
from hivegen.store import ProposalStatus
from tests.conftest import git
from tests.test_faults import World, build_world, manager_commit, nothing

VERBS = ("propose", "approve", "deny", "rollback", "restart", "rebuild")
# Every plan starts with a proposal, and approves are drawn twice as often: a plan that
# never deploys anything would prove little.
PLANS = st.lists(st.sampled_from((*VERBS, "approve")), min_size=2, max_size=4).map(
    lambda verbs: ["propose", *verbs]
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str) -> World:
    return build_world(tmp_path_factory.mktemp("invariants"), hyperhive_flake, nothing)


def run(verb: str, world: World, counter: list[int]) -> None:
    hive = world.hive()
    proposals = Proposals(hive)
    pending = [p for p in proposals.store.pending() if p.agent == "alice"]
    match verb:
        case "propose":
            counter[0] += 1
            nix = f'{{ ... }}: {{ environment.variables.N = "{counter[0]}"; }}\n'
            proposals.propose("alice", manager_commit(hive, nix))
        case "approve" if pending:
            proposals.approve(pending[-1].id, force=True)
        case "deny" if pending:
            proposals.deny(pending[-1].id, "no")
        case "rollback":
            proposals.rollback("alice", "deployed/0")
        case "restart":
            hive.restart("alice")
        case "rebuild":
            hive.rebuild("alice")
        case _:
            pass  # nothing pending to approve or deny


def violations(world: World, manager_head: str) -> list[str]:
    hive = world.hive()
    found = [f"doctor: {f.check}: {f.message}" for f in Doctor(hive).run().problems]
    applied = hive.layout.applied("alice")
    store = Proposals(hive).store
    tags = set(registry.proposal_tags(applied / ".git"))
    if store.ids() != tags:
        found.append(f"index {sorted(store.ids())} != proposal tags {sorted(tags)}")
    if store.in_status(ProposalStatus.BUILDING):
        found.append("a proposal is left building")
    main = git(applied, "rev-parse", "main")
    if main != Proposals(hive).last_deployed_sha("alice"):
        found.append("applied main is not the latest deploy")
    lock = meta_mod.read_lock(hive.layout.meta)
    if meta_mod.locked_node(lock, "agent-alice").get("rev") != main:
        found.append("the meta lock does not pin alice's main")
    if git(hive.layout.proposed("alice"), "rev-parse", "HEAD") != manager_head:
        found.append("the manager's last commit is lost")
    if not (hive.layout.notes("alice") / "notes.md").exists():
        found.append("alice's notes are gone")
    if not (hive.layout.credentials("alice") / "token").exists():
        found.append("alice's credentials are gone")
    states = {s.name: s.state for s in hive.status()}
    if states != {"hm1nd": AgentState.RUNNING, "alice": AgentState.RUNNING}:
        found.append(f"states {states}")
    return found


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plan=PLANS,
    faulty=st.integers(min_value=0, max_value=4),
    call=st.integers(min_value=1, max_value=4),
)
def test_any_verbs_and_one_fault_keep_the_invariants(
    world: World, plan: list[str], faulty: int, call: int
) -> None:
    world.restore()
    counter = [0]
    for index, verb in enumerate(plan):
        if index == faulty % len(plan):
            os.environ["HIVEGEN_SIMHOST_FAULT"] = str(call)
            (world.hive().config.host.simulated_root / "fault-calls-all").unlink(missing_ok=True)
        try:
            with contextlib.suppress(HivegenError):
                run(verb, world, counter)
        finally:
            os.environ.pop("HIVEGEN_SIMHOST_FAULT", None)
    manager_head = git(world.hive().layout.proposed("alice"), "rev-parse", "HEAD")
    Doctor(world.hive()).run(repair=True)
    found = violations(world, manager_head)
    assert found == [], f"plan {plan}, fault at call {call} of step {faulty % len(plan)}"
