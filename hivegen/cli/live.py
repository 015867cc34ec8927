"""What a long command shows while it runs.

On a terminal (stderr a TTY, TERM not dumb): the build's log lines as they come and,
under them, one status line redrawn in place every quarter second: the verb, the time
since it began and the last log line, so that a build that prints nothing for a while
is seen to be alive. It appears only after a second (a quick verb never draws it) and
is erased before anything else is printed and when the command ends. Elsewhere
(a pipe, a log file): the lines alone, as they come, and never a control sequence.

Every line is sanitised before it is shown: build output quotes the agent's config.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import TextIO

from hivegen.sanitize import terminal_line

TICK = 0.25
QUIET_FOR = 1.0
ERASE = "\r\x1b[K"


class Live:
    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.last = ""
        self.fixed = ""
        self.drawn = False
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.ticker: threading.Thread | None = None
        if _is_terminal(self.stream):
            self.ticker = threading.Thread(target=self._tick, name="hivegen-live", daemon=True)
            self.ticker.start()

    def line(self, text: str) -> None:
        """A log line: printed above the status line (which follows it down)."""
        shown = terminal_line(text)
        with self.lock:
            self._erase()
            print(shown, file=self.stream, flush=True)
            if shown.strip():
                self.last = shown
            self._draw()

    def status(self, text: str) -> None:
        """What the status line says after the elapsed time, instead of the last log
        line (a rollout: every agent's phase)."""
        with self.lock:
            self.fixed = terminal_line(text)
            self._draw()

    def close(self) -> None:
        """The command is over: stop ticking and erase the status line."""
        self.done.set()
        if self.ticker is not None:
            self.ticker.join(timeout=2 * TICK)
        with self.lock:
            self._erase()

    # The lock is held by the callers of these two.
    def _erase(self) -> None:
        if self.drawn:
            self.stream.write(ERASE)
            self.stream.flush()
            self.drawn = False

    def _draw(self) -> None:
        elapsed = time.monotonic() - self.started
        if self.ticker is None or self.done.is_set() or elapsed < QUIET_FOR:
            return
        status = f"{self.label}: {elapsed:.0f}s"
        if self.fixed or self.last:
            status += f"  {self.fixed or self.last}"
        width = shutil.get_terminal_size((80, 24)).columns - 1
        if len(status) > width:
            status = status[: max(width - 1, 0)] + "…"
        self.stream.write(ERASE + status)
        self.stream.flush()
        self.drawn = True

    def _tick(self) -> None:
        while not self.done.wait(TICK):
            with self.lock:
                self._draw()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except ValueError:  # closed
        return False
