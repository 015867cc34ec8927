"""Reading what a program under test writes to a pseudo-terminal's master side."""

from __future__ import annotations

import os
import re
import time


def read_until(master: int, pattern: bytes, seen: bytes, timeout: float = 60) -> bytes:
    """`seen` and what follows it, until `pattern` (a regex) matches."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen):
        assert time.monotonic() < deadline, seen
        seen += os.read(master, 4096)
    return seen


def read_rest(master: int) -> bytes:
    """What is left, once the program has exited (EIO when the other end closed)."""
    rest = b""
    try:
        while chunk := os.read(master, 4096):
            rest += chunk
    except OSError:
        pass  # the other end closed
    return rest
