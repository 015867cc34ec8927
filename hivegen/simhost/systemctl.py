"""A simulated `systemctl`: the verbs hivegen and nixos-container use, on container units.

Starting `container@<c>.service` does what NixOS's unit would decide: it reads
`<conf_dir>/<c>.conf` as its EnvironmentFile, makes the container's root, and fails —
as systemd-nspawn would — when the container has no system (no profile, or the
profile's store path is gone) or a `--bind`/`--bind-ro` source in `EXTRA_NSPAWN_FLAGS`
does not exist. A running unit remembers the conf and system it started with; a reload
(what `nixos-container update` triggers) moves it to the profile's current system but,
like `switch-to-configuration test`, changes no bind mount.

Output, messages and exit statuses follow systemctl: `show` blocks are separated by one
empty line, `is-active` exits 0 when any unit is active and 3 otherwise, a not-found unit
makes start/stop exit 5, a failed job exits 1.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path

from hivegen.simhost import ports, units
from hivegen.simhost.state import (
    Host,
    SimhostError,
    act_on_fault,
    append_line,
    log_command,
    parse_env_file,
    profile_target,
)
from hivegen.simhost.units import ActiveState, Unit

EXIT_FAILED = 1
# How long a system asking SIMHOST_BOOT = "crash" runs before its init exits.
CRASH_AFTER = 0.1
EXIT_NOT_ACTIVE = 3
EXIT_NOT_FOUND = 5

# Real verbs this simulation leaves out: say so rather than pretend they are unknown.
_NOT_SIMULATED = frozenset(
    {
        "status",
        "enable",
        "disable",
        "cat",
        "edit",
        "set-property",
        "try-restart",
        "reload-or-restart",
        "is-enabled",
        "mask",
        "unmask",
        "list-unit-files",
        "isolate",
    }
)
_VALUE_OPTIONS = {"-p": "property", "--property": "property", "-t": "type", "--type": "type"}
_VALUE_OPTIONS |= {"--state": "state", "-s": "signal", "--signal": "signal"}
_FLAG_OPTIONS = {
    "-q": "quiet",
    "--quiet": "quiet",
    "--value": "value",
    "-a": "all",
    "--all": "all",
    "--no-block": "no_block",
    "--no-pager": "",
    "--no-legend": "no_legend",
    "--plain": "",
    "--system": "",
    "-l": "",
    "--full": "",
    "--no-ask-password": "",
}


class Usage(Exception):
    pass


@dataclass(slots=True)
class Opts:
    quiet: bool = False
    value: bool = False
    all: bool = False
    no_block: bool = False
    no_legend: bool = False
    properties: list[str] = field(default_factory=list)


def parse_args(args: Sequence[str]) -> tuple[Opts, list[str]]:
    """getopt_long with permutation: options may come before or after the verb."""
    opts = Opts()
    rest: list[str] = []
    items = list(args)
    while items:
        arg = items.pop(0)
        if arg == "--":
            rest.extend(items)
            break
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            continue
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg[:2], "", arg[2:])
        if name in _VALUE_OPTIONS:
            if eq or inline:
                value = inline
            elif items:
                value = items.pop(0)
            else:
                raise Usage(f"systemctl: option '{name}' requires an argument")
            if _VALUE_OPTIONS[name] == "property":
                opts.properties.extend(p for p in value.split(",") if p)
        elif name in _FLAG_OPTIONS and not inline:
            attr = _FLAG_OPTIONS[name]
            if attr:
                setattr(opts, attr, True)
        elif arg.startswith("--"):
            raise Usage(f"systemctl: unrecognized option '{arg}'")
        else:
            raise Usage(f"systemctl: invalid option -- '{arg[1:2]}'")
    return opts, rest


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        host = Host.from_env(os.environ)
    except SimhostError as exc:
        print(f"systemctl (simulated): {exc}", file=sys.stderr)
        return EXIT_FAILED
    log_command(host, argv)
    fault = act_on_fault(host, "systemctl", argv, os.environ)
    if fault is not None:
        return fault
    try:
        opts, rest = parse_args(argv[1:])
    except Usage as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    verb, names = (rest[0], rest[1:]) if rest else ("list-units", [])
    handler = VERBS.get(verb)
    if handler is None:
        if verb in _NOT_SIMULATED:
            print(f"systemctl (simulated): verb '{verb}' is not simulated", file=sys.stderr)
        else:
            print(f"Unknown command verb '{verb}'.", file=sys.stderr)
        return EXIT_FAILED
    return handler(host, opts, names)


def _need_units(names: Sequence[str]) -> list[str]:
    if not names:
        raise Usage("Too few arguments.")
    return [units.mangle(n) for n in names]


def _with_units(
    run: Callable[[Host, Opts, list[str]], int],
) -> Callable[[Host, Opts, list[str]], int]:
    def wrapper(host: Host, opts: Opts, names: list[str]) -> int:
        try:
            wanted = _need_units(names)
        except Usage as exc:
            print(exc, file=sys.stderr)
            return EXIT_FAILED
        return run(host, opts, wanted)

    return wrapper


def _locked(host: Host) -> AbstractContextManager[None]:
    """systemd's state lock, held around every read-modify-write of units."""
    # Imported here: read-only verbs (show, is-active) need not pay for tempfile.
    from hivegen.fsutil import hive_lock

    return hive_lock(host.lock_path)


