"""Commits read straight from a git object store, through directory fds: no process.

`status` must stay one process for the whole hive, yet it counts each agent's commits
that nobody proposed (unproposed.py), which means walking history in the manager's
repo. git never runs there (snapshot.py), so hivegen reads the objects itself: loose
objects and packs (deltas included), every file opened with `O_NOFOLLOW` below a
directory fd, only regular files, bounded in size, and every object checked against
its sha, so that a planted file cannot stand in for a commit. Alternates are not
followed: a commit only they hold reads as missing. Anything malformed raises
`UnreadableObjects`, never a crash and never an unbounded read.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from hivegen.errors import HivegenError

# A commit of a config repo is a few hundred bytes; a message is at most 64 KiB
# (policy.py). Delta bases may be other objects, so the bound is generous.
MAX_OBJECT = 16 * 1024 * 1024
MAX_INDEX = 64 * 1024 * 1024
MAX_PACKS = 256
# git writes chains up to 50 deep by default and never beyond 4095.
MAX_DELTA_DEPTH = 4095
_SHA = re.compile(r"[0-9a-f]{40}\Z")
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TYPES = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}
_OFS_DELTA, _REF_DELTA = 6, 7
_CHUNK = 64 * 1024


class UnreadableObjects(HivegenError):
    """An object store hivegen cannot (or will not) read: names the file and why."""


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    time: int  # the committer's timestamp
    subject: str  # the first paragraph of the message, one line (git's %s)


def _open_dir(dir_fd: int, name: str) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except (NotADirectoryError, OSError) as exc:
        raise UnreadableObjects(f"{name} is not a directory ({exc.strerror})") from None


def _open_file(dir_fd: int, name: str, shown: str) -> tuple[int, int] | None:
    """(fd, size) of a regular file below `dir_fd`, never through a link; None if absent."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnreadableObjects(f"{shown}: {exc.strerror} (a link, or not a file)") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnreadableObjects(f"{shown} is not a regular file")
    return fd, st.st_size


def _read_all(fd: int, size: int, limit: int, shown: str) -> bytes:
    if size > limit:
        raise UnreadableObjects(f"{shown} is {size} bytes; at most {limit} are read")
    data = os.pread(fd, limit + 1, 0)
    if len(data) > limit:
        raise UnreadableObjects(f"{shown} grew past {limit} bytes while being read")
    return data


