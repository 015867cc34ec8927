"""The simulated host's nixos-container and systemctl, run as executables with real Nix."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hivegen import simhost
from hivegen.simhost import nixos_container, systemctl, units
from hivegen.simhost.state import parse_env_file
from tests.conftest import commit_dir

FLAKE_NIX = """\
{
  inputs.hyperhive.url = "@HYPERHIVE@";
  outputs = { hyperhive, ... }:
    let
      base = hyperhive.nixosConfigurations.agent-base;
      with' = value: base.extendModules { modules = [ { environment.variables.X = value; } ]; };
    in {
      nixosConfigurations.foo = with' "1";
      nixosConfigurations.foo2 = with' "2";
      nixosConfigurations.bad = with' (import ./bad-value.nix);
    };
}
"""


@pytest.fixture(scope="module")
def flake(tmp_path_factory: pytest.TempPathFactory, hyperhive_flake: str) -> Path:
    """A locked, committed flake: `foo` and `foo2` build, `bad` throws."""
    repo = tmp_path_factory.mktemp("flake")
    (repo / "flake.nix").write_text(FLAKE_NIX.replace("@HYPERHIVE@", hyperhive_flake))
    (repo / "bad-value.nix").write_text('throw "boom"\n')
    commit_dir(repo)
    subprocess.run(["nix", "flake", "lock", str(repo)], check=True, capture_output=True)
    commit_dir(repo, "lock")
    return repo


@dataclass(frozen=True)
class Sim:
    root: Path
    conf_dir: Path
    systemd_dir: Path
    env: dict[str, str]

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool, *args], env=self.env, capture_output=True, text=True, check=False
        )

    def nc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("nixos-container", *args)

    def sc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", *args)

    def ok(self, tool: str, *args: str) -> str:
        out = self.run(tool, *args)
        assert out.returncode == 0, f"{tool} {args} failed:\n{out.stderr}"
        return out.stdout

    def show(self, container: str) -> dict[str, str]:
        text = self.ok("systemctl", "show", f"container@{container}.service")
        return dict(line.split("=", 1) for line in text.splitlines())

    def log(self) -> list[list[str]]:
        return [shlex.split(line) for line in (self.root / "log").read_text().splitlines()]

    def conf(self, container: str) -> Path:
        return self.conf_dir / f"{container}.conf"

    def profile(self, container: str) -> Path:
        return self.root / "profiles" / "per-container" / container / "system"


@pytest.fixture(scope="module")
def child_env(pytestconfig: pytest.Config) -> dict[str, str]:
    """The tests' environment, with bytecode caching back on for the simulated tools.

    Each tool is a fresh Python process; recompiling hivegen on every call (when
    PYTHONDONTWRITEBYTECODE is set) would double this file's run time. The cache lives
    in .pytest_cache, never in the source tree (a stale entry is never used: Python
    checks each one against its source).
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pytestconfig.rootpath / ".pytest_cache" / "simhost-pyc")
    return env


def make_sim(base: Path, child_env: dict[str, str]) -> Sim:
    root = base / "host"
    conf_dir = base / "etc" / "nixos-containers"
    systemd_dir = base / "etc" / "systemd" / "system.control"
    bin_dir = simhost.install(root)
    env = dict(child_env)
    for key, value in simhost.environment(root, conf_dir, systemd_dir).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return Sim(root, conf_dir, systemd_dir, env)


@pytest.fixture
def sim(tmp_path: Path, child_env: dict[str, str]) -> Sim:
    return make_sim(tmp_path, child_env)


@pytest.fixture(scope="module")
def foo_system(
    tmp_path_factory: pytest.TempPathFactory, flake: Path, child_env: dict[str, str]
) -> str:
    """`foo`'s system, built once through the simulation (others reuse it with
    `--system-path`, which skips nix)."""
    scratch = make_sim(tmp_path_factory.mktemp("scratch"), child_env)
    scratch.ok("nixos-container", "create", "foo", "--flake", f"{flake}#foo")
    return str(scratch.profile("foo").resolve())


def q(name: str) -> str:
    """A name in the script's curly quotes."""
    return f"{nixos_container.LQ}{name}{nixos_container.RQ}"


