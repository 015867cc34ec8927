"""A simulated `nixos-container`, keeping the real script's contract to the letter.

It follows nixpkgs' pkgs/by-name/ni/nixos-container/nixos-container.pl: the same options
(Getopt::Long, permuted, unique prefixes accepted), the same checks in the same order,
the same messages (prefixed with the program path, Perl's `$0`), and its quirks, which
hivegen must survive on a real host:

- `--flake <ref>#<attr>` builds `<ref>#nixosConfigurations."<attr>"`; without `#attr`
  the attr is "container" (not the container's name).
- `create` records `FLAKE=<ref>` *without* the attr, before building; a failed build
  dies leaving that conf (and an empty profile dir) behind, so a retry hits "already
  exists". `update` without `--flake` rebuilds the recorded ref with attr "container";
  `update --flake` builds what it is given and records nothing.
- The first free address pair is 10.233.<n>.1/.2 with n from 1, skipping any address a
  conf's first HOST_ADDRESS= or LOCAL_ADDRESS= line uses; an empty conf makes it die.
- `destroy` of a container with no conf exits 0; `status` of one prints "gone" and dies.
- start/stop/reload, and "is it running?" (`systemctl show container@<c>`, matched
  against /ActiveState=active/), go through whatever `systemctl` is first on PATH.

What the simulation cannot do: build `<nixpkgs/nixos>` configurations (only `--flake`
and `--system-path` work), and run machinectl/nsenter (`terminate`, and `destroy` of a
running container, stop the unit through systemctl instead; login/run are refused).
A failure's exit status is always 1 (Perl's `die` exits with errno or 255, so callers
must not rely on it either).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, auto
from pathlib import Path

from hivegen.fsutil import hive_lock, write_atomic
from hivegen.simhost.state import (
    Host,
    SimhostError,
    act_on_fault,
    log_command,
    remove_tree,
    set_profile,
)

# The real script runs plain `nix build`: flakes work only if the caller's nix.conf or
# NIX_CONFIG enables them (hivegen passes NIX_CONFIG itself; see containers.py).
NIX = ("nix",)
SYSTEMCTL = "systemctl"
MAX_NAME_LENGTH = 11
DEFAULT_FLAKE_ATTR = "container"
LQ, RQ = "\u2018", "\u2019"  # the script's curly quotes

_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
_FLAKE_ATTR = re.compile(r'^(.*)#([^#"]+)$', re.DOTALL)

USAGE = """\
Usage: nixos-container list
       nixos-container create <container-name> [--nixos-path <path>] [--system-path <path>]
         [--config <string>] [--config-file <path>] [--flake <flakeref>]
         [--ensure-unique-name] [--auto-start] [--bridge <iface>] [--port <port>]
         [--host-address <string>] [--local-address <string>]
       nixos-container destroy|restart|start|stop|terminate|status <container-name>
       nixos-container update <container-name> [--config <string>]
         [--config-file <path>] [--flake <flakeref>] [--nixos-path <path>]
       nixos-container login|root-login|show-ip|show-host-key <container-name>
       nixos-container run <container-name> -- args...
(simulated by hivegen.simhost)
"""


class Die(Exception):
    """Perl's `die`: the message goes to stderr as is, the exit status is non-zero."""


class Kind(Enum):
    FLAG = auto()
    VALUE = auto()
    NIX0 = auto()  # nix pass-through flags, with no, one or two arguments
    NIX1 = auto()
    NIX2 = auto()


