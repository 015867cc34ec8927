"""The container lifecycle against a real systemd (see tests/hostbox/harness.py).

One box and one hive for the module: the manager and two agents are spawned once; the
tests that only look come first, the lifecycle test that stops, rebuilds and destroys
comes last.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostbox.boxed import BoxedHive, assert_status_agrees, boxed_hive, expected_binds

# One xdist group with test_containment, which watches the host for stray writes.
pytestmark = [pytest.mark.hostbox, pytest.mark.xdist_group("host")]

MANAGER = "hm1nd"
AGENTS = ("alice", "bob")
CONTAINERS = {MANAGER: MANAGER, "alice": "h-alice", "bob": "h-bob"}
# bob has its own limits; the others get the defaults (2G, 50%).
LIMITS = '[agents.bob]\nmemory_max = "1G"\ncpu_quota = "25%"\n'
GIB = 1024**3


@pytest.fixture(scope="module")
def boxed(
    hostbox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str
) -> Iterator[BoxedHive]:
    top = tmp_path_factory.mktemp("hostbox")
    with boxed_hive(hostbox_rootfs, top, hyperhive_flake, LIMITS) as hive:
        hive.hivegen("init")
        for name in (MANAGER, *AGENTS):
            hive.hivegen("spawn", name)
            assert_status_agrees(hive)
        yield hive


def test_spawned_containers_are_active_units(boxed: BoxedHive) -> None:
    for container in CONTAINERS.values():
        assert boxed.is_active(container) == "active"
    rows = assert_status_agrees(boxed)
    assert {c: r["state"] for c, r in rows.items()} == dict.fromkeys(CONTAINERS.values(), "running")
    # Every container's leader runs the inner init, in its own PID namespace.
    for container in CONTAINERS.values():
        out = boxed.in_container(container, "cat /proc/1/cmdline")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "/usr/bin/busybox\0sh\0/init\0"


def test_containers_share_the_hosts_network(boxed: BoxedHive) -> None:
    # The conf's PRIVATE_NETWORK=0 and empty addresses: no --private-network or
    # --network-veth, so each agent's web UI port is reachable from the host.
    box_net = boxed.box.run(["/usr/bin/readlink", "/proc/1/ns/net"]).stdout.strip()
    for container in CONTAINERS.values():
        leader = boxed.leader(container)
        net = boxed.box.run(["/usr/bin/readlink", f"/proc/{leader}/ns/net"]).stdout.strip()
        assert net == box_net, container


def test_limits_from_the_drop_ins_are_loaded(boxed: BoxedHive) -> None:
    units = boxed.show(
        *CONTAINERS.values(),
        props="MemoryMax,CPUQuotaPerSecUSec,DropInPaths,NeedDaemonReload",
    )
    expected = {
        MANAGER: (str(2 * GIB), "500ms"),
        "h-alice": (str(2 * GIB), "500ms"),
        "h-bob": (str(1 * GIB), "250ms"),
    }
    for container, (memory, cpu) in expected.items():
        unit = units[container]
        assert (unit["MemoryMax"], unit["CPUQuotaPerSecUSec"]) == (memory, cpu), unit
        assert unit["DropInPaths"] == (
            f"/etc/systemd/system.control/container@{container}.service.d/hyperhive-limits.conf"
        )
        assert unit["NeedDaemonReload"] == "no"


def seed_secrets(boxed: BoxedHive) -> None:
    """A credential and a note per agent, each with a text found nowhere else."""
    for name in CONTAINERS:
        (boxed.dirs.state / "credentials" / name / "token").write_text(f"secret-{name}\n")
        (boxed.dirs.state / "notes" / name / "note").write_text(f"note-{name}\n")


def test_a_stale_reference_drop_in_in_run_is_masked_by_hivegens(boxed: BoxedHive) -> None:
    # The reference wrote its limits to /run/systemd/system/…/hyperhive-limits.conf;
    # systemd merges drop-ins by file name and the same name in system.control wins.
    stale = "/run/systemd/system/container@h-alice.service.d"
    boxed.box.run(
        [
            "/bin/sh",
            "-c",
            f"mkdir -p {stale} && printf '[Service]\\nMemoryMax=16G\\n' "
            f"> {stale}/hyperhive-limits.conf",
        ]
    )
    try:
        boxed.box.systemctl("daemon-reload")
        unit = boxed.show("h-alice", props="MemoryMax,DropInPaths")["h-alice"]
        assert unit["MemoryMax"] == str(2 * GIB), unit
        assert f"{stale}/hyperhive-limits.conf" not in unit["DropInPaths"]
    finally:
        boxed.box.run(["/bin/rm", "-rf", stale])
        boxed.box.systemctl("daemon-reload")


def test_a_crash_is_restarted_by_systemd_and_hivegen_stop_keeps_it_down(
    boxed: BoxedHive,
) -> None:
    # container@.service has Restart=on-failure. RestartSec is raised (a drop-in of the
    # test's) so that the auto-restart state lasts long enough to be looked at.
    extra = "/run/systemd/system/container@h-bob.service.d"
    boxed.box.run(
        [
            "/bin/sh",
            "-c",
            f"mkdir -p {extra} && printf '[Service]\\nRestartSec=30s\\n' "
            f"> {extra}/zz-restart-sec.conf",
        ]
    )
    boxed.box.systemctl("daemon-reload")
    try:
        pid = boxed.show("h-bob", props="MainPID")["h-bob"]["MainPID"]
        boxed.box.run(["/bin/sh", "-c", f"kill -9 {pid}"])
        for _ in range(100):
            unit = boxed.show("h-bob", props="ActiveState,SubState")["h-bob"]
            if (unit["ActiveState"], unit["SubState"]) == ("activating", "auto-restart"):
                break
            time.sleep(0.1)
        assert (unit["ActiveState"], unit["SubState"]) == ("activating", "auto-restart")
        assert boxed.status()["h-bob"]["state"] == "restarting"
        boxed.hivegen("stop", "bob")
        assert boxed.is_active("h-bob") == "inactive"  # no restart is pending any more
        assert boxed.status()["h-bob"]["state"] == "stopped"
    finally:
        boxed.box.run(["/bin/rm", "-rf", extra])
        boxed.box.systemctl("daemon-reload")
        boxed.hivegen("start", "bob")
    assert boxed.is_active("h-bob") == "active"


def test_sub_agents_see_their_own_directories_and_nothing_else(boxed: BoxedHive) -> None:
    state, run = boxed.dirs.state, boxed.dirs.runtime_root
    seed_secrets(boxed)
    for name in AGENTS:
        container = CONTAINERS[name]
        # Its notes are still mounted at /agents/<n>/state; they live in notes/<n>.
        assert boxed.bind_mounts(container) == {
            "/run/hive": (str(run / "agents" / name), "rw"),
            "/root/.claude": (str(state / "credentials" / name), "rw"),
            f"/agents/{name}/state": (str(state / "notes" / name), "rw"),
            "/shared": (str(state / "shared"), "rw"),
        }
        host_side = {
            "/run/hive": run / "agents" / name,
            "/root/.claude": state / "credentials" / name,
            f"/agents/{name}/state": state / "notes" / name,
            "/shared": state / "shared",
        }
        # Host → container, and container → host, through each bind.
        for inside, outside in host_side.items():
            (outside / f"from-host-{name}").write_text(f"host wrote {inside}\n")
        script = "; ".join(
            f"cat {inside}/from-host-{name} && echo '{name} wrote {inside}' > {inside}/from-{name}"
            for inside in host_side
        )
        out = boxed.in_container(container, script)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == [f"host wrote {inside}" for inside in host_side]
        for inside, outside in host_side.items():
            assert (outside / f"from-{name}").read_text() == f"{name} wrote {inside}\n"

        # Its own credentials and notes; no one else's, anywhere in the container.
        out = boxed.in_container(container, "cat /root/.claude/token; ls /agents; ls /")
        lines = out.stdout.splitlines()
        assert lines[:2] == [f"secret-{name}", name]
        assert "notes" not in lines[2:]  # only the manager has /notes
        assert boxed.find_text(container, f"secret-{name}") == ["/root/.claude/token"]
        assert boxed.find_text(container, f"note-{name}") == [f"/agents/{name}/state/note"]
        for other in CONTAINERS:
            if other != name:
                assert boxed.find_text(container, f"secret-{other}") == []
                assert boxed.find_text(container, f"note-{other}") == []


def test_the_manager_sees_every_proposed_repo_and_reads_applied_meta_and_notes(
    boxed: BoxedHive,
) -> None:
    state = boxed.dirs.state
    seed_secrets(boxed)
    assert boxed.bind_mounts(MANAGER) == expected_binds(boxed, MANAGER, manager=True)
    # /agents is read-write: a change to alice's proposed repo reaches the host. No
    # agent's notes are in it any more (no bind source lies inside a writable bind).
    out = boxed.in_container(
        MANAGER,
        "echo 'from the manager' > /agents/alice/config/NOTES && ls /agents && ls -a /agents/alice",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [*sorted(CONTAINERS), ".", "..", "config"]
    assert (state / "agents/alice/config/NOTES").read_text() == "from the manager\n"

    # Its own notes read-write at /state, both ways.
    out = boxed.in_container(
        MANAGER, "cat /state/note && echo 'the manager wrote /state' > /state/from-manager"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"note-{MANAGER}\n"
    assert (state / "notes" / MANAGER / "from-manager").read_text() == "the manager wrote /state\n"

    # Every agent's notes at /notes, read-only: what an agent writes, the manager reads
    # at once; the manager cannot write any of them, not even its own.
    out = boxed.in_container(MANAGER, "ls /notes")
    assert out.stdout.split() == sorted(CONTAINERS)
    out = boxed.in_container("h-alice", "echo 'alice wrote it' > /agents/alice/state/for-manager")
    assert out.returncode == 0, out.stderr
    out = boxed.in_container(MANAGER, "cat /notes/alice/for-manager")
    assert out.stdout == "alice wrote it\n", out.stderr
    for name in CONTAINERS:
        out = boxed.in_container(MANAGER, f"echo x > /notes/{name}/probe")
        assert out.returncode != 0
        assert "Read-only file system" in out.stderr, out.stderr
        assert not (state / "notes" / name / "probe").exists()
    out = boxed.in_container(MANAGER, "mkdir /notes/mallory")
    assert out.returncode != 0
    assert "Read-only file system" in out.stderr, out.stderr

    # /applied and /meta are read-only, and readable.
    for directory, readable in (
        ("/applied", "/applied/alice/agent.nix"),
        ("/meta", "/meta/flake.nix"),
    ):
        out = boxed.in_container(MANAGER, f"echo x > {directory}/probe")
        assert out.returncode != 0
        assert "Read-only file system" in out.stderr, out.stderr
        assert not (state / directory.lstrip("/") / "probe").exists()
        out = boxed.in_container(MANAGER, f"cat {readable} > /dev/null")
        assert out.returncode == 0, out.stderr

    # Its own credentials; no agent's, anywhere (they are not under /agents). It does
    # see every agent's notes, through /notes only; its own also at /state.
    out = boxed.in_container(MANAGER, "cat /root/.claude/token")
    assert out.stdout == f"secret-{MANAGER}\n"
    assert boxed.find_text(MANAGER, f"secret-{MANAGER}") == ["/root/.claude/token"]
    assert boxed.find_text(MANAGER, f"note-{MANAGER}") == [f"/notes/{MANAGER}/note", "/state/note"]
    for name in AGENTS:
        assert boxed.find_text(MANAGER, f"secret-{name}") == []
        assert boxed.find_text(MANAGER, f"note-{name}") == [f"/notes/{name}/note"]


def test_stop_start_rebuild_and_destroy(boxed: BoxedHive, hyperhive_flake: str) -> None:
    unit = "container@h-alice.service"

    # stop: the unit ends inactive (nspawn's SIGTERM → the init exits 0), not failed.
    boxed.hivegen("stop", "alice")
    assert boxed.is_active("h-alice") == "inactive"
    assert "h-alice" not in boxed.machines()
    assert assert_status_agrees(boxed)["h-alice"]["state"] == "stopped"

    # start: active again, with a new leader.
    boxed.hivegen("start", "alice")
    assert boxed.is_active("h-alice") == "active"
    assert assert_status_agrees(boxed)["h-alice"]["state"] == "running"

    # rebuild, nothing changed: reloaded (nixos-container update → systemctl reload),
    # not restarted: the same leader and main pid.
    leader = boxed.leader("h-alice")
    main_pid = boxed.show("h-alice", props="MainPID")["h-alice"]["MainPID"]
    reloads = boxed.reloads("h-alice")
    [outcome] = boxed.document("rebuild", "alice")["agents"]
    steps = outcome["steps"]
    assert not any("restarted" in step for step in steps), steps
    assert boxed.leader("h-alice") == leader
    assert boxed.show("h-alice", props="MainPID")["h-alice"]["MainPID"] == main_pid
    assert boxed.reloads("h-alice") == reloads + 1
    assert_status_agrees(boxed)

    # rebuild after a limit change: new drop-in, daemon-reload, restart; systemd has it.
    changed = boxed.dirs.top / "hive-4g.toml"
    changed.write_text(
        boxed.dirs.config_text(hyperhive_flake, f'{LIMITS}[agents.alice]\nmemory_max = "4G"\n')
    )
    [outcome] = boxed.document("rebuild", "alice", config=changed)["agents"]
    steps = outcome["steps"]
    assert any("restarted" in step for step in steps), steps
    assert boxed.leader("h-alice") != leader
    limits = boxed.show("h-alice", props="MemoryMax,CPUQuotaPerSecUSec,NeedDaemonReload")
    assert limits["h-alice"] == {
        "Id": unit,
        "MemoryMax": str(4 * GIB),
        "CPUQuotaPerSecUSec": "500ms",
        "NeedDaemonReload": "no",
    }
    assert_status_agrees(boxed)

    # destroy: the unit is gone from systemd and the machine from machined; the others run.
    boxed.hivegen("destroy", "alice", config=changed)
    assert boxed.is_active("h-alice") == "inactive"
    # Gone once systemd garbage-collects the stopped unit (the `systemctl show` calls of
    # destroy load it again for a moment): asked a few times, not raced.
    for _ in range(50):
        listed = boxed.box.systemctl("list-units", "--all", "--plain", "--no-legend", unit)
        if not listed.stdout.strip():
            break
        time.sleep(0.1)
    assert listed.stdout.strip() == ""
    assert boxed.show("h-alice", props="DropInPaths")["h-alice"]["DropInPaths"] == ""
    assert "h-alice" not in boxed.machines()
    assert not (boxed.dirs.containers / "h-alice").exists()
    rows = assert_status_agrees(boxed)
    assert rows["h-alice"]["state"] == "tombstone"
    for container in (MANAGER, "h-bob"):
        assert boxed.is_active(container) == "active"
