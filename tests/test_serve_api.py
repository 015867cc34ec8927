"""`hivegen serve`'s container sockets, against a real server process on the simulated
host: identity is the socket, limits hold, the CLI and the server see each other's work,
and a socket outlives what a container or a restart does to its runtime dir."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hivegen.config import load_config
from hivegen.serve import limits
from tests.conftest import commit_dir
from tests.serve_helpers import Reply, Server, request, serving, spawned_hive

GOOD = '{ ... }: { environment.variables.GREETING = "hello"; }\n'


def hivegen(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "hivegen", "--config", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def config(tmp_path: Path, hyperhive_flake: str) -> Path:
    return spawned_hive(tmp_path, hyperhive_flake)


@pytest.fixture
def server(config: Path) -> Iterator[Server]:
    with serving(config) as running:
        yield running


def sock(config: Path, name: str) -> Path:
    hive = load_config(config)
    return hive.runtime_dir(hive.agent(name)) / "hive.sock"


def commit(config: Path, agent: str, text: str = GOOD, message: str = "change") -> str:
    proposed = load_config(config).layout.proposed(agent)
    (proposed / "agent.nix").write_text(text)
    return commit_dir(proposed, message)


def error_of(reply: Reply) -> str:
    body = reply.json()
    assert isinstance(body, dict)
    return str(body["error"])


def test_identity_is_the_socket(config: Path, server: Server) -> None:
    alice, manager = sock(config, "alice"), sock(config, "hm1nd")
    sha = commit(config, "bob")

    assert request(alice, "GET", "/").json() == {
        "agent": "alice",
        "role": "agent",
        "endpoints": ["GET /status", "GET /proposals", "GET /proposals/ID?wait=SECONDS"],
    }
    # A sub-agent proposes nothing, for no one, whatever its body claims.
    for body in ({"agent": "bob", "commit": sha}, {"agent": "alice"}):
        reply = request(alice, "POST", "/propose", body)
        assert reply.status == 403
        assert error_of(reply) == "propose is the manager's: alice's socket cannot ask it"
    spoof = request(manager, "POST", "/propose", {"agent": "bob", "from": "operator"})
    assert spoof.status == 400
    assert error_of(spoof).startswith("unknown field 'from'")
    assert request(alice, "POST", "/request-spawn", {"name": "carol"}).status == 403
    # Only its own status and proposals.
    own = request(alice, "GET", "/status").json()
    assert isinstance(own, list)
    assert [s["name"] for s in own] == ["alice"]
    assert request(alice, "GET", "/status?agent=bob").status == 403
    assert request(alice, "GET", "/proposals?agent=bob").status == 403

    # The manager proposes bob's commit: it is pending, for bob, as `hivegen pending` says.
    made = request(manager, "POST", "/propose", {"agent": "bob", "commit": sha[:12]})
    assert made.status == 201, made.body
    proposal = made.json()
    assert isinstance(proposal, dict)
    assert (proposal["agent"], proposal["sha"], proposal["status"]) == ("bob", sha, "pending")
    assert proposal["subject"] == "change"
    pending = json.loads(hivegen(config, "pending", "--json").stdout)["proposals"]
    assert [(p["id"], p["agent"], p["sha"]) for p in pending] == [(proposal["id"], "bob", sha)]

    # Alice cannot see bob's proposal, not even that it exists; nor approve anything.
    assert request(alice, "GET", f"/proposals/{proposal['id']}").status == 404
    assert request(alice, "GET", "/proposals").json() == []
    for target in ("/approve", f"/proposals/{proposal['id']}/approve", "/deny", "/rollback"):
        for path in (alice, manager):
            reply = request(path, "POST", target, {"id": proposal["id"]})
            assert reply.status == 403, (path, target)
            assert "the operator's decision" in error_of(reply)
    assert json.loads(hivegen(config, "pending", "--json").stdout)["proposals"][0]["status"] == (
        "pending"
    )
    # Bob sees his own.
    bobs = request(sock(config, "bob"), "GET", f"/proposals/{proposal['id']}").json()
    assert isinstance(bobs, dict)
    assert bobs["status"] == "pending"


def test_the_server_sees_cli_decisions_and_a_wait_ends_with_one(
    config: Path, server: Server
) -> None:
    manager = sock(config, "hm1nd")
    commit(config, "alice")
    made = request(manager, "POST", "/propose", {"agent": "alice"}).json()
    assert isinstance(made, dict)
    waited: list[Reply] = []
    started = time.monotonic()
    waiter = threading.Thread(
        target=lambda: waited.append(
            request(manager, "GET", f"/proposals/{made['id']}?wait=60", timeout=90)
        )
    )
    waiter.start()
    time.sleep(1)
    assert waited == []  # held open: nothing decided yet
    hivegen(config, "approve", str(made["id"]))
    waiter.join(60)
    assert time.monotonic() - started < 30
    decided = waited[0].json()
    assert isinstance(decided, dict)
    assert decided["status"] == "deployed"
    listed = request(manager, "GET", "/proposals?agent=alice").json()
    assert isinstance(listed, list)
    assert [(p["id"], p["status"]) for p in listed] == [(made["id"], "deployed")]
    status = request(sock(config, "alice"), "GET", "/status").json()
    assert isinstance(status, list)
    assert status[0]["deployed_tag"] == f"deployed/{made['id']}"


def test_limits(config: Path, server: Server) -> None:
    manager = sock(config, "hm1nd")
    big = request(manager, "POST", "/propose", raw=b'{"agent": "' + b"a" * limits.MAX_BODY + b'"}')
    assert big.status == 413
    assert "too large" in error_of(big)
    assert request(manager, "POST", "/propose", raw=b"[1, 2]").status == 400
    assert request(manager, "POST", "/propose", raw=b"\xff").status == 400
    assert (
        request(manager, "POST", "/propose", {"agent": "alice", "commit": "--upload-pack=x"}).status
        == 400
    )

    # Pending proposals per agent are capped.
    made = []
    for index in range(limits.MAX_PENDING_PER_AGENT):
        commit(config, "alice", GOOD.replace("hello", f"hello {index}"), f"change {index}")
        reply = request(manager, "POST", "/propose", {"agent": "alice"})
        assert reply.status == 201, reply.body
        made.append(reply)
    commit(config, "alice", GOOD.replace("hello", "one too many"))
    over = request(manager, "POST", "/propose", {"agent": "alice"})
    assert over.status == 429
    assert error_of(over) == (
        f"alice already has {limits.MAX_PENDING_PER_AGENT} proposals waiting for the operator "
        f"(at most {limits.MAX_PENDING_PER_AGENT})"
    )

    # The rate limit is per container: bob's burst does not slow the manager down.
    bob = sock(config, "bob")
    statuses = [request(bob, "GET", "/").status for _ in range(limits.BURST + 10)]
    assert statuses.count(429) >= 5
    assert statuses[: limits.BURST - 5] == [200] * (limits.BURST - 5)
    assert request(manager, "GET", "/").status == 200
    limited = request(bob, "GET", "/")
    assert limited.status == 429
    assert "too many requests from bob" in error_of(limited)


def test_spawn_requests(config: Path, server: Server) -> None:
    manager = sock(config, "hm1nd")
    queued = request(manager, "POST", "/request-spawn", {"name": "carol"})
    assert queued.status == 202
    for name, problem in (("carol", "already queued"), ("alice", "already exists"), ("Bad!", "")):
        refused = request(manager, "POST", "/request-spawn", {"name": name})
        assert refused.status == 400, name
        assert problem in error_of(refused)
    request(manager, "POST", "/request-spawn", {"name": "dave"})
    shown = hivegen(config, "pending").stdout
    assert "spawn requests from the manager" in shown
    assert "carol" in shown
    assert "dave" in shown
    assert [
        r["name"]
        for r in json.loads(hivegen(config, "pending", "--json", "--spawn-requests").stdout)[
            "spawn_requests"
        ]
    ] == ["carol", "dave"]

    hivegen(config, "spawn", "carol")
    hivegen(config, "dismiss", "dave", "--note", "one is enough")
    answers = request(manager, "GET", "/spawn-requests").json()
    assert isinstance(answers, list)
    assert [(a["name"], a["state"], a["note"]) for a in answers] == [
        ("carol", "spawned", ""),
        ("dave", "dismissed", "one is enough"),
    ]
    assert hivegen(config, "dismiss", "dave", check=False).returncode == 2
    # The new agent gets its socket without a server restart.
    server.wait_for("listening for carol on")
    assert request(sock(config, "carol"), "GET", "/").status == 200


def test_a_socket_outlives_restarts_and_whatever_the_container_does(
    config: Path, server: Server
) -> None:
    alice = sock(config, "alice")
    hivegen(config, "restart", "alice")
    assert request(alice, "GET", "/").status == 200
    # The container removes it, or puts a symlink in its place: hivegen makes its own
    # socket again, through neither.
    target = alice.parent.parent / "target"
    target.write_text("not yours\n")
    target.chmod(0o600)
    alice.unlink()
    alice.symlink_to(target)
    server.wait_for("socket of alice was removed or replaced", timeout=10)
    server.wait_for("listening for alice on", timeout=10)
    deadline = time.monotonic() + 10
    while not stat.S_ISSOCK(os.lstat(alice).st_mode) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stat.S_ISSOCK(os.lstat(alice).st_mode)
    assert stat.S_IMODE(os.lstat(alice).st_mode) == 0o666
    assert (target.read_text(), stat.S_IMODE(target.stat().st_mode)) == ("not yours\n", 0o600)
    assert request(alice, "GET", "/").json() == request(alice, "GET", "/").json()
    # A reboot empties /run: the runtime dir comes back at the next start, and so does
    # the socket.
    from hivegen import simhost

    hive = load_config(config)
    simhost.reboot(hive.host.simulated_root, (hive.host.runtime_root,))
    hivegen(config, "reconcile")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if request(alice, "GET", "/").status == 200:
                break
        except OSError:
            time.sleep(0.2)
    assert request(alice, "GET", "/").status == 200


def test_sockets_modes_and_a_clean_stop(config: Path) -> None:
    hive = load_config(config)
    with serving(config) as server:
        dashboard = hive.host.runtime_root.parent / "hivegen" / "dashboard.sock"
        assert stat.S_IMODE(dashboard.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(dashboard).st_mode) == 0o600
        assert request(dashboard, "GET", "/", headers={"Host": "localhost"}).status == 200
        assert request(dashboard, "GET", "/", headers={"Host": "evil.example"}).status == 421
        staging = hive.host.runtime_root / ".hivegen-serve"
        assert stat.S_IMODE(staging.stat().st_mode) == 0o700
        # Nothing but the lock that keeps a second serve of this hive out.
        assert [p.name for p in staging.iterdir()] == ["serve.lock"]
        assert stat.S_IMODE(os.lstat(staging / "serve.lock").st_mode) == 0o600
        assert server.stop() == 0
    for name in ("hm1nd", "alice", "bob"):
        assert not sock(config, name).exists()
    assert not dashboard.exists()
    assert "stopped (terminated)" in server.lines[-1]


def mcp_session(socket: Path, messages: list[dict[str, object]]) -> list[dict[str, object]]:
    """`hivegen mcp --socket SOCKET` fed `messages` (one per line); its replies."""
    lines = "".join(json.dumps(m) + "\n" for m in messages) + "not json\n"
    result = subprocess.run(
        [sys.executable, "-m", "hivegen", "mcp", "--socket", str(socket)],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_mcp_forwards_each_tool_call_to_the_socket(config: Path, server: Server) -> None:
    commit(config, "alice")
    call = {"jsonrpc": "2.0", "method": "tools/call"}
    replies = mcp_session(
        sock(config, "hm1nd"),
        [
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            {**call, "id": 3, "params": {"name": "hive_propose", "arguments": {"agent": "alice"}}},
            {**call, "id": 4, "params": {"name": "hive_propose", "arguments": {"who": "x"}}},
            {**call, "id": 5, "params": {"name": "hive_proposal", "arguments": {"id": 1}}},
        ],
    )
    assert [r.get("id") for r in replies] == [1, 2, 3, 4, 5, None]
    assert replies[0]["result"]["serverInfo"]["name"] == "hivegen"  # type: ignore[index]
    names = [t["name"] for t in replies[1]["result"]["tools"]]  # type: ignore[index]
    assert names == [
        "hive_status",
        "hive_proposals",
        "hive_proposal",
        "hive_propose",
        "hive_request_spawn",
        "hive_spawn_requests",
    ]
    made = replies[2]["result"]
    assert isinstance(made, dict)
    assert made["isError"] is False
    assert json.loads(made["content"][0]["text"])["status"] == "pending"
    assert replies[3]["error"] == {"code": -32602, "message": "unknown argument 'who'"}
    assert json.loads(replies[4]["result"]["content"][0]["text"])["agent"] == "alice"  # type: ignore[index]
    assert replies[5]["error"]["code"] == -32700  # type: ignore[index]
    [made_by_mcp] = json.loads(hivegen(config, "pending", "--json").stdout)["proposals"]
    assert made_by_mcp["agent"] == "alice"

    # A sub-agent is offered only what its socket takes, and asking for more is refused
    # by the server, not only by the tool list.
    alice = mcp_session(
        sock(config, "alice"),
        [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            {**call, "id": 2, "params": {"name": "hive_propose", "arguments": {"agent": "bob"}}},
            {**call, "id": 3, "params": {"name": "hive_status", "arguments": {"agent": "bob"}}},
        ],
    )
    listed = [t["name"] for t in alice[0]["result"]["tools"]]  # type: ignore[index]
    assert listed == ["hive_status", "hive_proposals", "hive_proposal"]
    assert alice[1]["error"]["message"] == "no tool 'hive_propose' on this socket"  # type: ignore[index]
    refused = alice[2]["result"]
    assert isinstance(refused, dict)
    assert refused["isError"] is True
    assert "alice may only see its own status" in refused["content"][0]["text"]