_OPTIONS: dict[str, Kind] = {
    "help": Kind.FLAG,
    "ensure-unique-name": Kind.FLAG,
    "auto-start": Kind.FLAG,
    "bridge": Kind.VALUE,
    "port": Kind.VALUE,
    "system-path": Kind.VALUE,
    "signal": Kind.VALUE,
    "nixos-path": Kind.VALUE,
    "config": Kind.VALUE,
    "config-file": Kind.VALUE,
    "host-address": Kind.VALUE,
    "local-address": Kind.VALUE,
    "flake": Kind.VALUE,
    "log-format": Kind.NIX1,
    "option": Kind.NIX2,
    "impure": Kind.NIX0,
    "update-input": Kind.NIX1,
    "override-input": Kind.NIX2,
    "commit-lock-file": Kind.NIX0,
    "no-registries": Kind.NIX0,
    "no-update-lock-file": Kind.NIX0,
    "no-write-lock-file": Kind.NIX0,
    "no-allow-dirty": Kind.NIX0,
    "recreate-lock-file": Kind.NIX0,
}


@dataclass(slots=True)
class Options:
    flags: set[str] = field(default_factory=set)
    values: dict[str, str] = field(default_factory=dict)
    nix_flags: list[str] = field(default_factory=list)
    # Two-argument pass-throughs go after all others, as the script collects them apart.
    nix_flags2: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _resolve_option(name: str) -> str | None:
    if name in _OPTIONS:
        return name
    candidates = [option for option in _OPTIONS if option.startswith(name)]
    return candidates[0] if len(candidates) == 1 else None


def parse_args(args: Sequence[str]) -> Options:
    """Getopt::Long with permute: options anywhere, `--` ends them, `--opt=v` or `--opt v`."""
    opts = Options()
    items = list(args)
    while items:
        arg = items.pop(0)
        if arg == "--":
            opts.args.extend(items)
            break
        if not arg.startswith("-") or arg == "-":
            opts.args.append(arg)
            continue
        name, eq, inline = arg.lstrip("-").partition("=")
        option = _resolve_option(name)
        if option is None:
            opts.errors.append(f"Unknown option: {name}")
            continue
        kind = _OPTIONS[option]
        wanted = {Kind.FLAG: 0, Kind.NIX0: 0, Kind.VALUE: 1, Kind.NIX1: 1, Kind.NIX2: 2}[kind]
        values = [inline] if eq else []
        while len(values) < wanted and items:
            values.append(items.pop(0))
        if len(values) < wanted:
            opts.errors.append(f"Option {option} requires an argument")
            continue
        if wanted == 0 and eq:
            opts.errors.append(f"Option {option} does not take an argument")
            continue
        _record(opts, option, kind, values)
    return opts


def _record(opts: Options, option: str, kind: Kind, values: list[str]) -> None:
    match kind:
        case Kind.FLAG:
            opts.flags.add(option)
        case Kind.VALUE:
            opts.values[option] = values[0]
        case Kind.NIX0 | Kind.NIX1:
            opts.nix_flags.extend([f"--{option}", *values])
        case Kind.NIX2:
            opts.nix_flags2.extend([f"--{option}", *values])


@dataclass(frozen=True, slots=True)
class Ctx:
    prog: str
    host: Host
    opts: Options
    flake: str | None
    flake_attr: str

    def die(self, message: str) -> Die:
        return Die(f"{self.prog}: {message}")

    @property
    def nix_flags(self) -> list[str]:
        return [*self.opts.nix_flags, *self.opts.nix_flags2]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        host = Host.from_env(os.environ)
    except SimhostError as exc:
        print(f"nixos-container (simulated): {exc}", file=sys.stderr)
        return 1
    log_command(host, argv)
    fault = act_on_fault(host, "nixos-container", argv, os.environ)
    if fault is not None:
        return fault
    os.umask(0o022)
    try:
        return _run(argv[0], host, argv[1:])
    except Die as exc:
        sys.stdout.flush()
        print(str(exc), file=sys.stderr)
        return 1