def _inflate(source: bytes, limit: int, shown: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(source, limit + 1)
    except zlib.error as exc:
        raise UnreadableObjects(f"{shown} is not zlib data ({exc})") from None
    if len(data) > limit:
        raise UnreadableObjects(f"{shown} inflates past {limit} bytes")
    return data


@dataclass(slots=True)
class _Pack:
    name: str
    pack_fd: int
    pack_size: int
    index: bytes
    count: int

    def offset_of(self, raw: bytes) -> int | None:
        first = raw[0]
        lo = int.from_bytes(self.index[8 + 4 * (first - 1) : 12 + 4 * (first - 1)]) if first else 0
        hi = int.from_bytes(self.index[8 + 4 * first : 12 + 4 * first])
        hi = min(hi, self.count)
        names = 8 + 1024
        while lo < hi:
            mid = (lo + hi) // 2
            here = self.index[names + 20 * mid : names + 20 * mid + 20]
            if here == raw:
                return self._offset(mid)
            if here < raw:
                lo = mid + 1
            else:
                hi = mid
        return None

    def _offset(self, position: int) -> int:
        small = 8 + 1024 + 24 * self.count + 4 * position
        value = int.from_bytes(self.index[small : small + 4])
        if value & 0x8000_0000:
            large = 8 + 1024 + 28 * self.count + 8 * (value & 0x7FFF_FFFF)
            if large + 8 > len(self.index) - 40:
                raise UnreadableObjects(f"{self.name}.idx: a large offset lies past its end")
            value = int.from_bytes(self.index[large : large + 8])
        if not 12 <= value < self.pack_size:
            raise UnreadableObjects(f"{self.name}.idx: an offset lies outside the pack")
        return value


@dataclass(slots=True)
class ObjectStore:
    """The objects of one `.git` directory, held open by fd; close() when done."""

    where: Path
    objects_fd: int | None
    _subdirs: dict[str, int | None] = field(default_factory=dict)
    _packs: list[_Pack] | None = None

    @classmethod
    def open(cls, git_fd: int, where: Path) -> ObjectStore:
        """The store below an open `.git` directory fd (the caller keeps that fd)."""
        return cls(where, _open_dir(git_fd, "objects"))

    def close(self) -> None:
        fds = [fd for fd in self._subdirs.values() if fd is not None]
        fds += [p.pack_fd for p in self._packs or ()]
        if self.objects_fd is not None:
            fds.append(self.objects_fd)
        for fd in fds:
            os.close(fd)
        self._subdirs.clear()
        self._packs = []
        self.objects_fd = None

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- lookups ------------------------------------------------------------------------

    def has(self, sha: str) -> bool:
        """Whether the store holds `sha` (loose or packed), without reading it."""
        _check_sha(sha)
        subdir = self._subdir(sha[:2])
        if subdir is not None:
            try:
                os.stat(sha[2:], dir_fd=subdir, follow_symlinks=False)
                return True
            except FileNotFoundError:
                pass
        raw = bytes.fromhex(sha)
        return any(p.offset_of(raw) is not None for p in self._all_packs())

    def commit(self, sha: str) -> Commit | None:
        """The commit `sha`, or None when the store does not hold it."""
        found = self._object(sha, 0)
        if found is None:
            return None
        kind, data = found
        if kind != b"commit":
            raise UnreadableObjects(f"{self.where}: {sha} is a {kind.decode()}, not a commit")
        return _parse_commit(sha, data, self.where)

    def _object(self, sha: str, depth: int) -> tuple[bytes, bytes] | None:
        _check_sha(sha)
        found = self._loose(sha)
        if found is None:
            raw = bytes.fromhex(sha)
            for pack in self._all_packs():
                offset = pack.offset_of(raw)
                if offset is not None:
                    found = self._packed(pack, offset, depth)
                    break
        if found is None:
            return None
        kind, data = found
        actual = hashlib.sha1(b"%s %d\0" % (kind, len(data)) + data, usedforsecurity=False)
        if actual.hexdigest() != sha:
            raise UnreadableObjects(f"{self.where}: object {sha} holds other content")
        return found

    # -- loose objects ------------------------------------------------------------------

    def _subdir(self, prefix: str) -> int | None:
        if prefix not in self._subdirs:
            self._subdirs[prefix] = (
                _open_dir(self.objects_fd, prefix) if self.objects_fd is not None else None
            )
        return self._subdirs[prefix]

    def _loose(self, sha: str) -> tuple[bytes, bytes] | None:
        subdir = self._subdir(sha[:2])
        shown = f"{self.where}/objects/{sha[:2]}/{sha[2:]}"
        opened = None if subdir is None else _open_file(subdir, sha[2:], shown)
        if opened is None:
            return None
        fd, size = opened
        try:
            compressed = _read_all(fd, size, MAX_OBJECT, shown)
        finally:
            os.close(fd)
        data = _inflate(compressed, MAX_OBJECT + 64, shown)
        header, nul, body = data.partition(b"\0")
        kind, _, length = header.partition(b" ")
        if not nul or kind not in _TYPES.values() or not length.isdigit():
            raise UnreadableObjects(f"{shown} is not a git object")
        if int(length) != len(body):
            raise UnreadableObjects(f"{shown}: its header says {int(length)} bytes")
        return kind, body

    # -- packs --------------------------------------------------------------------------

    def _all_packs(self) -> list[_Pack]:
        if self._packs is None:
            self._packs = []
            pack_dir = None if self.objects_fd is None else _open_dir(self.objects_fd, "pack")
            if pack_dir is not None:
                try:
                    self._packs = self._load_packs(pack_dir)
                finally:
                    os.close(pack_dir)
        return self._packs

    def _load_packs(self, pack_dir: int) -> list[_Pack]:
        names = sorted(n[:-4] for n in os.listdir(pack_dir) if n.endswith(".idx"))
        if len(names) > MAX_PACKS:
            raise UnreadableObjects(f"{self.where}: {len(names)} packs (at most {MAX_PACKS})")
        packs: list[_Pack] = []
        total = 0
        try:
            for name in names:
                shown = f"{self.where}/objects/pack/{name}"
                index_file = _open_file(pack_dir, f"{name}.idx", f"{shown}.idx")
                if index_file is None:
                    continue
                fd, size = index_file
                try:
                    total += size
                    index = _read_all(fd, size, MAX_INDEX - total + size, f"{shown}.idx")
                finally:
                    os.close(fd)
                count = _check_index(index, f"{shown}.idx")
                opened = _open_file(pack_dir, f"{name}.pack", f"{shown}.pack")
                if opened is None:
                    continue  # an index whose pack is gone (being written or removed)
                packs.append(_Pack(shown, opened[0], opened[1], index, count))
        except BaseException:
            for pack in packs:
                os.close(pack.pack_fd)
            raise
        return packs

    def _packed(self, pack: _Pack, offset: int, depth: int) -> tuple[bytes, bytes]:
        if depth > MAX_DELTA_DEPTH:
            raise UnreadableObjects(f"{pack.name}.pack: a delta chain deeper than git makes")
        head = os.pread(pack.pack_fd, 32, offset)
        kind, size, used = _entry_header(head, pack.name)
        if size > MAX_OBJECT:
            raise UnreadableObjects(f"{pack.name}.pack: an object of {size} bytes")
        base: tuple[bytes, bytes] | None = None
        if kind == _OFS_DELTA:
            distance, more = _offset_varint(head[used:], pack.name)
            used += more
            if not 0 < distance < offset:
                raise UnreadableObjects(f"{pack.name}.pack: a delta base outside the pack")
            base = self._packed(pack, offset - distance, depth + 1)
        elif kind == _REF_DELTA:
            base_sha = head[used : used + 20].hex()
            used += 20
            base = self._object(base_sha, depth + 1)
            if base is None:
                raise UnreadableObjects(f"{pack.name}.pack: delta base {base_sha} is missing")
        elif kind not in _TYPES:
            raise UnreadableObjects(f"{pack.name}.pack: an entry of unknown type {kind}")
        data = self._inflate_at(pack, offset + used, size)
        if base is None:
            return _TYPES[kind], data
        return base[0], _apply_delta(base[1], data, pack.name)

    def _inflate_at(self, pack: _Pack, offset: int, size: int) -> bytes:
        inflater = zlib.decompressobj()
        out = bytearray()
        position = offset
        try:
            while not inflater.eof and len(out) <= size:
                chunk = inflater.unconsumed_tail or os.pread(pack.pack_fd, _CHUNK, position)
                if not inflater.unconsumed_tail:
                    position += len(chunk)
                if not chunk:
                    break
                out += inflater.decompress(chunk, size + 1 - len(out))
        except zlib.error as exc:
            raise UnreadableObjects(f"{pack.name}.pack: a damaged entry ({exc})") from None
        if len(out) != size:
            raise UnreadableObjects(f"{pack.name}.pack: an entry is not the size it says")
        return bytes(out)


def open_git_dir(path: Path) -> int:
    """fd of a `.git` directory hivegen owns (an applied repo): no link followed."""
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise UnreadableObjects(f"cannot open {path}: {exc.strerror}") from None


def _check_sha(sha: str) -> None:
    if not _SHA.match(sha):
        raise UnreadableObjects(f"not a commit id: {sha[:60]!r}")


def _check_index(index: bytes, shown: str) -> int:
    if index[:8] != b"\xfftOc\x00\x00\x00\x02" or len(index) < 8 + 1024 + 40:
        raise UnreadableObjects(f"{shown} is not a version 2 pack index")
    count = int.from_bytes(index[8 + 1020 : 8 + 1024])
    if len(index) < 8 + 1024 + 28 * count + 40:
        raise UnreadableObjects(f"{shown} is shorter than the {count} objects it lists")
    return count


def _entry_header(head: bytes, shown: str) -> tuple[int, int, int]:
    """(type, inflated size, header length) of a pack entry."""
    if not head:
        raise UnreadableObjects(f"{shown}.pack: an entry past its end")
    byte = head[0]
    # The size's low four bits, then the rest as a delta's sizes are written.
    rest, used = _size_varint(head, 1, shown) if byte & 0x80 else (0, 1)
    return (byte >> 4) & 7, (byte & 15) | rest << 4, used


def _offset_varint(data: bytes, shown: str) -> tuple[int, int]:
    if not data:
        raise UnreadableObjects(f"{shown}.pack: a damaged delta header")
    byte = data[0]
    value, used = byte & 0x7F, 1
    while byte & 0x80:
        if used >= min(len(data), 10):
            raise UnreadableObjects(f"{shown}.pack: a damaged delta header")
        byte = data[used]
        value = ((value + 1) << 7) | (byte & 0x7F)
        used += 1
    return value, used


def _size_varint(data: bytes, at: int, shown: str) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise UnreadableObjects(f"{shown}.pack: a damaged delta")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        shift += 7
        at += 1
        if not byte & 0x80:
            return value, at


def _copy_op(op: int, delta: bytes, at: int, shown: str) -> tuple[int, int, int]:
    """(offset, size, next position) of a delta's copy instruction `op`."""
    fields = [0, 0]
    for bit in range(7):
        if op & (1 << bit):
            if at >= len(delta):
                raise UnreadableObjects(f"{shown}.pack: a delta ends inside an instruction")
            which, shift = (0, 8 * bit) if bit < 4 else (1, 8 * (bit - 4))
            fields[which] |= delta[at] << shift
            at += 1
    return fields[0], fields[1] or 0x10000, at


def _apply_delta(base: bytes, delta: bytes, shown: str) -> bytes:
    source_size, at = _size_varint(delta, 0, shown)
    target_size, at = _size_varint(delta, at, shown)
    if source_size != len(base) or target_size > MAX_OBJECT:
        raise UnreadableObjects(f"{shown}.pack: a delta that does not fit its base")
    out = bytearray()
    while at < len(delta) and len(out) <= target_size:
        op = delta[at]
        at += 1
        if op & 0x80:
            offset, size, at = _copy_op(op, delta, at, shown)
            if offset + size > len(base):
                raise UnreadableObjects(f"{shown}.pack: a delta copies past its base")
            out += base[offset : offset + size]
        elif op:
            if at + op > len(delta):
                raise UnreadableObjects(f"{shown}.pack: a delta inserts past its end")
            out += delta[at : at + op]
            at += op
        else:
            raise UnreadableObjects(f"{shown}.pack: a delta with a reserved opcode")
    if len(out) != target_size:
        raise UnreadableObjects(f"{shown}.pack: a delta that is not the size it says")
    return bytes(out)


def _parse_commit(sha: str, data: bytes, where: Path) -> Commit:
    header, _, message = data.partition(b"\n\n")
    parents: list[str] = []
    when = 0
    for line in header.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == b"parent":
            parent = value.decode("ascii", errors="replace")
            if not _SHA.match(parent):
                raise UnreadableObjects(f"{where}: commit {sha} has a malformed parent")
            parents.append(parent)
        elif key == b"committer":
            stamp = value.rpartition(b">")[2].split()
            when = int(stamp[0]) if stamp and stamp[0].isdigit() else 0
    paragraph = message.lstrip(b"\n").split(b"\n\n", 1)[0]
    subject = " ".join(
        line.strip() for line in paragraph.decode("utf-8", errors="replace").splitlines()
    )
    return Commit(sha, tuple(parents), when, subject.strip())
