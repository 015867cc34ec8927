"""A rollout whose new system's init exits at once, against a real systemd: hivegen's
health check sees it and puts the container back on the system it ran.

The base flake gives each system an init and a switch-to-configuration
(`system.files`), so that the box's containers boot their system profile's init as
NixOS's do (box/container-start) and a reload runs the new system's
switch-to-configuration (box/container-reload). Version 1's init loops; its
switch-to-configuration makes the init re-execute itself from the profile, as NixOS's
re-executes systemd when the new system's differs. Version 2's init exits 1 at once:
after the switch, the container's PID 1 is gone and systemd restarts (Restart=on-failure)
and fails the unit. Its own box and its own base flake.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import commit_dir, own_base
from tests.hostbox.boxed import BoxedHive, assert_status_agrees, boxed_hive, document_of
from tests.hostbox.harness import INNER_INIT

# One xdist group with test_containment, which watches the host for stray writes.
pytestmark = [pytest.mark.hostbox, pytest.mark.xdist_group("host")]

MANAGER = "hm1nd"
# The box's own container init, which also re-executes, as systemd does on
# daemon-reexec: HUP execs the init of the system the profile is on now.
GOOD_INIT = INNER_INIT.replace(
    "trap 'exit 0' TERM INT\n",
    "trap 'exec /nix/var/nix/profiles/system/init' HUP\ntrap 'exit 0' TERM INT\n",
)
BAD_INIT = "#!/usr/bin/busybox sh\nexit 1\n"
SWITCH = "#!/usr/bin/busybox sh\n/usr/bin/busybox kill -HUP 1\n"
# The port is not checked: the box's containers serve nothing; settle long enough for
# systemd to have restarted the failed init at least once.
HEALTH = "[health]\nsettle = 2\nport_timeout = 0\n"


def release(repo: Path, init: str) -> None:
    """A new version of the base flake whose systems have `init` (in files.nix, which
    every system's base module imports)."""
    (repo / "files.nix").write_text(
        f"{{ system.files.init = {json.dumps(init)};\n"
        f'  system.files."bin/switch-to-configuration" = {json.dumps(SWITCH)}; }}\n'
    )
    flake = repo / "flake.nix"
    text = flake.read_text()
    marker = '        networking.hostName = "agent";\n'
    if "./files.nix" not in text:
        assert marker in text
        flake.write_text(text.replace(marker, "        imports = [ ./files.nix ];\n" + marker, 1))
    commit_dir(repo)


@pytest.fixture(scope="module")
def boxed(
    hostbox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BoxedHive, Path]]:
    top = tmp_path_factory.mktemp("hostbox-health")
    url, repo = own_base(top)
    release(repo, GOOD_INIT)
    with boxed_hive(hostbox_rootfs, top, url, HEALTH, nixos_profiles=True) as hive:
        hive.hivegen("init")
        for name in (MANAGER, "alice"):
            hive.hivegen("spawn", name)
        yield hive, repo


def init_of(boxed: BoxedHive, container: str) -> str:
    """The path the container's PID 1 runs, as its /proc/1/cmdline says."""
    out = boxed.in_container(container, "cat /proc/1/cmdline")
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\0")[2]  # busybox, sh, the script


def test_containers_boot_their_profiles_init(boxed: tuple[BoxedHive, Path]) -> None:
    hive, _ = boxed
    rows = assert_status_agrees(hive)
    assert {c: r["state"] for c, r in rows.items()} == {MANAGER: "running", "h-alice": "running"}
    for container in (MANAGER, "h-alice"):
        assert init_of(hive, container) == "/nix/var/nix/profiles/system/init"
        system = (hive.dirs.profiles / container / "system").resolve(strict=True)
        assert (system / "init").read_text() == GOOD_INIT


def test_an_init_that_exits_at_once_is_put_back_on_the_system_it_ran(
    boxed: tuple[BoxedHive, Path],
) -> None:
    hive, repo = boxed
    profile = hive.dirs.profiles / "h-alice" / "system"
    before = profile.resolve(strict=True)
    manager_before = (hive.dirs.profiles / MANAGER / "system").resolve(strict=True)
    pid_before = int(hive.show("h-alice", props="MainPID")["h-alice"]["MainPID"])
    release(repo, BAD_INIT)

    result = hive.run_hivegen("upgrade", "--canary", "alice", "--json")

    assert result.returncode == 1, (result.stdout, result.stderr, hive.box.journal())
    report = document_of(result.stdout)
    phases = {step["name"]: step["phase"] for step in report["agents"]}
    assert phases == {"alice": "rolled back", MANAGER: "skipped"}, report
    # The new system was really switched to and really failed: systemd saw its init go.
    journal = hive.box.journal(400)
    assert "container@h-alice.service: Main process exited" in journal, journal
    # Back on the system it ran, booted from it, with a new init process.
    assert profile.resolve(strict=True) == before
    assert (before / "init").read_text() == GOOD_INIT
    assert hive.is_active("h-alice") == "active"
    assert init_of(hive, "h-alice") == "/nix/var/nix/profiles/system/init"
    pid_after = int(hive.show("h-alice", props="MainPID")["h-alice"]["MainPID"])
    assert pid_after not in (0, pid_before)
    # The canary stopped the rollout: the manager was not touched.
    assert (hive.dirs.profiles / MANAGER / "system").resolve(strict=True) == manager_before
    # The reason is kept in the applied repo, and status agrees with systemd.
    applied = hive.dirs.state / "applied" / "alice"
    tags = subprocess.run(
        [
            "git",
            "-C",
            str(applied),
            "tag",
            "-l",
            "unhealthy/*",
            "--format=%(refname:short) %(contents:subject)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(tags) == 1, tags
    assert tags[0].startswith("unhealthy/1 "), tags
    assert "did not come up" in tags[0], tags
    assert_status_agrees(hive)
