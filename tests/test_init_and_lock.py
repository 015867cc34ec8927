from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from hivegen import fsutil
from hivegen.cli import main
from hivegen.errors import HivegenError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "hive.toml"
    path.write_text(f'[hive]\nstate_root = "{tmp_path / "state"}"\n')
    return path


def test_init_creates_layout_with_modes_and_is_idempotent(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    assert main(["--config", str(config_path), "init", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)["created"]
    assert sorted(created) == sorted(
        str(state / d) for d in ("agents", "notes", "credentials", "applied", "meta", "shared")
    )
    assert mode(state / "credentials") == 0o700
    for name in ("agents", "notes", "applied", "meta", "shared"):
        assert mode(state / name) == 0o755
    assert mode(state / ".hivegen.lock") == 0o600

    (state / "credentials").chmod(0o755)  # someone loosened it
    (state / "credentials" / "alice").mkdir()
    assert main(["--config", str(config_path), "init"]) == 0
    assert capsys.readouterr().out == f"fixed mode of {state / 'credentials'}\n"
    assert mode(state / "credentials") == 0o700
    assert (state / "credentials" / "alice").is_dir()
    assert main(["--config", str(config_path), "init"]) == 0
    assert "already set up" in capsys.readouterr().out


def test_no_wait_fails_fast_while_the_lock_is_held(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / "state" / ".hivegen.lock"
    with fsutil.hive_lock(lock):
        assert main(["--config", str(config_path), "--no-wait", "init"]) == 1
    assert "another hivegen holds the hive lock" in capsys.readouterr().err


def test_a_second_hivegen_waits_and_says_so(tmp_path: Path) -> None:
    lock = tmp_path / ".hivegen.lock"
    events: list[str] = []
    release = threading.Event()

    def holder() -> None:
        with fsutil.hive_lock(lock, holder="hivegen approve 3"):
            events.append("held")
            release.wait(5)
            events.append("released")

    thread = threading.Thread(target=holder)
    thread.start()
    while "held" not in events:
        time.sleep(0.01)
    threading.Timer(0.2, release.set).start()
    with fsutil.hive_lock(lock, on_wait=lambda who: events.append(f"waiting for {who}")):
        events.append("acquired")
    thread.join()
    assert events == [
        "held",
        f"waiting for pid {os.getpid()}: hivegen approve 3",
        "released",
        "acquired",
    ]
    # Once ours, the file says so.
    assert lock.read_text() == f"pid {os.getpid()}: hivegen\n"


def test_write_atomic_skips_unchanged_content(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.conf"
    assert fsutil.write_atomic(path, "a\n")
    inode = path.stat().st_ino
    assert not fsutil.write_atomic(path, "a\n")
    assert path.stat().st_ino == inode  # not rewritten
    assert fsutil.write_atomic(path, "b\n", mode=0o600)
    assert path.read_text() == "b\n"
    assert mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["f.conf"]  # no temp file left
    with pytest.raises(HivegenError, match="is a directory"):
        fsutil.write_atomic(tmp_path / "sub", "x")