def _run(prog: str, host: Host, args: list[str]) -> int:
    opts = parse_args(args)
    if "help" in opts.flags:
        sys.stdout.write(USAGE)
        return 0
    if opts.errors:
        print("\n".join(opts.errors), file=sys.stderr)
        return 1
    if ("host-address" in opts.values) != ("local-address" in opts.values):
        raise Die("With --host-address set, --local-address is required as well!")
    action = opts.args[0] if opts.args else ""
    if _perl_false(action):
        raise Die(f"{prog}: no action specified")
    if "config" in opts.values and "config-file" in opts.values:
        raise Die(
            "--config and --config-file are mutually incompatible. "
            "Please define one or the other, but not both"
        )
    ctx = _context(prog, host, opts)
    host.conf_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    host.containers_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if action == "list":
        return list_containers(ctx)
    name = opts.args[1] if len(opts.args) > 1 else ""
    if _perl_false(name):
        raise ctx.die("no container name specified")
    if not _NAME.match(name):
        raise ctx.die("invalid container name")
    if action == "create":
        return create(ctx, name)
    return _existing(ctx, action, name)


def _context(prog: str, host: Host, opts: Options) -> Ctx:
    flake = opts.values.get("flake")
    attr = DEFAULT_FLAKE_ATTR
    if flake is not None:
        match = _FLAKE_ATTR.match(flake)
        if match:
            flake, attr = match.group(1), match.group(2)
    return Ctx(prog, host, opts, flake, attr)


def _perl_false(text: str) -> bool:
    return text in ("", "0")


def list_containers(ctx: Ctx) -> int:
    for conf in sorted(ctx.host.conf_dir.glob("*.conf")):
        print(conf.name[: -len(".conf")])
    return 0


# -- create --------------------------------------------------------------------------------


def create(ctx: Ctx, name: str) -> int:
    host = ctx.host
    with hive_lock(host.create_lock_path):
        if "ensure-unique-name" in ctx.opts.flags:
            name = _unique_name(host, name)
        if host.conf(name).exists():
            raise ctx.die(f"container {LQ}{name}{RQ} already exists")
        # Interface names are short: so are container names.
        if len(name) > MAX_NAME_LENGTH:
            raise ctx.die(f"container name {LQ}{name}{RQ} is too long")
        host_address, local_address = _addresses(ctx)
        write_atomic(host.conf(name), _conf_text(ctx, host_address, local_address))
    print(f"host IP is {host_address}, container IP is {local_address}", file=sys.stderr)
    host.profiles_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    host.profile_dir(name).mkdir(mode=0o755, exist_ok=True)
    system_path = ctx.opts.values.get("system-path")
    if ctx.flake is not None:
        system_path = _build_flake(ctx, ctx.flake, name)
    if system_path is not None:
        if not _set_profile(host, name, system_path):
            _clear_state(ctx, name)
            raise ctx.die("failed to set initial container configuration")
    else:
        _write_nixos_config(ctx, name)
        _not_simulated("building <nixpkgs/nixos> configurations")
        _clear_state(ctx, name)
        raise ctx.die("failed to build initial container configuration")
    if "ensure-unique-name" in ctx.opts.flags:
        print(name)
    return 0


def _unique_name(host: Host, base: str) -> str:
    name, number = base, 0
    while host.conf(name).exists() or host.container_root(name).exists():
        name = f"{base}-{number}"
        number += 1
    return name


def _addresses(ctx: Ctx) -> tuple[str, str]:
    # The script reads every conf even when the addresses are given.
    used: set[str] = set()
    for conf in sorted(ctx.host.conf_dir.glob("*.conf")):
        text = conf.read_text()
        if _perl_false(text):
            raise Die(f"Died at {ctx.prog}")  # `read_file(...) or die`
        for key in ("HOST_ADDRESS", "LOCAL_ADDRESS"):
            match = re.search(rf"^{key}=([0-9.]+)$", text, re.MULTILINE)
            if match:
                used.add(match.group(1))
    given = ctx.opts.values.get("host-address"), ctx.opts.values.get("local-address")
    if given[0] is not None and given[1] is not None:
        return given[0], given[1]
    for number in range(1, 255):
        pair = f"10.233.{number}.1", f"10.233.{number}.2"
        if not used.intersection(pair):
            return pair
    raise ctx.die("out of IP addresses")


