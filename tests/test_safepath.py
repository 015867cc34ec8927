"""safepath: reaching a directory under a trusted root without following anything."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hivegen import fsutil, safepath


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    root.chmod(0o755)
    return root


def test_a_real_path_opens_and_is_the_directory(root: Path) -> None:
    with safepath.opened_dir(root, "a/b") as fd:
        assert os.fstat(fd).st_ino == (root / "a" / "b").stat().st_ino


@pytest.mark.parametrize("where", ["a", "a/b"])
def test_a_symlink_at_any_depth_is_refused_naming_it(
    root: Path, tmp_path: Path, where: str
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(exist_ok=True)
    (target / "b").mkdir(exist_ok=True)
    path = root / where
    path.rename(path.with_name(path.name + ".x"))
    path.symlink_to(target)
    with pytest.raises(safepath.UnsafePath) as info:
        safepath.check_dir(root, "a/b")
    assert info.value.exit_code == 2
    assert info.value.message == f"unsafe path {path}: it is a symlink (to {str(target)!r})"


def test_a_file_in_place_of_a_directory_is_refused(root: Path) -> None:
    (root / "a" / "b").rmdir()
    (root / "a" / "b").write_text("")
    with pytest.raises(safepath.UnsafePath, match=r"b: it is a regular file"):
        safepath.check_dir(root, "a/b")


def test_a_directory_above_owned_by_someone_else_is_refused(root: Path) -> None:
    os.chown(root / "a", 1234, 1234)
    with pytest.raises(safepath.UnsafePath, match=r"/a: it is owned by uid 1234"):
        safepath.check_dir(root, "a/b")
    # The last component is the container's to chown: only what is above it matters.
    os.chown(root / "a", 0, 0)
    os.chown(root / "a" / "b", 1234, 1234)
    safepath.check_dir(root, "a/b")


def test_a_group_writable_directory_above_is_refused(root: Path) -> None:
    (root / "a").chmod(0o775)
    with pytest.raises(safepath.UnsafePath, match=r"writable by group or others \(mode 0775\)"):
        safepath.check_dir(root, "a/b")


def test_a_root_others_can_write_is_refused(root: Path) -> None:
    root.chmod(0o777)
    with pytest.raises(safepath.UnsafePath, match="hivegen's roots must be root's alone"):
        safepath.check_dir(root, "a")


@pytest.mark.parametrize("rel", ["..", "a/../a", "./a", "/a", "a/./b"])
def test_dot_dot_and_absolute_parts_are_refused(root: Path, rel: str) -> None:
    with pytest.raises(safepath.UnsafePath, match="must be relative, without"):
        safepath.check_dir(root, rel)


def test_created_directories_get_the_exact_mode(root: Path) -> None:
    old = os.umask(0o077)
    try:
        safepath.check_dir(root, "c/d", create_mode=0o755)
    finally:
        os.umask(old)
    assert stat.S_IMODE((root / "c").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "c" / "d").stat().st_mode) == 0o755
    (root / "c" / "d").chmod(0o750)
    safepath.check_dir(root, "c/d", create_mode=0o700, enforce_mode=True)
    assert stat.S_IMODE((root / "c" / "d").stat().st_mode) == 0o700


def test_survey_reports_without_raising_and_ignores_missing(root: Path, tmp_path: Path) -> None:
    assert safepath.survey(root, "a/b") is None
    assert safepath.survey(root, "a/missing/x") is None
    (root / "a" / "b").rmdir()
    (root / "a" / "b").symlink_to(tmp_path)
    problem = safepath.survey(root, "a/b")
    assert problem is not None
    assert problem.path == root / "a" / "b"
    assert problem.found.startswith("a symlink")


def test_write_atomic_at_stays_in_the_held_directory(root: Path, tmp_path: Path) -> None:
    with safepath.opened_dir(root, "a/b") as fd:
        # The directory's name now points elsewhere: the write still lands in it.
        (root / "a" / "b").rename(root / "a" / "moved")
        (root / "a" / "b").symlink_to(tmp_path)
        assert fsutil.write_atomic_at(fd, "config", b"x = 1\n", root / "a/b/config")
        assert not fsutil.write_atomic_at(fd, "config", b"x = 1\n", root / "a/b/config")
    assert (root / "a" / "moved" / "config").read_bytes() == b"x = 1\n"
    assert not (tmp_path / "config").exists()
    assert [p.name for p in (root / "a" / "moved").iterdir()] == ["config"]  # no temp left