def _new_invocation_id() -> str:
    import uuid

    return uuid.uuid4().hex


def _err(message: str) -> None:
    print(message, file=sys.stderr)


def _job_failed(unit: str) -> None:
    _err(
        f"Job for {unit} failed because the control process exited with error code.\n"
        f'See "systemctl status {unit}" and "journalctl -xeu {unit}" for details.'
    )


def _warn_if_changed(host: Host, unit: Unit) -> None:
    if units.needs_daemon_reload(host, unit):
        _err(
            f"Warning: The unit file, source configuration file or drop-ins of {unit.name} "
            "changed on disk. Run 'systemctl daemon-reload' to reload units."
        )


def _journal(host: Host, unit: str, message: str) -> None:
    append_line(host.journal(unit), message.rstrip("\n") + "\n")


def _container_log(host: Host, container: str, *messages: str) -> None:
    """What the container's own systemd logs, into the container's journal."""
    # Imported here: only a start, stop or reload pays for it, not every `show`.
    from hivegen.simhost import journalctl

    journalctl.record(host, container, *messages)


# -- start / stop / restart / reload -------------------------------------------------------


@_with_units
def cmd_start(host: Host, opts: Opts, wanted: list[str]) -> int:
    return _each_locked(host, wanted, lambda unit: _start(host, opts, unit, restart=False))


@_with_units
def cmd_restart(host: Host, opts: Opts, wanted: list[str]) -> int:
    return _each_locked(host, wanted, lambda unit: _start(host, opts, unit, restart=True))


@_with_units
def cmd_stop(host: Host, opts: Opts, wanted: list[str]) -> int:
    return _each_locked(host, wanted, lambda unit: _stop(host, unit))


@_with_units
def cmd_reload(host: Host, opts: Opts, wanted: list[str]) -> int:
    return _each_locked(host, wanted, lambda unit: _reload(host, unit))


def _each_locked(host: Host, wanted: list[str], run: Callable[[str], int]) -> int:
    status = 0
    with _locked(host):
        for unit in wanted:
            result = run(unit)
            status = status or result
    return status