def _conf_text(ctx: Ctx, host_address: str, local_address: str) -> str:
    values = ctx.opts.values
    lines = [
        "PRIVATE_NETWORK=1",
        f"HOST_ADDRESS={host_address}",
        f"LOCAL_ADDRESS={local_address}",
        f"HOST_BRIDGE={values.get('bridge', '')}",
        f"HOST_PORT={values.get('port', '')}",
        f"AUTO_START={1 if 'auto-start' in ctx.opts.flags else 0}",
    ]
    if ctx.flake is not None:
        lines.append(f"FLAKE={ctx.flake}")
    return "".join(line + "\n" for line in lines)


def _write_nixos_config(ctx: Ctx, name: str) -> None:
    extra = ctx.opts.values.get("config") or ""
    config_file = ctx.opts.values.get("config-file")
    if not extra and config_file:
        extra = f"imports = [ {Path(config_file).resolve()} ];"
    etc = ctx.host.container_root(name) / "etc" / "nixos"
    etc.mkdir(mode=0o755, parents=True, exist_ok=True)
    (etc / "configuration.nix").write_text(
        "{ config, lib, pkgs, ... }:\n\n"
        "{ boot.isContainer = true;\n"
        f'  networking.hostName = lib.mkDefault "{name}";\n'
        "  networking.useDHCP = false;\n"
        f"  {extra}\n"
        "}\n"
    )


def _not_simulated(what: str) -> None:
    print(f"nixos-container (simulated): {what} is not simulated", file=sys.stderr)


# -- build and profile ---------------------------------------------------------------------


def _build_flake(ctx: Ctx, flake: str, name: str) -> str:
    """Build the container's system; its out-link is the simulation's GC root for it.

    nix's output is inherited, so its progress reaches our stderr line by line.
    """
    installable = f'{flake}#nixosConfigurations."{ctx.flake_attr}".config.system.build.toplevel'
    gcroot = ctx.host.gcroot(name)
    gcroot.parent.mkdir(parents=True, exist_ok=True)
    argv = [*NIX, "build", "--out-link", str(gcroot), *ctx.nix_flags, "--", installable]
    sys.stdout.flush()
    if subprocess.run(argv, check=False).returncode != 0:
        raise ctx.die(f"failed to build container from flake '{flake}'")
    return str(gcroot.readlink())


def _set_profile(host: Host, name: str, system_path: str) -> bool:
    # nix-env --set wants a valid store path.
    if not Path(system_path).exists():
        print(f"error: path '{system_path}' is not a valid store path", file=sys.stderr)
        return False
    set_profile(host.profile_dir(name), system_path)
    return True


def _clear_state(ctx: Ctx, name: str) -> None:
    host = ctx.host
    for path in (host.profile_dir(name), host.gcroot(name), host.container_root(name)):
        remove_tree(path)
    try:
        host.conf(name).unlink()
    except OSError as exc:
        raise Die(f"Died at {ctx.prog}") from exc


# -- the other actions ---------------------------------------------------------------------


def _existing(ctx: Ctx, action: str, name: str) -> int:
    if not ctx.host.conf(name).exists():
        if action == "destroy":
            return 0
        if action == "status":
            print("gone")
        raise ctx.die(f"container {LQ}{name}{RQ} does not exist")
    handler = _ACTIONS.get(action)
    if handler is None:
        raise ctx.die(f"unknown action {LQ}{action}{RQ}")
    return handler(ctx, name)


def restart(ctx: Ctx, name: str) -> int:
    _systemctl_or_die(ctx, "stop", name, "failed to stop container")
    _systemctl_or_die(ctx, "start", name, "failed to start container")
    return 0


def start(ctx: Ctx, name: str) -> int:
    _systemctl_or_die(ctx, "start", name, "failed to start container")
    return 0


def stop(ctx: Ctx, name: str) -> int:
    _systemctl_or_die(ctx, "stop", name, "failed to stop container")
    return 0


