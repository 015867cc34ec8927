"""A simulated `journalctl`: a container's own journal, read from the host with `-M`.

A NixOS container's journal lives in its root (`/var/lib/nixos-containers/<c>/var/log/
journal`), written by the container's journald; `journalctl -M <c>` reads it through
systemd-machined, which knows only running machines. Here it is
`containers/<c>/var/log/journal/simulated.journal` (state.py), one entry a line: a JSON
object of the entry's fields, each a string or, for bytes that are not UTF-8, a list of
byte values (`journalctl -o json`'s own form). The container's systemd logs its start,
stop and reload into it (`record`, called by the simulated systemctl); a test plays a
process in the container that logs whatever bytes it likes with `append`.

The options hivegen uses, parsed as journalctl parses them (getopt_long, options and
arguments in any order): `-M/--machine`, `-n/--lines` (an optional value: 10 without
one; a number, `+N` for the first N, or `all`), `-f/--follow` (the last 10 entries
unless `-n`, then each new one until killed), `-o/--output` (short, short-iso, cat,
json), `-a/--all`, `-q/--quiet`, `--no-pager`. Output follows journalctl: the short
formats print `TIME HOST IDENTIFIER[PID]: MESSAGE`, a message's further lines indented
under its first, a message that is not printable UTF-8 as `[NB blob data]` unless
`--all`, `-- Boot <id> --` where the boot changes and `-- No entries --` for nothing
(neither with `--quiet`). An unknown option exits 1 with getopt's message; `-M` of a
machine that is not running prints machined's "No machine '<c>' known" and exits 1.
journalctl's other options are real but not simulated, and say so.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from hivegen.simhost.state import Host, SimhostError, append_line, log_command

EXIT_FAILED = 1
DEFAULT_LINES = 10
FOLLOW_POLL = 0.05

Fields = dict[str, str | list[int]]

_MODES = ("short", "short-iso", "cat", "json")
# Real output modes this simulation leaves out.
_OTHER_MODES = frozenset(
    {
        "short-precise",
        "short-iso-precise",
        "short-full",
        "short-monotonic",
        "short-unix",
        "short-delta",
        "verbose",
        "export",
        "json-pretty",
        "json-sse",
        "json-seq",
        "with-unit",
    }
)
_LONG_FLAGS = {"--follow": "f", "--all": "a", "--quiet": "q", "--no-pager": "", "--full": ""}
_SHORT_FLAGS = {"f": "f", "a": "a", "q": "q", "l": ""}
# Real options this simulation leaves out: say so rather than pretend they are unknown.
_NOT_SIMULATED_LONG = frozenset(
    {
        "--unit",
        "--user-unit",
        "--boot",
        "--dmesg",
        "--since",
        "--until",
        "--directory",
        "--file",
        "--root",
        "--image",
        "--identifier",
        "--priority",
        "--grep",
        "--reverse",
        "--utc",
        "--merge",
        "--cursor",
        "--after-cursor",
        "--show-cursor",
        "--list-boots",
        "--disk-usage",
        "--fields",
        "--field",
        "--catalog",
        "--output-fields",
        "--pager-end",
        "--no-hostname",
        "--no-full",
        "--system",
        "--user",
        "--namespace",
        "--header",
        "--verify",
        "--sync",
        "--flush",
        "--rotate",
        "--vacuum-size",
        "--vacuum-time",
        "--vacuum-files",
        "--help",
        "--version",
    }
)
_NOT_SIMULATED_SHORT = frozenset("hebkDpgcSUtTuNFxrmi")


class Usage(Exception):
    pass


@dataclass(slots=True)
class Opts:
    machine: str | None = None
    # None: all; a negative number -N: the first N ("+N").
    lines: int | None = None
    lines_given: bool = False
    follow: bool = False
    all: bool = False
    quiet: bool = False
    output: str = "short"


def _parse_lines(value: str) -> int | None:
    if value == "all":
        return None
    head = value.startswith("+")
    digits = value[1:] if head else value
    if not digits.isdigit():
        raise ValueError(value)
    return -int(digits) if head else int(digits)


def parse_args(args: Sequence[str]) -> Opts:
    """getopt_long with permutation; any argument that is not an option is a match."""
    parser = _Args(list(args))
    opts = parser.parse()
    if opts.output in _OTHER_MODES:
        raise Usage(f"journalctl (simulated): output mode '{opts.output}' is not simulated")
    if opts.output not in _MODES:
        raise Usage(f"Unknown output format '{opts.output}'.")
    if opts.follow and not opts.lines_given:
        opts.lines = DEFAULT_LINES
    return opts


@dataclass(slots=True)
class _Args:
    items: list[str]
    opts: Opts = field(default_factory=Opts)

    def parse(self) -> Opts:
        matches: list[str] = []
        while self.items:
            arg = self.items.pop(0)
            if arg == "--":
                matches.extend(self.items)
                break
            if not arg.startswith("-") or arg == "-":
                matches.append(arg)
            elif arg.startswith("--"):
                self.long(arg)
            else:
                self.short(arg[1:])
        if matches:
            raise Usage(f"journalctl (simulated): matches are not simulated: {matches[0]!r}")
        return self.opts

    def long(self, arg: str) -> None:
        name, eq, inline = arg.partition("=")
        attached = inline if eq else None
        missing = f"journalctl: option '{name}' requires an argument"
        if name == "--machine":
            self.opts.machine = self.required(attached, missing)
        elif name == "--output":
            self.opts.output = self.required(attached, missing)
        elif name == "--lines":
            self.lines(attached)
        elif name in _LONG_FLAGS and attached is None:
            _set_flag(self.opts, _LONG_FLAGS[name])
        elif name in _LONG_FLAGS:
            raise Usage(f"journalctl: option '{name}' doesn't allow an argument")
        elif name in _NOT_SIMULATED_LONG:
            raise Usage(f"journalctl (simulated): option '{name}' is not simulated")
        else:
            raise Usage(f"journalctl: unrecognized option '{arg}'")

    def short(self, cluster: str) -> None:
        while cluster:
            letter, cluster = cluster[0], cluster[1:]
            missing = f"journalctl: option requires an argument -- '{letter}'"
            if letter == "M":
                self.opts.machine, cluster = self.required(cluster or None, missing), ""
            elif letter == "o":
                self.opts.output, cluster = self.required(cluster or None, missing), ""
            elif letter == "n":
                self.lines(cluster or None)
                cluster = ""
            elif letter in _SHORT_FLAGS:
                _set_flag(self.opts, _SHORT_FLAGS[letter])
            elif letter in _NOT_SIMULATED_SHORT:
                raise Usage(f"journalctl (simulated): option '-{letter}' is not simulated")
            else:
                raise Usage(f"journalctl: invalid option -- '{letter}'")

    def required(self, attached: str | None, missing: str) -> str:
        if attached is not None:
            return attached
        if not self.items:
            raise Usage(missing)
        return self.items.pop(0)

    def lines(self, attached: str | None) -> None:
        # `-n`'s value is optional: journalctl takes the next argument only if it parses.
        self.opts.lines_given = True
        if attached is not None:
            try:
                self.opts.lines = _parse_lines(attached)
            except ValueError:
                raise Usage(f"Failed to parse lines '{attached}'") from None
            return
        self.opts.lines = DEFAULT_LINES
        if self.items and not self.items[0].startswith("-"):
            try:
                self.opts.lines = _parse_lines(self.items[0])
            except ValueError:
                return
            self.items.pop(0)


def _set_flag(opts: Opts, flag: str) -> None:
    match flag:
        case "f":
            opts.follow = True
        case "a":
            opts.all = True
        case "q":
            opts.quiet = True
        case _:
            pass  # accepted, no effect here (--no-pager, --full)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        host = Host.from_env(os.environ)
    except SimhostError as exc:
        print(f"journalctl (simulated): {exc}", file=sys.stderr)
        return EXIT_FAILED
    log_command(host, argv)
    try:
        opts = parse_args(argv[1:])
    except Usage as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    if opts.machine is None:
        print(
            "journalctl (simulated): only a container's journal (-M) is simulated",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if not _running(host, opts.machine):
        # machined's answer to OpenMachineRootDirectory, then journalctl's own line.
        print(
            f"Failed to open root directory of machine '{opts.machine}': "
            f"No machine '{opts.machine}' known\n"
            "Failed to open journal: No such device or address",
            file=sys.stderr,
        )
        return EXIT_FAILED
    out = sys.stdout.buffer
    # journalctl itself catches SIGINT, to end --follow cleanly (the wrapper's default
    # lets the other tools die of it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _show(host.container_journal(opts.machine), opts, out)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how --follow ends
    except BrokenPipeError:
        # The reader left: nothing more to say, and nothing to flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    return 0


def _running(host: Host, machine: str) -> bool:
    """machined knows a container while its unit runs it."""
    # Imported here: systemctl records into the journal through this module.
    from hivegen.simhost import systemctl, units

    unit = systemctl._settled(host, units.mangle(f"container@{machine}"), lock=True)
    return unit.active is units.ActiveState.ACTIVE


@dataclass(slots=True)
class _Printer:
    opts: Opts
    out: BinaryIO
    boot: str | None = None
    shown: int = 0

    def entry(self, fields: Fields) -> None:
        boot = _text(fields.get("_BOOT_ID", ""))
        json_mode = self.opts.output == "json"
        if not self.opts.quiet and not json_mode and self.boot is not None and boot != self.boot:
            self.out.write(f"-- Boot {boot} --\n".encode())
        self.boot = boot
        self.shown += 1
        match self.opts.output:
            case "json":
                self.out.write(_json_line(fields, self.opts.all))
            case "cat":
                self.out.write(_message(fields, self.opts.all, b"") + b"\n")
            case _:
                prefix = _prefix(fields, iso=self.opts.output == "short-iso")
                self.out.write(prefix + _message(fields, self.opts.all, prefix) + b"\n")


def _show(path: Path, opts: Opts, out: BinaryIO) -> None:
    printer = _Printer(opts, out)
    entries, offset = _read(path, 0)
    match opts.lines:
        case None:
            shown = entries
        case n if n < 0:
            shown = entries[:-n]
        case n:
            shown = entries[-n:] if n else []
    for fields in shown:
        printer.entry(fields)
    if not opts.follow:
        if printer.shown == 0 and not opts.quiet:
            out.write(b"-- No entries --\n")
        out.flush()
        return
    out.flush()
    while True:  # until killed, as journalctl --follow
        time.sleep(FOLLOW_POLL)
        new, offset = _read(path, offset)
        for fields in new:
            printer.entry(fields)
        if new:
            out.flush()


def _read(path: Path, offset: int) -> tuple[list[Fields], int]:
    """The whole entries (lines) from `offset` on, and where the next read starts."""
    try:
        with path.open("rb") as stream:
            if stream.seek(0, os.SEEK_END) < offset:
                offset = 0  # made anew (the container was destroyed and created again)
            stream.seek(offset)
            data = stream.read()
    except FileNotFoundError:
        return [], 0
    complete = data[: data.rfind(b"\n") + 1]
    return [f for f in map(_parse_entry, complete.splitlines()) if f is not None], offset + len(
        complete
    )


def _parse_entry(line: bytes) -> Fields | None:
    # A line that is not an entry is passed over, as journalctl passes over a corrupt one.
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if isinstance(v, str | list)}


def _raw(value: str | list[int] | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8", errors="surrogateescape")
    return bytes(b & 0xFF for b in value if isinstance(b, int))


def _text(value: str | list[int] | None) -> str:
    return _raw(value).decode("utf-8", errors="replace")


def _printable(data: bytes) -> bool:
    """systemd's utf8_is_printable(): valid UTF-8, no control but tab and newline."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any((ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F for c in text)