def startable(sim: Sim, name: str) -> None:
    """Add what `create` never writes and the strict start script needs (hivegen owns it)."""
    with sim.conf(name).open("a") as conf:
        conf.write("COPY_RESOLV_CONF=0\n")


def create(sim: Sim, name: str, system: str) -> None:
    sim.ok("nixos-container", "create", name, "--system-path", system)
    startable(sim, name)


# -- install and environment ---------------------------------------------------------------


def test_install_writes_each_tool_once(tmp_path: Path) -> None:
    bin_dir = simhost.install(tmp_path / "host")
    assert bin_dir == tmp_path / "host" / "bin"
    before = {p.name: p.stat() for p in bin_dir.iterdir()}
    assert set(before) == {"nixos-container", "systemctl", "journalctl"}
    for path in bin_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        assert path.read_text().splitlines()[0] == f"#!{sys.executable}"
    simhost.install(tmp_path / "host")
    after = {p.name: p.stat() for p in bin_dir.iterdir()}
    assert {k: (v.st_ino, v.st_mtime_ns) for k, v in after.items()} == {
        k: (v.st_ino, v.st_mtime_ns) for k, v in before.items()
    }
    assert simhost.environment(Path("/r"), Path("/c"), Path("/s")) == {
        "HIVEGEN_SIMHOST_ROOT": "/r",
        "HIVEGEN_SIMHOST_CONF_DIR": "/c",
        "HIVEGEN_SIMHOST_SYSTEMD_DIR": "/s",
        "PYTHONDONTWRITEBYTECODE": None,
        "PYTHONPYCACHEPREFIX": "/r/pycache",
    }


def test_tools_refuse_to_run_without_a_root(sim: Sim) -> None:
    env = {k: v for k, v in sim.env.items() if k != "HIVEGEN_SIMHOST_ROOT"}
    for tool in ("nixos-container", "systemctl", "journalctl"):
        out = subprocess.run([tool, "list"], env=env, capture_output=True, text=True, check=False)
        assert out.returncode == 1
        assert "HIVEGEN_SIMHOST_ROOT is not set" in out.stderr


# -- nixos-container -----------------------------------------------------------------------


def test_names_and_usage_follow_the_script(sim: Sim, foo_system: str) -> None:
    too_long = sim.nc("create", "abcdefghijkl", "--system-path", foo_system)
    assert too_long.returncode == 1
    assert too_long.stderr.endswith(
        f"nixos-container: container name {q('abcdefghijkl')} is too long\n"
    )
    assert too_long.stderr.startswith(str(sim.root / "bin" / "nixos-container"))  # Perl's $0
    create(sim, "abcdefghijk", foo_system)

    for bad in ("bad.name", "a/b", "sp ace", "ümlaut"):
        out = sim.nc("create", bad, "--system-path", foo_system)
        assert (out.returncode, out.stderr.split(": ", 1)[1]) == (1, "invalid container name\n")
    # The name is checked before anything else, whatever the action.
    assert sim.nc("start", "x.y").stderr.endswith(": invalid container name\n")
    assert sim.nc("start").stderr.endswith(": no container name specified\n")
    assert sim.nc().stderr.endswith(": no action specified\n")
    assert sim.nc("start", "nosuch").stderr.endswith(f": container {q('nosuch')} does not exist\n")
    assert sim.nc("frob", "abcdefghijk").stderr.endswith(f": unknown action {q('frob')}\n")
    unknown_option = sim.nc("list", "--frobnicate")
    assert (unknown_option.returncode, unknown_option.stderr) == (1, "Unknown option: frobnicate\n")
    gone = sim.nc("status", "nosuch")
    assert (gone.returncode, gone.stdout) == (1, "gone\n")
    assert sorted(p.name for p in sim.conf_dir.iterdir()) == ["abcdefghijk.conf"]