def terminate(ctx: Ctx, name: str) -> int:
    _terminate(ctx, name)
    return 0


def status(ctx: Ctx, name: str) -> int:
    print("up" if _is_running(name) else "down")
    return 0


def not_simulated(ctx: Ctx, name: str) -> int:
    _not_simulated("logging in to or running commands in a container")
    return 1


def _systemctl(*args: str) -> int:
    sys.stdout.flush()
    try:
        return subprocess.run([SYSTEMCTL, *args], check=False).returncode
    except FileNotFoundError:
        print(f'Can\'t exec "{SYSTEMCTL}": No such file or directory', file=sys.stderr)
        return 255


def _systemctl_or_die(ctx: Ctx, verb: str, name: str, message: str) -> None:
    if _systemctl(verb, f"container@{name}") != 0:
        raise ctx.die(message)


def _is_running(name: str) -> bool:
    # The script's backticks: stdout only, no status check, a loose regex.
    sys.stdout.flush()
    try:
        out = subprocess.run(
            [SYSTEMCTL, "show", f"container@{name}"],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return False
    return "ActiveState=active" in out.stdout


def _terminate(ctx: Ctx, name: str) -> None:
    # The script kills the machine with machinectl, which is not simulated.
    _systemctl_or_die(ctx, "stop", name, "failed to terminate container")


def destroy(ctx: Ctx, name: str) -> int:
    if not os.access(ctx.host.conf(name), os.W_OK):
        raise ctx.die(
            "cannot destroy declarative container (remove it from your configuration.nix instead)"
        )
    if _is_running(name):
        _terminate(ctx, name)
    _clear_state(ctx, name)
    return 0


def update(ctx: Ctx, name: str) -> int:
    values = ctx.opts.values
    flake = ctx.flake
    if flake is None and "config-file" not in values and "config" not in values:
        # Rebuild the recorded ref: with the attr parsed from --flake, i.e. "container".
        match = re.search(r"^FLAKE=(.*)$", ctx.host.conf(name).read_text(), re.MULTILINE)
        flake = match.group(1) if match else None
    if flake is not None:
        system_path = _build_flake(replace(ctx, flake=flake), flake, name)
        if not _set_profile(ctx.host, name, system_path):
            raise ctx.die("failed to set container configuration")
    else:
        if values.get("config") or values.get("config-file"):
            _write_nixos_config(ctx, name)
        _not_simulated("building <nixpkgs/nixos> configurations")
        raise ctx.die("failed to build container configuration")
    if _is_running(name):
        print("reloading container...", file=sys.stderr)
        _systemctl_or_die(ctx, "reload", name, "failed to reload container")
    return 0


def show_ip(ctx: Ctx, name: str) -> int:
    text = ctx.host.conf(name).read_text()
    match = re.search(r"^LOCAL_ADDRESS=([0-9.]+)(/[0-9]+)?$", text, re.MULTILINE) or re.search(
        r"^LOCAL_ADDRESS6=([0-9a-f:]+)(/[0-9]+)?$", text, re.MULTILINE
    )
    if not match:
        raise ctx.die("cannot get IP address")
    print(match.group(1))
    return 0


def show_host_key(ctx: Ctx, name: str) -> int:
    ssh = ctx.host.container_root(name) / "etc" / "ssh"
    key = ssh / "ssh_host_ed25519_key.pub"
    if not key.exists():
        key = ssh / "ssh_host_ecdsa_key.pub"
    if not key.is_file():
        return 1
    sys.stdout.write(key.read_text())
    return 0


_ACTIONS: dict[str, Callable[[Ctx, str], int]] = {
    "destroy": destroy,
    "restart": restart,
    "start": start,
    "stop": stop,
    "terminate": terminate,
    "status": status,
    "update": update,
    "show-ip": show_ip,
    "show-host-key": show_host_key,
    "login": not_simulated,
    "root-login": not_simulated,
    "run": not_simulated,
}
