"""'needs rebuild' from the lock alone: a base bump marks every agent built before it,
a rebuild or a deploy clears it, and reading it starts no process."""

from __future__ import annotations

from pathlib import Path

import pytest

from hivegen import builtfrom, process
from hivegen.config import load_config
from hivegen.hive import Hive
from hivegen.proposals import Proposals
from hivegen.status import status_json
from tests.conftest import commit_dir, own_base, sim_config

pytestmark = pytest.mark.nix  # run on Nix 2.8 here and on 2.26 in tests/nixroot


def test_a_base_bump_marks_agents_until_they_are_rebuilt(tmp_path: Path) -> None:
    url, repo = own_base(tmp_path)
    hive = Hive(load_config(sim_config(tmp_path, url)))
    for name in ("hm1nd", "alice", "bob"):
        hive.spawn(name)
    before = {s.name: s.needs_rebuild for s in hive.status()}
    assert before == {"alice": False, "bob": False, "hm1nd": False}
    recorded = builtfrom.recorded(hive.layout, "alice")
    assert recorded is not None
    assert set(recorded) == {"agent-alice", "hyperhive"}

    (repo / "NEWS").write_text("a newer base\n")
    commit_dir(repo, "base bump")
    hive.meta_update(["hyperhive"])
    started = process.started_count()
    statuses = {s.name: s for s in hive.status()}
    assert process.started_count() - started == 1  # systemctl only, as before
    assert {n: s.stale_inputs for n, s in statuses.items()} == {
        "alice": ("hyperhive",),
        "bob": ("hyperhive",),
        "hm1nd": ("hyperhive",),
    }
    shown = status_json(statuses["alice"])
    assert (shown["needs_rebuild"], shown["stale_inputs"]) == (True, ["hyperhive"])

    hive.rebuild("alice")
    after = {s.name: s.needs_rebuild for s in hive.status()}
    assert after == {"alice": False, "bob": True, "hm1nd": True}

    # A deploy of bob's own change builds on the new base too.
    proposed = hive.layout.proposed("bob")
    (proposed / "agent.nix").write_text('{ ... }: { environment.variables.X = "y"; }\n')
    commit_dir(proposed, "change")
    proposals = Proposals(hive)
    proposals.approve(proposals.propose("bob").id)
    after = {s.name: s.needs_rebuild for s in hive.status()}
    assert after == {"alice": False, "bob": False, "hm1nd": True}


def test_an_agent_with_no_record_is_unknown_not_stale(tmp_path: Path, hyperhive_flake: str) -> None:
    hive = Hive(load_config(sim_config(tmp_path, hyperhive_flake)))
    hive.spawn("alice")
    (hive.layout.applied("alice") / ".git" / builtfrom.RECORD).unlink()
    (status,) = hive.status()
    assert (status.needs_rebuild, status.stale_inputs) == (None, None)