def test_create_writes_the_conf_before_building_and_sets_the_profile(sim: Sim, flake: Path) -> None:
    out = sim.nc("create", "web", "--flake", f"{flake}#foo", "--port", "8080", "--auto-start")
    assert out.returncode == 0, out.stderr
    assert "host IP is 10.233.1.1, container IP is 10.233.1.2\n" in out.stderr
    # The attr is not recorded: a later `update` without --flake builds attr "container".
    assert sim.conf("web").read_text() == (
        "PRIVATE_NETWORK=1\n"
        "HOST_ADDRESS=10.233.1.1\n"
        "LOCAL_ADDRESS=10.233.1.2\n"
        "HOST_BRIDGE=\n"
        "HOST_PORT=8080\n"
        "AUTO_START=1\n"
        f"FLAKE={flake}\n"
    )
    profile = sim.profile("web")
    assert profile.readlink() == Path("system-1-link")  # as nix-env --set leaves it
    system = profile.resolve()
    assert system.parent == Path("/nix/store")
    assert json.loads((system / "variables.json").read_text())["X"] == "1"
    assert (sim.root / "gcroots" / "web").resolve() == system
    # The container's root is made by its unit's start script, not by create.
    assert not (sim.root / "containers" / "web").exists()

    sim.ok("nixos-container", "create", "api", "--system-path", str(system))
    assert "HOST_ADDRESS=10.233.2.1\nLOCAL_ADDRESS=10.233.2.2\n" in sim.conf("api").read_text()
    conf = sim.conf("web").read_bytes()
    again = sim.nc("create", "web", "--flake", f"{flake}#foo")
    assert again.returncode == 1
    assert again.stderr.endswith(f": container {q('web')} already exists\n")
    assert sim.conf("web").read_bytes() == conf
    assert sim.ok("nixos-container", "list") == "api\nweb\n"