def _start(host: Host, opts: Opts, name: str, *, restart: bool) -> int:
    container = units.container_of(name)
    verb = "restart" if restart else "start"
    if container is None or not units.containers_enabled():
        _err(f"Failed to {verb} {name}: Unit {name} not found.")
        return EXIT_NOT_FOUND
    unit = _settled(host, name)
    if unit.active is ActiveState.ACTIVE and not restart:
        _warn_if_changed(host, unit)
        return 0
    now = time.time()
    recent = tuple(t for t in unit.starts if now - t < units.START_LIMIT_INTERVAL)
    if len(recent) >= units.START_LIMIT_BURST:
        # systemd's start limit (StartLimitBurst=5 in 10 s): until `reset-failed`.
        units.write_unit(
            host, replace(unit, active=ActiveState.FAILED, result="start-limit-hit", main_pid=0)
        )
        _journal(host, name, f"{name}: Start request repeated too quickly.")
        _err(
            f"Job for {name} failed because start of the service was attempted too often.\n"
            f'See "systemctl status {name}" and "journalctl -xeu {name}" for details.\n'
            f'To force a start use "systemctl reset-failed {name}" followed by '
            f'"systemctl start {name}" again.'
        )
        return EXIT_FAILED
    unit = replace(unit, starts=(*recent, now))
    if unit.active is not ActiveState.INACTIVE:
        # Still loaded (running, or failed): it keeps the drop-ins it loaded.
        _warn_if_changed(host, unit)
        limits = unit.loaded
    else:
        # A dead unit was garbage-collected: this start loads it afresh from disk.
        limits = units.read_limits(host, name)[0]
    problem, launched = _launch(host, container)
    boot = _boot_behaviour(Path(launched.system)) if launched is not None else ""
    if problem is None and boot == "fail":
        # Its init exits before it tells systemd-nspawn it is up: the start job fails.
        problem = "the container's init exited at once"
    if problem is not None:
        _journal(host, name, f"{name}: {problem}")
        failed = Unit(name, ActiveState.FAILED, "exit-code", loaded=limits, starts=unit.starts)
        units.write_unit(host, replace(failed, invocation_id=_new_invocation_id()))
        if opts.no_block:
            return 0
        _job_failed(name)
        return EXIT_FAILED
    assert launched is not None
    crash_after = float(os.environ.get("HIVEGEN_SIMHOST_CRASH_AFTER", CRASH_AFTER))
    started = replace(
        launched,
        name=name,
        main_pid=units.next_pid(host),
        invocation_id=_new_invocation_id(),
        loaded=limits,
        starts=unit.starts,
        crash_due=time.time() + crash_after if boot == "crash" else 0.0,
    )
    units.write_unit(host, started)
    _journal(host, name, f"{name}: started {started.system} as PID {started.main_pid}")
    # The container's own journal: its systemd boots.
    _container_log(
        host,
        container,
        "systemd (simulated) running in system mode.",
        f"Booting {started.system}.",
        "Reached target multi-user.target - Multi-User System.",
    )
    ports.ensure_running(host)
    return 0


def _boot_behaviour(system: Path) -> str:
    """How the system's init behaves in the simulation: "" (it runs), "fail" (exits
    before it is up) or "crash" (exits soon after). A test's agent.nix asks for one with
    `environment.variables.SIMHOST_BOOT`."""
    try:
        variables = json.loads((system / "variables.json").read_text())
    except (OSError, ValueError):
        return ""
    wanted = variables.get("SIMHOST_BOOT", "") if isinstance(variables, dict) else ""
    return wanted if wanted in ("fail", "crash") else ""