def _prefix(fields: Fields, *, iso: bool) -> bytes:
    from datetime import datetime  # only the short formats need it

    usec = int(_text(fields.get("__REALTIME_TIMESTAMP")) or 0)
    when = datetime.fromtimestamp(usec / 1_000_000).astimezone()
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S%z" if iso else "%b %d %H:%M:%S")
    parts = [stamp.encode()]
    if "_HOSTNAME" in fields:
        parts.append(_raw(fields["_HOSTNAME"]))
    identifier = _raw(fields.get("SYSLOG_IDENTIFIER") or fields.get("_COMM"))
    pid = _raw(fields.get("_PID") or fields.get("SYSLOG_PID"))
    if identifier:
        parts.append(identifier + (b"[" + pid + b"]" if pid else b"") + b":")
    return b" ".join(parts) + b" "


def _message(fields: Fields, show_all: bool, prefix: bytes) -> bytes:
    message = _raw(fields.get("MESSAGE")).rstrip(b"\n")
    if not show_all and not _printable(message):
        return f"[{_format_bytes(len(message))} blob data]".encode()
    # Further lines of one message are indented under its first, as journalctl prints them.
    return message.replace(b"\n", b"\n" + b" " * len(prefix))


def _format_bytes(size: int) -> str:
    for suffix, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}{suffix}"
    return f"{size}B"