def test_failed_build_leaves_the_conf_and_update_retries(
    sim: Sim, flake: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "flake"
    shutil.copytree(flake, repo, symlinks=True)
    failed = sim.nc("create", "api", "--flake", f"{repo}#bad")
    assert failed.returncode == 1
    assert "boom" in failed.stderr  # nix's own error came through
    assert failed.stderr.endswith(f": failed to build container from flake '{repo}'\n")
    conf = sim.conf("api").read_text()
    assert conf.endswith(f"FLAKE={repo}\n")
    assert sim.profile("api").parent.is_dir()
    assert not sim.profile("api").exists()
    assert sim.nc("create", "api", "--flake", f"{repo}#foo").stderr.endswith("already exists\n")
    # With no system, the unit cannot start.
    assert sim.sc("start", "container@api.service").returncode == 1

    # Without --flake, update builds the recorded ref's attr "container": not ours.
    recorded = sim.nc("update", "api")
    assert recorded.returncode == 1
    assert 'nixosConfigurations."container"' in recorded.stderr

    (repo / "bad-value.nix").write_text('"fixed"\n')
    commit_dir(repo, "fix")
    sim.ok("nixos-container", "update", "api", "--flake", f"{repo}#bad")
    system = sim.profile("api").resolve()
    assert json.loads((system / "variables.json").read_text())["X"] == "fixed"
    assert sim.conf("api").read_text() == conf  # update records nothing
    assert ["systemctl", "show", "container@api"] in sim.log()  # is it running? (no reload)
    assert ["systemctl", "reload", "container@api"] not in sim.log()


def test_update_reloads_a_running_container_keeping_its_pid(sim: Sim, flake: Path) -> None:
    sim.ok("nixos-container", "create", "web", "--flake", f"{flake}#foo")
    startable(sim, "web")
    sim.ok("nixos-container", "start", "web")
    before = sim.show("web")
    out = sim.nc("update", "web", "--flake", f"{flake}#foo2")
    assert out.returncode == 0, out.stderr
    assert "reloading container...\n" in out.stderr
    after = sim.show("web")
    assert sim.profile("web").readlink() == Path("system-2-link")
    assert after["SimSystem"] == str(sim.profile("web").resolve()) != before["SimSystem"]
    assert (after["MainPID"], after["InvocationID"]) == (before["MainPID"], before["InvocationID"])
    assert ["systemctl", "reload", "container@web"] in sim.log()

    sim.ok("systemctl", "restart", "container@web")
    restarted = sim.show("web")
    assert restarted["MainPID"] != after["MainPID"]
    assert restarted["SimSystem"] == after["SimSystem"]


def test_a_conf_as_create_writes_it_does_not_start(sim: Sim, foo_system: str) -> None:
    # The unit's script runs under `set -o nounset` and tests "$COPY_RESOLV_CONF".
    sim.ok("nixos-container", "create", "raw", "--system-path", foo_system)
    out = sim.nc("start", "raw")
    assert out.returncode == 1
    assert out.stderr.endswith(": failed to start container\n")
    assert sim.show("raw")["ActiveState"] == "failed"
    startable(sim, "raw")
    sim.ok("nixos-container", "start", "raw")
    assert sim.show("raw")["ActiveState"] == "active"


def test_start_builds_a_missing_profile_from_flake_with_the_default_attr(
    sim: Sim, flake: Path, tmp_path: Path
) -> None:
    # `create` records FLAKE= without the attr; a start with no profile runs
    # `nixos-container update <c>` itself, which builds attr "container": not ours.
    repo = tmp_path / "flake"
    shutil.copytree(flake, repo, symlinks=True)
    assert sim.nc("create", "api", "--flake", f"{repo}#bad").returncode == 1
    startable(sim, "api")
    out = sim.nc("start", "api")
    assert out.returncode == 1
    assert ["nixos-container", "update", "api"] in sim.log()


def test_destroy_removes_everything_and_ignores_unknown_containers(
    sim: Sim, foo_system: str
) -> None:
    create(sim, "db", foo_system)
    sim.ok("nixos-container", "start", "db")
    assert (sim.root / "containers" / "db").is_dir()
    sim.ok("nixos-container", "destroy", "db")
    assert ["systemctl", "stop", "container@db"] in sim.log()
    assert sim.show("db")["ActiveState"] == "inactive"
    for gone in (
        sim.conf("db"),
        sim.profile("db").parent,
        sim.root / "gcroots" / "db",
        sim.root / "containers" / "db",
    ):
        assert not gone.exists(), gone
    assert sim.ok("nixos-container", "list") == ""
    unknown = sim.nc("destroy", "nosuch")
    assert (unknown.returncode, unknown.stdout, unknown.stderr) == (0, "", "")


def test_concurrent_creates_and_starts_do_not_collide(sim: Sim, foo_system: str) -> None:
    names = [f"c{i}" for i in range(6)]

    def all_ok(argvs: list[list[str]]) -> None:
        procs = [subprocess.Popen(a, env=sim.env, stderr=subprocess.PIPE) for a in argvs]
        for proc in procs:
            assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()

    all_ok([["nixos-container", "create", n, "--system-path", foo_system] for n in names])
    addresses = {parse_env_file(sim.conf(n).read_text())["HOST_ADDRESS"] for n in names}
    assert len(addresses) == len(names)
    for name in names:
        startable(sim, name)
    all_ok([["systemctl", "start", f"container@{n}"] for n in names])
    pids = {sim.show(n)["MainPID"] for n in names}
    assert len(pids) == len(names)
    assert len(sim.log()) == 2 * len(names) + len(names)


# -- systemctl -----------------------------------------------------------------------------


def test_start_stop_is_active_and_show_round_trip(sim: Sim, foo_system: str) -> None:
    create(sim, "db", foo_system)
    inactive = sim.sc("is-active", "container@db.service")
    assert (inactive.returncode, inactive.stdout) == (3, "inactive\n")
    assert sim.ok("nixos-container", "status", "db") == "down\n"

    sim.ok("nixos-container", "start", "db")
    assert ["systemctl", "start", "container@db"] in sim.log()  # delegated through PATH
    assert sim.ok("nixos-container", "status", "db") == "up\n"
    quiet = sim.sc("is-active", "--quiet", "container@db.service")
    assert (quiet.returncode, quiet.stdout) == (0, "")
    shown = sim.show("db")
    assert (shown["ActiveState"], shown["SubState"], shown["LoadState"]) == (
        "active",
        "running",
        "loaded",
    )
    assert int(shown["MainPID"]) > 0
    assert re.fullmatch(r"[0-9a-f]{32}", shown["InvocationID"])
    assert shown["SimSystem"] == foo_system
    assert (sim.root / "containers" / "db" / "etc").is_dir()
    sim.ok("systemctl", "start", "container@db.service")  # already active: nothing changes
    assert sim.show("db")["MainPID"] == shown["MainPID"]
    # Any active unit makes is-active succeed.
    both = sim.sc("is-active", "container@nosuch", "container@db")
    assert (both.returncode, both.stdout) == (0, "inactive\nactive\n")

    sim.ok("nixos-container", "stop", "db")
    stopped = sim.show("db")
    assert (stopped["ActiveState"], stopped["SubState"], stopped["MainPID"]) == (
        "inactive",
        "dead",
        "0",
    )
    sim.ok("nixos-container", "start", "db")
    again = sim.show("db")
    assert again["MainPID"] not in ("0", shown["MainPID"])
    assert again["InvocationID"] != shown["InvocationID"]


def test_start_refuses_a_missing_bind_source(sim: Sim, foo_system: str, tmp_path: Path) -> None:
    create(sim, "db", foo_system)
    present, missing = tmp_path / "present", tmp_path / "missing"
    present.mkdir()
    flags = f"--bind={present}:/a --bind-ro={missing}:/b"
    with sim.conf("db").open("a") as conf:
        conf.write(f'EXTRA_NSPAWN_FLAGS="{flags}"\n')

    out = sim.nc("start", "db")
    assert out.returncode == 1
    assert "Job for container@db.service failed because the control process" in out.stderr
    assert out.stderr.endswith(": failed to start container\n")
    failed = sim.sc("is-active", "container@db")
    assert (failed.returncode, failed.stdout) == (3, "failed\n")
    journal = (sim.root / "systemd" / "journal" / "container@db.service").read_text()
    assert f"Failed to stat {missing}" in journal
    assert sim.show("db")["Result"] == "exit-code"

    missing.mkdir()
    sim.ok("nixos-container", "start", "db")
    assert sim.show("db")["SimExtraNspawnFlags"] == flags


def test_drop_in_limits_show_only_after_daemon_reload(sim: Sim, foo_system: str) -> None:
    create(sim, "db", foo_system)
    sim.ok("nixos-container", "start", "db")
    dropin_dir = sim.systemd_dir / "container@db.service.d"
    dropin_dir.mkdir(parents=True)
    dropin = dropin_dir / "hyperhive-limits.conf"
    dropin.write_text("[Service]\nMemoryMax=2G\nCPUQuota=50%\n")

    shown = sim.show("db")
    assert (shown["MemoryMax"], shown["CPUQuotaPerSecUSec"]) == ("infinity", "infinity")
    assert shown["NeedDaemonReload"] == "yes"
    assert "Run 'systemctl daemon-reload'" in sim.sc("start", "container@db").stderr

    sim.ok("systemctl", "daemon-reload")
    shown = sim.show("db")
    assert (shown["MemoryMax"], shown["CPUQuotaPerSecUSec"]) == ("2147483648", "500ms")
    assert (shown["NeedDaemonReload"], shown["DropInPaths"]) == ("no", str(dropin))

    dropin.write_text("[Service]\nMemoryMax=512M\nCPUQuota=150%\n")
    sim.ok("systemctl", "restart", "container@db")  # a restart does not reload the unit
    assert sim.show("db")["MemoryMax"] == "2147483648"
    sim.ok("systemctl", "daemon-reload")
    shown = sim.show("db")
    assert (shown["MemoryMax"], shown["CPUQuotaPerSecUSec"]) == ("536870912", "1.500000s")

    shutil.rmtree(dropin_dir)
    sim.ok("systemctl", "daemon-reload")
    shown = sim.show("db")
    assert (shown["MemoryMax"], shown["CPUQuotaPerSecUSec"]) == ("infinity", "infinity")
    assert "DropInPaths" not in shown  # empty: shown only when asked for


def test_show_prints_one_block_per_unit_in_the_order_given(sim: Sim, foo_system: str) -> None:
    create(sim, "a", foo_system)
    create(sim, "b", foo_system)
    sim.ok("nixos-container", "start", "a")
    pid = sim.show("a")["MainPID"]
    # Properties come in systemd's order, not the order asked for.
    text = sim.ok(
        "systemctl",
        "show",
        "-p",
        "ActiveState",
        "--property=Id,MainPID",
        "container@b",
        "container@a.service",
        "foo.service",
    )
    assert text == (
        "MainPID=0\nId=container@b.service\nActiveState=inactive\n"
        "\n"
        f"MainPID={pid}\nId=container@a.service\nActiveState=active\n"
        "\n"
        "MainPID=0\nId=foo.service\nActiveState=inactive\n"
    )
    values = sim.ok("systemctl", "show", "--value", "-p", "LoadState", "container@a", "foo")
    assert values == "loaded\n\nnot-found\n"
    assert sim.ok("systemctl", "show", "-p", "InvocationID", "container@b") == "InvocationID=\n"


def test_systemctl_rejects_what_it_does_not_know(sim: Sim) -> None:
    for args, status, message in (
        (["frobnicate"], 1, "Unknown command verb 'frobnicate'.\n"),
        (["start"], 1, "Too few arguments.\n"),
        (["start", "nginx.service"], 5, "Failed to start nginx.service: Unit nginx.service"),
        (["stop", "nginx"], 5, "Failed to stop nginx.service: Unit nginx.service not loaded.\n"),
        (["reload", "container@x"], 1, "container@x.service is not active, cannot reload.\n"),
        (["--bogus", "show"], 1, "systemctl: unrecognized option '--bogus'\n"),
    ):
        out = sim.sc(*args)
        assert (out.returncode, out.stderr[: len(message)]) == (status, message), args


# -- pure parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usec", "text"),
    [
        (None, "infinity"),
        (0, "0"),
        (500_000, "500ms"),
        (2_000_000, "2s"),
        (1_500_000, "1.500000s"),
        (12_345, "12.345ms"),
        (90_000_000, "1min 30s"),
    ],
)
def test_format_timespan_matches_systemd(usec: int | None, text: str) -> None:
    assert units.format_timespan(usec) == text


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        ("2G", 2 * 1024**3),
        ("512M", 512 * 1024**2),
        ("1.5K", 1536),
        ("1000", 1000),
        ("infinity", None),
        ("", None),
        ("50%", 8 * 1024**3),
        ("33%", 1_384_120 * 4096),  # whole pages, rounded down
    ],
)
def test_memory_limits_parse_as_systemd_does(value: str, limit: int | None) -> None:
    assert units.parse_memory_limit(value) == limit