def _launch(host: Host, container: str) -> tuple[str | None, Unit | None]:
    """What the container's start script and systemd-nspawn would make of it now."""
    conf_path = host.conf(container)
    try:
        conf_text = conf_path.read_text()
    except FileNotFoundError:
        return f"{conf_path} does not exist", None
    env = parse_env_file(conf_text)
    # The unit's script runs with strict shell checks (`set -o nounset`): the real one
    # tests "$COPY_RESOLV_CONF", which `nixos-container create` never writes.
    if "COPY_RESOLV_CONF" not in env:
        return "container-start: line 24: COPY_RESOLV_CONF: unbound variable", None
    root = host.container_root(container)
    _make_container_root(root)
    host.profile_dir(container).mkdir(parents=True, exist_ok=True)
    if env.get("FLAKE") and not os.path.lexists(host.profile(container)):
        # As the start script does: `nixos-container update <c>`, which rebuilds the
        # recorded FLAKE= with the default attribute ("container").
        # The simulated tool, found on PATH as the unit finds the real one.
        argv = ["nixos-container", "update", container]
        update = subprocess.run(argv, check=False)
        if update.returncode != 0:
            return f"nixos-container update {container} exited {update.returncode}", None
    system = _system_of(host, container, env)
    if system is None:
        return f"no system to boot: {host.profile(container)} does not resolve", None
    flags = env.get("EXTRA_NSPAWN_FLAGS", "")
    problem = _check_binds(root, flags)
    if problem is not None:
        return problem, None
    unit = Unit("", ActiveState.ACTIVE, system=str(system), conf=conf_text)
    return None, replace(unit, extra_nspawn_flags=flags)


def _make_container_root(root: Path) -> None:
    # As the NixOS start script does before it runs systemd-nspawn.
    for sub, mode in (("etc", 0o755), ("var/lib", 0o755), ("var/lib/private", 0o700)):
        (root / sub).mkdir(mode=mode, parents=True, exist_ok=True)
    (root / "root").mkdir(mode=0o700, exist_ok=True)
    root.chmod(0o700)


def _system_of(host: Host, container: str, env: dict[str, str]) -> Path | None:
    # A declarative container's conf names its system; an imperative one boots its profile.
    explicit = env.get("SYSTEM_PATH")
    return profile_target(Path(explicit) if explicit else host.profile(container))


_BIND_OPTION = re.compile(r"^--bind(?:-ro)?(?:=(.*))?$")


def _check_binds(root: Path, flags: str) -> str | None:
    """The first bind nspawn would refuse, if any.

    The start script expands $EXTRA_NSPAWN_FLAGS unquoted: words split on whitespace.
    """
    words = flags.split()
    index = 0
    while index < len(words):
        match = _BIND_OPTION.match(words[index])
        index += 1
        if not match:
            continue
        spec = match.group(1)
        if spec is None:
            if index >= len(words):
                return f"systemd-nspawn: option '{words[index - 1]}' requires an argument"
            spec = words[index]
            index += 1
        problem = _check_bind_source(root, spec)
        if problem is not None:
            return problem
    return None


def _check_bind_source(root: Path, spec: str) -> str | None:
    source = re.split(r"(?<!\\):", spec, maxsplit=1)[0].replace("\\:", ":")
    if source == "":
        return None  # nspawn makes a temporary directory
    if source.startswith("+"):
        path = root / source[1:].lstrip("/")
    elif source.startswith("/"):
        path = Path(source)
    else:
        return f"systemd-nspawn: Invalid bind mount specification: {spec}"
    if not path.exists():
        return f"systemd-nspawn: Failed to stat {path}: No such file or directory"
    return None


def _stop(host: Host, name: str) -> int:
    if units.container_of(name) is None:
        _err(f"Failed to stop {name}: Unit {name} not loaded.")
        return EXIT_NOT_FOUND
    unit = _settled(host, name)
    _warn_if_changed(host, unit)
    # A failed unit stays failed (until reset-failed); an inactive one has nothing to do.
    # One waiting to restart by itself (auto-restart) is stopped: no restart follows.
    if unit.active in (ActiveState.ACTIVE, ActiveState.ACTIVATING):
        if unit.active is ActiveState.ACTIVE:
            _container_log(host, units.container_of(name) or name, "Shutting down.")
        stopped = replace(unit, active=ActiveState.INACTIVE, main_pid=0, restart_due=0.0)
        units.write_unit(host, stopped)
        _journal(host, name, f"{name}: stopped")
    return 0


@_with_units
def cmd_kill(host: Host, opts: Opts, wanted: list[str]) -> int:
    """The container's main process dies (as after a crash): Restart=on-failure brings
    it back after RestartSec, behind the back of whoever stopped watching."""
    return _each_locked(host, wanted, lambda unit: _kill(host, unit))