def _json_line(fields: Fields, show_all: bool) -> bytes:
    shown: dict[str, object] = {}
    for key, value in fields.items():
        data = _raw(value)
        if not show_all and len(data) >= 4096:
            shown[key] = None  # as journalctl, for a large field without --all
        elif _printable(data):
            shown[key] = data.decode("utf-8")
        else:
            shown[key] = list(data)
    return json.dumps(shown, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


# -- writing -------------------------------------------------------------------------------


def append(host: Host, container: str, fields: Mapping[str, str | bytes]) -> None:
    """One entry in the container's journal, as its journald writes it: `fields` and the
    ones journald adds (time, boot, hostname) unless given. Bytes that are not UTF-8 are
    kept as a list of byte values; a message may hold any byte, a newline included."""
    boot = _current_boot(host, container)
    entry: Fields = {
        "__REALTIME_TIMESTAMP": str(time.time_ns() // 1000),
        "_BOOT_ID": boot,
        "_HOSTNAME": container,
        "PRIORITY": "6",
        "_TRANSPORT": "journal",
    }
    for key, value in fields.items():
        if isinstance(value, bytes):
            try:
                entry[key] = value.decode("utf-8")
            except UnicodeDecodeError:
                entry[key] = list(value)
        else:
            entry[key] = value
    entry["__CURSOR"] = f"s=simulated;b={entry['_BOOT_ID']};t={entry['__REALTIME_TIMESTAMP']}"
    # One O_APPEND write a line: a follower never sees half an entry as a whole one.
    line = json.dumps(entry, ensure_ascii=True, sort_keys=True) + "\n"
    append_line(host.container_journal(container), line)


def record(host: Host, container: str, *messages: str) -> None:
    """What the container's systemd (PID 1) logs as it starts, stops or reloads."""
    for message in messages:
        append(host, container, {"SYSLOG_IDENTIFIER": "systemd", "_PID": "1", "MESSAGE": message})


def _current_boot(host: Host, container: str) -> str:
    # The unit's invocation: a new one each start, as the container boots anew.
    from hivegen.simhost import units

    return units.read_unit(host, units.mangle(f"container@{container}")).invocation_id
