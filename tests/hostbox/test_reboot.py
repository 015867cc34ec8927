"""A reboot of a real systemd, then `hivegen reconcile` (what hivegen-reconcile.service
runs at boot): exactly the agents that ran run again, with their binds.

The box is powered off and booted again: its systemd starts fresh, with every
container@ unit inactive, and its /run is a new tmpfs. The hive's runtime root lives on
the host side of the box (the conf's bind sources are host paths), so the test empties
it while the box is off, as a host's boot empties /run/hyperhive. The drop-ins, confs and
container roots are on disk and stay. Its own box: it reboots it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import commit_dir, killed_while_simulated_call_hangs
from tests.hostbox.boxed import (
    BoxedHive,
    assert_status_agrees,
    boxed_hive,
    document_of,
    expected_binds,
)

# One xdist group with test_containment, which watches the host for stray writes.
pytestmark = [pytest.mark.hostbox, pytest.mark.xdist_group("host")]

MANAGER = "hm1nd"
CONTAINERS = {MANAGER: MANAGER, "alice": "h-alice", "bob": "h-bob"}
GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'
FOREIGN_CONF = 'PRIVATE_NETWORK=0\nHOST_ADDRESS=\nLOCAL_ADDRESS=\nEXTRA_NSPAWN_FLAGS=""\n'


@pytest.fixture(scope="module")
def boxed(
    hostbox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str
) -> Iterator[BoxedHive]:
    top = tmp_path_factory.mktemp("hostbox-reboot")
    with boxed_hive(hostbox_rootfs, top, hyperhive_flake) as hive:
        hive.hivegen("init")
        for name in CONTAINERS:
            hive.hivegen("spawn", name)
        yield hive


def approve_killed_mid_build(boxed: BoxedHive, proposal_id: int) -> None:
    """`hivegen approve` SIGKILLed while its `nixos-container update` hangs."""
    killed_while_simulated_call_hangs(
        boxed.config, boxed.dirs.host, "approve", str(proposal_id), env=boxed.env
    )


def reboot(boxed: BoxedHive) -> None:
    boxed.box.poweroff()
    shutil.rmtree(boxed.dirs.runtime_root)  # /run/hyperhive on a host: a tmpfs
    boxed.box.boot()
    boxed.box.install_systemctl(boxed.dirs.bin)  # the box's init has a new PID


def test_a_reboot_brings_back_exactly_the_agents_that_ran(boxed: BoxedHive) -> None:
    boxed.hivegen("stop", "bob")
    foreign = boxed.dirs.conf_dir / "h-zed.conf"
    foreign.write_text(FOREIGN_CONF)
    proposed = boxed.dirs.state / "agents/alice/config"
    (proposed / "agent.nix").write_text(GOOD)
    sha = commit_dir(proposed, "manager change")
    proposal = boxed.document("propose", "alice", sha)
    approve_killed_mid_build(boxed, proposal["id"])
    assert boxed.document("pending")["proposals"] == []
    dropins = sorted(boxed.dirs.systemd_dir.rglob("*.conf"))
    dropin_text = {p: p.read_bytes() for p in dropins}

    reboot(boxed)
    rows = assert_status_agrees(boxed)
    assert {c: r["state"] for c, r in rows.items() if c != "h-zed"} == dict.fromkeys(
        CONTAINERS.values(), "stopped"
    )
    assert rows["h-alice"]["desired"] == "running"
    assert rows["h-bob"]["desired"] == "stopped"

    result = boxed.run_hivegen("reconcile", "--json")
    assert result.returncode == 0, result.stdout + result.stderr + boxed.box.journal()
    report = document_of(result.stdout)
    assert report["settled"] == ["proposal 1 (alice): interrupted approve settled as pending"]
    assert {a["name"]: a["outcome"] for a in report["agents"]} == {
        MANAGER: "started",
        "alice": "started",
        "bob": "left stopped",
    }
    assert report["foreign"] == ["h-zed"]

    # What the real systemd says: the two that ran are active, bob and h-zed are not.
    assert boxed.is_active(MANAGER) == "active"
    assert boxed.is_active("h-alice") == "active"
    assert boxed.is_active("h-bob") == "inactive"
    assert boxed.is_active("h-zed") == "inactive"
    assert foreign.read_text() == FOREIGN_CONF
    assert {p: p.read_bytes() for p in dropins} == dropin_text
    rows = assert_status_agrees(boxed)
    assert rows["h-zed"]["state"] == "foreign"
    # The runtime dirs were made again, and really bound at /run/hive.
    assert boxed.bind_mounts("h-alice") == expected_binds(boxed, "alice", manager=False)
    assert boxed.bind_mounts(MANAGER) == expected_binds(boxed, MANAGER, manager=True)
    pending = boxed.document("pending")["proposals"]
    assert [p["id"] for p in pending] == [1]
    doctor = boxed.run_hivegen("doctor")
    assert doctor.returncode == 0, doctor.stdout
