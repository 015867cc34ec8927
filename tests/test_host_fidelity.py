"""What nixos-container.pl and container@.service really do, and hivegen's answer to each
(issue "Real-host fidelity"), on the simulated host that keeps their contract."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from hivegen import nspawn, process
from hivegen.cli import main
from hivegen.config import load_config
from hivegen.errors import HivegenError
from hivegen.hive import Hive
from hivegen.proposals import BuildFailed, Proposals
from hivegen.simhost.state import parse_env_file
from hivegen.status import AgentState
from hivegen.store import ProposalStatus
from tests.conftest import commit_dir, sim_config


@pytest.fixture
def hive(tmp_path: Path, hyperhive_flake: str) -> Hive:
    hive = Hive(load_config(sim_config(tmp_path, hyperhive_flake)))
    hive.spawn("alice")
    return hive


def log(hive: Hive) -> list[list[str]]:
    path = hive.config.host.simulated_root / "log"
    return [shlex.split(line) for line in path.read_text().splitlines()]


def state(hive: Hive, name: str) -> AgentState:
    return {s.name: s.state for s in hive.status()}[name]


def without_flakes() -> str:
    current = os.environ["NIX_CONFIG"]
    return "\n".join(x for x in current.splitlines() if "experimental-features" not in x)


def test_flakes_are_enabled_for_nixos_containers_own_build(
    tmp_path: Path, hyperhive_flake: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host whose nix.conf lacks `nix-command flakes`: the script's plain `nix build`
    # of `<flake>#nixosConfigurations…` fails unless hivegen enables them.
    monkeypatch.setenv("NIX_CONFIG", without_flakes())
    hive = Hive(load_config(sim_config(tmp_path, hyperhive_flake)))
    env = {k: v for k, v in hive.host.env.items() if v is not None}
    assert "extra-experimental-features = nix-command flakes" in env["NIX_CONFIG"]
    bare = {**os.environ, **env, "NIX_CONFIG": without_flakes()}
    out = subprocess.run(
        ["nixos-container", "create", "h-probe", "--flake", f"{hyperhive_flake}#agent-base"],
        env=bare,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "experimental Nix feature 'nix-command' is disabled" in out.stderr
    hive.spawn("alice")
    assert state(hive, "alice") is AgentState.RUNNING


def test_hivegen_owns_copy_resolv_conf_and_the_mac_address(hive: Hive) -> None:
    path = nspawn.conf_path(hive.config, "h-alice")
    conf = parse_env_file(path.read_text())
    assert conf["COPY_RESOLV_CONF"] == "1"
    assert conf["LOCAL_MAC_ADDRESS"] == ""  # a MAC would add --network-veth
    # A conf as `create` leaves it does not start under the strict start script: hivegen
    # writes the key before every start.
    hive.stop("alice")
    text = path.read_text()
    path.write_text("".join(f"{x}\n" for x in text.splitlines() if "COPY_RESOLV_CONF" not in x))
    hive.start("alice")
    assert state(hive, "alice") is AgentState.RUNNING
    assert "COPY_RESOLV_CONF=1" in path.read_text()


def test_start_builds_a_missing_profile_with_the_agents_attribute(hive: Hive) -> None:
    # A create that died mid-build leaves a conf with FLAKE=<meta> and no profile; the
    # start script would then build attr "container", which the meta flake lacks.
    hive.stop("alice")
    profile = hive.host.profile("h-alice")
    profile.unlink()
    before = len(log(hive))
    hive.start("alice")
    calls = [c for c in log(hive)[before:] if c[0] == "nixos-container"]
    update = ["nixos-container", "update", "h-alice", "--flake", f"{hive.layout.meta}#alice"]
    assert calls[0] == update
    assert ["nixos-container", "update", "h-alice"] not in calls  # the script's own
    assert state(hive, "alice") is AgentState.RUNNING


def test_destroy_stops_a_running_container_first(hive: Hive) -> None:
    before = len(log(hive))
    hive.destroy("alice")
    calls = [c for c in log(hive)[before:] if c[0] == "nixos-container"]
    assert calls[:2] == [
        ["nixos-container", "stop", "h-alice"],
        ["nixos-container", "destroy", "h-alice"],
    ]


def test_a_declarative_container_is_never_managed(
    hive: Hive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # NixOS links a declarative container's conf from /etc/static: not writable.
    static = tmp_path / "etc-static" / "h-bob.conf"
    static.parent.mkdir()
    static.write_text('FLAKE=/etc/nixos\nCOPY_RESOLV_CONF=1\nEXTRA_NSPAWN_FLAGS=""\n')
    static.chmod(0o444)
    conf = nspawn.conf_path(hive.config, "h-bob")
    conf.symlink_to(static)
    assert hive.config.source is not None
    assert main(["--config", str(hive.config.source), "spawn", "bob"]) == 1
    assert "h-bob exists but hivegen did not create it" in capsys.readouterr().err
    rows = {s.container: s.state for s in hive.status()}
    assert rows["h-bob"] is AgentState.FOREIGN
    with pytest.raises(HivegenError, match="h-bob is declarative"):
        nspawn.write_conf(hive.config, hive.spec("bob"))
    assert conf.is_symlink()
    assert static.read_text().startswith("FLAKE=/etc/nixos\n")


def running_system(hive: Hive, container: str) -> str:
    out = process.run(
        ["systemctl", "show", f"container@{container}.service", "-p", "SimSystem"],
        process.RunOpts(env=hive.host.env),
    )
    return out.stdout.strip().split("=", 1)[1]


def test_an_update_that_fails_after_moving_the_profile_is_put_back(hive: Hive) -> None:
    # `update` builds, sets the profile, then reloads (`switch-to-configuration test`): a
    # reload that fails leaves the new system installed, and the next boot would run it.
    proposals = Proposals(hive)
    before = hive.host.system("h-alice")
    running = running_system(hive, "h-alice")
    assert running == str(before)
    proposed = hive.layout.proposed("alice")
    (proposed / "agent.nix").write_text(
        '{ ... }: { environment.variables.SIMHOST_ACTIVATION = "fail"; }\n'
    )
    proposal = proposals.propose("alice", commit_dir(proposed, "does not activate"))
    with pytest.raises(BuildFailed, match="failed to build or activate") as info:
        proposals.approve(proposal.id)
    assert "the old one is back in place" in info.value.message
    assert hive.host.system("h-alice") == before  # what it boots
    assert running_system(hive, "h-alice") == running  # what it runs
    assert proposals.store.get(proposal.id).status is ProposalStatus.FAILED
    assert state(hive, "alice") is AgentState.RUNNING
    updates = [c for c in log(hive) if c[:2] == ["nixos-container", "update"]]
    assert len(updates) >= 2  # the failed one, and the one that put the old system back


def memory_max(hive: Hive, container: str) -> str:
    out = process.run(
        ["systemctl", "show", f"container@{container}.service", "-p", "MemoryMax"],
        process.RunOpts(env=hive.host.env),
    )
    return out.stdout.strip().split("=", 1)[1]


def test_a_stale_reference_drop_in_is_masked_and_an_overriding_one_reported(
    hive: Hive, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = hive.config.host.simulated_root / "run/systemd/system/container@h-alice.service.d"
    run_dir.mkdir(parents=True)
    # The reference's file, same name as hivegen's: masked by hivegen's (system.control).
    (run_dir / "hyperhive-limits.conf").write_text("[Service]\nMemoryMax=16G\n")
    hive.restart("alice")
    assert memory_max(hive, "h-alice") == str(2 * 1024**3)
    assert hive.config.source is not None
    config = ["--config", str(hive.config.source)]
    assert main([*config, "doctor"]) == 0
    # Another program's drop-in that sorts after hivegen's wins: doctor names it.
    other = run_dir / "zz-limits.conf"
    other.write_text("[Service]\nCPUQuota=400%\n")
    capsys.readouterr()
    assert main([*config, "doctor", "--repair"]) == 3
    out = capsys.readouterr().out
    assert f"{other} sets a limit and sorts after hivegen's hyperhive-limits.conf" in out
    assert other.exists()  # never deleted: not hivegen's


def test_a_drop_in_under_the_old_name_is_replaced(hive: Hive) -> None:
    directory = nspawn.dropin_dir(hive.config, "h-alice")
    (directory / "hyperhive-limits.conf").rename(directory / "hivegen-limits.conf")
    assert nspawn.write_dropin(hive.config, hive.spec("alice"))
    assert sorted(p.name for p in directory.iterdir()) == [
        ".hivegen-reload-pending",
        "hyperhive-limits.conf",
    ]


def systemctl(hive: Hive, *args: str, env: dict[str, str] | None = None) -> process.CmdOut:
    return process.run(
        ["systemctl", *args],
        process.RunOpts(
            env={
                **hive.host.env,
                **(env or {}),
            },
            check=False,
        ),
    )


def test_a_crashed_container_restarting_by_itself_is_stopped_for_real(
    hive: Hive, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # container@.service has Restart=on-failure: after a crash it is `activating
    # (auto-restart)`, not active; a stop that skips it lets it come back.
    monkeypatch.setenv("HIVEGEN_SIMHOST_RESTART_SEC", "3600")
    assert systemctl(hive, "kill", "container@h-alice.service").ok
    assert state(hive, "alice") is AgentState.RESTARTING
    assert hive.config.source is not None
    capsys.readouterr()
    assert main(["--config", str(hive.config.source), "doctor"]) == 3
    assert "h-alice crashed and systemd is restarting it by itself" in capsys.readouterr().out
    hive.stop("alice")
    monkeypatch.setenv("HIVEGEN_SIMHOST_RESTART_SEC", "0")
    assert state(hive, "alice") is AgentState.STOPPED  # and it stays down


def test_a_crash_comes_back_by_itself_and_status_follows(
    hive: Hive, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = {s.name: s.main_pid for s in hive.status()}["alice"]
    monkeypatch.setenv("HIVEGEN_SIMHOST_RESTART_SEC", "0")
    assert systemctl(hive, "kill", "container@h-alice.service").ok
    rows = {s.name: s for s in hive.status()}
    assert rows["alice"].state is AgentState.RUNNING
    assert rows["alice"].main_pid != pid


def test_the_start_limit_is_reset_by_an_operators_start(
    hive: Hive, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five starts in ten seconds, then "start request repeated too quickly" until
    # `systemctl reset-failed`: a crash loop ends there.
    monkeypatch.setenv("HIVEGEN_SIMHOST_RESTART_SEC", "0")
    for _ in range(5):
        assert systemctl(hive, "kill", "container@h-alice.service").ok
        hive.status()  # systemd restarts it
    assert state(hive, "alice") is AgentState.FAILED
    assert hive.host.unit_state("h-alice").hit_start_limit
    refused = process.run(
        ["nixos-container", "start", "h-alice"], process.RunOpts(env=hive.host.env, check=False)
    )
    assert refused.returncode == 1
    assert "start of the service was attempted too often" in refused.stderr
    hive.start("alice")
    assert state(hive, "alice") is AgentState.RUNNING


def test_a_host_without_container_units_is_named_by_doctor(
    hive: Hive, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HIVEGEN_SIMHOST_CONTAINERS", "disabled")  # boot.enableContainers off
    assert hive.config.source is not None
    capsys.readouterr()
    assert main(["--config", str(hive.config.source), "doctor"]) == 3
    out = capsys.readouterr().out
    assert "container@.service is not loadable on this host" in out
    assert "boot.enableContainers = true" in out


def test_doctor_compares_the_profile_with_the_recorded_deploy(
    hive: Hive, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded = hive.recorded_system(hive.spec("alice"))
    assert recorded is not None
    assert recorded == ("deployed/0", hive.host.system("h-alice"))
    assert hive.config.source is not None
    config = ["--config", str(hive.config.source)]
    assert main([*config, "doctor"]) == 0
    # Someone ran `nixos-container update` by hand with another system.
    other = hive.config.host.simulated_root / "elsewhere"
    other.mkdir()
    profile = hive.host.profile("h-alice")
    profile.unlink()
    profile.symlink_to(other)
    capsys.readouterr()
    assert main([*config, "doctor"]) == 3
    out = capsys.readouterr().out
    assert f"h-alice boots {other}, not the system its last deploy (deployed/0) installed" in out
    assert "hivegen rebuild alice" in out
    hive.rebuild("alice")
    assert main([*config, "doctor"]) == 0