def _kill(host: Host, name: str) -> int:
    unit = _settled(host, name)
    if unit.active is ActiveState.ACTIVE:
        _crash(host, unit, "main process killed")
    return 0


def _crash(host: Host, unit: Unit, why: str) -> None:
    """The unit's main process is gone: Restart=on-failure restarts it after RestartSec."""
    delay = float(os.environ.get("HIVEGEN_SIMHOST_RESTART_SEC", units.RESTART_SEC))
    dying = replace(
        unit, active=ActiveState.ACTIVATING, result="signal", main_pid=0,
        restart_due=time.time() + delay, crash_due=0.0,
    )  # fmt: skip
    units.write_unit(host, dying)
    _journal(host, unit.name, f"{unit.name}: {why}; restarting in {delay}s")


def _settled(host: Host, name: str, *, lock: bool = False) -> Unit:
    """The unit as systemd would show it now: a due auto-restart has happened (a new
    PID, counted against the start limit), or failed. `lock`: take the systemd lock for
    the change (callers that already hold it pass False)."""
    unit = units.read_unit(host, name)
    if unit.active is ActiveState.ACTIVE and unit.crash_due and time.time() >= unit.crash_due:
        if lock:
            with _locked(host):
                return _settled(host, name)
        _crash(host, unit, "the container's init exited")
        unit = units.read_unit(host, name)
    if unit.active is not ActiveState.ACTIVATING or time.time() < unit.restart_due:
        return unit
    if lock:
        with _locked(host):
            return _settled(host, name)
    opts = Opts(no_block=True)
    restarted = replace(unit, active=ActiveState.INACTIVE, restart_due=0.0)
    units.write_unit(host, restarted)
    _start(host, opts, name, restart=True)
    return units.read_unit(host, name)


def _reload(host: Host, name: str) -> int:
    container = units.container_of(name)
    if container is None:
        _err(f"Failed to reload {name}: Unit {name} not found.")
        return EXIT_NOT_FOUND
    unit = _settled(host, name)
    if unit.active is not ActiveState.ACTIVE:
        _err(f"{name} is not active, cannot reload.")
        return EXIT_FAILED
    _warn_if_changed(host, unit)
    # ExecReload runs `switch-to-configuration test` of the profile's system inside the
    # running container: same PID and invocation, new system, the same bind mounts.
    try:
        env = parse_env_file(host.conf(container).read_text())
    except FileNotFoundError:
        env = {}
    system = _system_of(host, container, env)
    if system is None:
        _journal(host, name, f"{name}: reload failed: {host.profile(container)} does not resolve")
        _job_failed(name)
        return EXIT_FAILED
    if _activation_fails(system):
        # As when `switch-to-configuration test` fails: the profile has already moved
        # (nixos-container set it before reloading); the running system stays as it was.
        _journal(host, name, f"{name}: switch-to-configuration test of {system} failed")
        _err(f"Job for {name} failed because the control process exited with error code.")
        return EXIT_FAILED
    boot = _boot_behaviour(system)
    # A system whose init cannot run takes the container down as it is switched to.
    crash_after = float(os.environ.get("HIVEGEN_SIMHOST_CRASH_AFTER", CRASH_AFTER))
    crash_due = time.time() + crash_after if boot in ("fail", "crash") else 0.0
    units.write_unit(host, replace(unit, system=str(system), crash_due=crash_due))
    _journal(host, name, f"{name}: reloaded to {system}")
    _container_log(host, container, f"Switching to {system}.", "Reloading finished.")
    ports.ensure_running(host)
    return 0


def _activation_fails(system: Path) -> bool:
    """The simulation's stand-in for an activation script that fails: a system whose
    environment sets SIMHOST_ACTIVATION = "fail" (what a test's agent.nix can ask for)."""
    try:
        variables = json.loads((system / "variables.json").read_text())
    except (FileNotFoundError, ValueError):
        return False
    return isinstance(variables, dict) and variables.get("SIMHOST_ACTIVATION") == "fail"


