"""`hivegen serve` with real containers: each sees its own socket at /run/hive/hive.sock
and nothing else of the server's, and a request there is that container's, whatever it
says. The containers share the host's network, so they reach a TCP dashboard too: the
token keeps them out, and nothing they send there approves anything.

hivegen serve runs on the host, as in production; requests are made as each container
makes them: through its own root (`/proc/<its init>/root/run/hive/hive.sock`, which is
the path the container resolves, in its mount namespace) and, for TCP, with the
container's busybox wget.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import commit_dir
from tests.hostbox.boxed import BoxedHive, boxed_hive
from tests.serve_helpers import Server, request, serving

pytestmark = [pytest.mark.hostbox, pytest.mark.xdist_group("host")]

MANAGER = "hm1nd"
CONTAINERS = {MANAGER: MANAGER, "alice": "h-alice", "bob": "h-bob"}


@pytest.fixture(scope="module")
def boxed(
    hostbox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str
) -> Iterator[BoxedHive]:
    top = tmp_path_factory.mktemp("hostbox-serve")
    with boxed_hive(hostbox_rootfs, top, hyperhive_flake) as hive:
        hive.hivegen("init")
        for name in CONTAINERS:
            hive.hivegen("spawn", name)
        yield hive


@pytest.fixture(scope="module")
def server(boxed: BoxedHive) -> Iterator[Server]:
    with serving(boxed.config, "--listen", "127.0.0.1:0", env=boxed.env) as running:
        yield running


def host_pid(boxed: BoxedHive, container: str) -> int:
    """The host's pid of the container's init (machinectl gives the box's)."""
    leader = boxed.leader(container)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        found = re.search(r"^NSpid:\s+(.*)$", status, re.MULTILINE)
        if found and found.group(1).split()[-2:] == [str(leader), "1"]:
            return int(entry.name)
    raise AssertionError(f"no host process for {container}'s init (box pid {leader})")


def inside(boxed: BoxedHive, container: str) -> Path:
    """/run/hive/hive.sock as `container` resolves it."""
    return Path(f"/proc/{host_pid(boxed, container)}/root/run/hive/hive.sock")


def test_each_container_sees_only_its_own_socket(boxed: BoxedHive, server: Server) -> None:
    for name, container in CONTAINERS.items():
        out = boxed.in_container(
            container,
            "find / \\( -path /proc -o -path /sys -o -path /dev \\) -prune -o -type s -print",
        )
        assert out.returncode == 0, out.stderr
        sockets = sorted(out.stdout.split())
        # The server's only socket in there is its own; nspawn's own (/run/host, /run/systemd)
        # are the container manager's, not hivegen's.
        hivegens = [s for s in sockets if not s.startswith(("/run/host/", "/run/systemd/"))]
        assert hivegens == ["/run/hive/hive.sock"], (name, sockets)
        reply = request(inside(boxed, container), "GET", "/")
        assert reply.status == 200
        body = reply.json()
        assert isinstance(body, dict)
        assert body["agent"] == name


def test_a_request_is_the_containers_whatever_it_says(boxed: BoxedHive, server: Server) -> None:
    alice, manager = inside(boxed, "h-alice"), inside(boxed, MANAGER)
    for body in ({"agent": "bob"}, {"agent": "alice"}):
        assert request(alice, "POST", "/propose", body).status == 403
    assert request(alice, "POST", "/propose", {"agent": "bob", "as": MANAGER}).status == 403
    assert request(alice, "GET", "/status?agent=bob").status == 403
    own = request(alice, "GET", "/status").json()
    assert isinstance(own, list)
    assert [(s["name"], s["state"]) for s in own] == [("alice", "running")]
    # The manager's socket proposes, for real; no socket approves.
    proposed = boxed.dirs.state / "agents/bob/config"
    (proposed / "agent.nix").write_text('{ ... }: { environment.variables.GREETING = "hi"; }\n')
    commit_dir(proposed, "change")  # as the manager would, in its /agents/bob/config
    made = request(manager, "POST", "/propose", {"agent": "bob"})
    assert made.status == 201, made.body
    proposal = made.json()
    assert isinstance(proposal, dict)
    for path in (alice, manager):
        assert request(path, "POST", f"/proposals/{proposal['id']}/approve").status == 403
    pending = boxed.document("pending")["proposals"]
    assert [(p["id"], p["agent"], p["status"]) for p in pending] == [
        (proposal["id"], "bob", "pending")
    ]


def test_the_tcp_dashboard_keeps_containers_out(boxed: BoxedHive, server: Server) -> None:
    url = server.url.rstrip("/")
    pending = boxed.document("pending")["proposals"]
    target = pending[0]["id"] if pending else 1
    script = (
        f'wget -q -O - {url}/ ; echo "get=$?"; '
        f"wget -q -O - --post-data 'csrf=x&token=' {url}/proposals/{target}/approve; "
        'echo "post=$?"'
    )
    out = boxed.in_container("h-alice", script)
    # Reached (the network is the host's), but the page is the login page and the
    # approve is refused (wget exits 1 on an HTTP error).
    assert "Log in" in out.stdout
    assert "get=0" in out.stdout
    assert "post=1" in out.stdout
    assert boxed.document("pending")["proposals"] == pending