@pytest.mark.parametrize(
    ("value", "usec"), [("50%", 500_000), ("200%", 2_000_000), ("12.5%", 125_000), ("", None)]
)
def test_cpu_quotas_parse_as_systemd_does(value: str, usec: int | None) -> None:
    assert units.parse_cpu_quota(value) == usec


@pytest.mark.parametrize("value", ["2X", "-1G", "0", "101%", "lots"])
def test_invalid_memory_limits_are_rejected(value: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)memory limit"):
        units.parse_memory_limit(value)


@pytest.mark.parametrize("value", ["0%", "50", "1.234%", "half"])
def test_invalid_cpu_quotas_are_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="CPU quota"):
        units.parse_cpu_quota(value)


def test_conf_is_read_as_an_environment_file() -> None:
    text = 'A=1\n# c\n B = two words \nC="--bind=/x:/y --bind-ro=/z"\nD=\'$lit\'\nE="q\\"q"\n'
    assert parse_env_file(text) == {
        "A": "1",
        "B": "two words",
        "C": "--bind=/x:/y --bind-ro=/z",
        "D": "$lit",
        "E": 'q"q',
    }


def test_option_parsing_follows_getopt_long() -> None:
    opts = nixos_container.parse_args(
        ["create", "--fla=/f#x", "web", "--auto", "--option", "a", "b", "--impure", "--", "-z"]
    )
    assert opts.args == ["create", "web", "-z"]
    assert opts.values == {"flake": "/f#x"}
    assert opts.flags == {"auto-start"}
    assert [*opts.nix_flags, *opts.nix_flags2] == ["--impure", "--option", "a", "b"]
    assert nixos_container.parse_args(["--flake"]).errors == ["Option flake requires an argument"]
    sc_opts, rest = systemctl.parse_args(["show", "-pId", "--property=A,B", "-q", "x"])
    assert (sc_opts.properties, sc_opts.quiet, rest) == (["Id", "A", "B"], True, ["show", "x"])