# -- queries -------------------------------------------------------------------------------


@_with_units
def cmd_is_active(host: Host, opts: Opts, wanted: list[str]) -> int:
    states = [_settled(host, unit, lock=True).active for unit in wanted]
    if not opts.quiet:
        for state in states:
            print(state)
    return 0 if ActiveState.ACTIVE in states else EXIT_NOT_ACTIVE


@_with_units
def cmd_is_failed(host: Host, opts: Opts, wanted: list[str]) -> int:
    states = [_settled(host, unit, lock=True).active for unit in wanted]
    if not opts.quiet:
        for state in states:
            print(state)
    return 0 if ActiveState.FAILED in states else EXIT_FAILED


def cmd_show(host: Host, opts: Opts, names: list[str]) -> int:
    if not names:
        # The manager's own properties.
        blocks = [[("Version", "simulated"), ("SystemState", "running")]]
    else:
        blocks = [units.properties(host, _settled(host, units.mangle(n), lock=True)) for n in names]
    wanted = set(opts.properties)
    # Asking for a property by name shows it even when empty, as systemctl does.
    show_empty = opts.all or bool(wanted)
    texts = []
    for block in blocks:
        lines = []
        for key, value in block:
            if (wanted and key not in wanted) or (not value and not show_empty):
                continue
            lines.append(value if opts.value else f"{key}={value}")
        texts.append("".join(line + "\n" for line in lines))
    sys.stdout.write("\n".join(texts))
    return 0


def cmd_list_units(host: Host, opts: Opts, patterns: list[str]) -> int:
    rows = []
    for name in units.known_units(host):
        unit = _settled(host, name, lock=True)
        if unit.active is ActiveState.INACTIVE and not opts.all:
            continue
        if patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        description = f"Container '{units.container_of(name)}'"
        rows.append([name, "loaded", str(unit.active), units.SUB_STATE[unit.active], description])
    header = ["UNIT", "LOAD", "ACTIVE", "SUB", "DESCRIPTION"]
    table = rows if opts.no_legend else [header, *rows]
    widths = [max((len(row[i]) for row in table), default=0) for i in range(4)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        print(" ".join([*cells, row[4]]).rstrip())
    if not opts.no_legend:
        print(f"\n{len(rows)} loaded units listed.")
    return 0


# -- manager -------------------------------------------------------------------------------


def cmd_daemon_reload(host: Host, opts: Opts, names: list[str]) -> int:
    """Re-read every loaded unit's drop-ins (a removed drop-in dir means defaults again)."""
    with _locked(host):
        for name in units.known_units(host):
            unit = units.read_unit(host, name)
            limits, warnings = units.read_limits(host, name)
            for warning in warnings:
                _journal(host, name, warning)
            if limits != unit.loaded:
                units.write_unit(host, units.with_limits(unit, limits))
    return 0


def cmd_reset_failed(host: Host, opts: Opts, names: list[str]) -> int:
    wanted = [units.mangle(n) for n in names] or units.known_units(host)
    with _locked(host):
        for name in wanted:
            unit = units.read_unit(host, name)
            # Also resets the start limit's counter, failed or not.
            reset = replace(unit, starts=())
            if unit.active is ActiveState.FAILED:
                reset = replace(reset, active=ActiveState.INACTIVE, result="success")
            if reset != unit:
                units.write_unit(host, reset)
    return 0


VERBS: dict[str, Callable[[Host, Opts, list[str]], int]] = {
    "start": cmd_start,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "reload": cmd_reload,
    "is-active": cmd_is_active,
    "is-failed": cmd_is_failed,
    "show": cmd_show,
    "list-units": cmd_list_units,
    "daemon-reload": cmd_daemon_reload,
    "reset-failed": cmd_reset_failed,
    "kill": cmd_kill,
}
