"""What every handler of the server shares: the config, a way to run a library verb, and
the operator's running jobs (an approve's build output, streamed to the dashboard)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from hivegen.errors import HivegenError
from hivegen.sanitize import terminal_line

if TYPE_CHECKING:
    from hivegen.config import Config
    from hivegen.hive import Hive
    from hivegen.serve import HiveFactory

T = TypeVar("T")
log = logging.getLogger("hivegen.serve")

# Output kept per job: a long build's first lines are dropped, never the last ones.
MAX_JOB_LINES = 5000
# Finished jobs kept for the dashboard to show.
MAX_FINISHED_JOBS = 50


@dataclass(slots=True)
class Job:
    id: int
    title: str
    agent: str
    started: float = field(default_factory=time.time)
    lines: list[str] = field(default_factory=list)
    dropped: int = 0
    finished: float | None = None
    ok: bool | None = None
    # What it did (steps) or why it failed, for the page.
    result: str = ""
    # Where the page links when the job is over.
    next_url: str = "/"
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add_line(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) > MAX_JOB_LINES:
            del self.lines[0]
            self.dropped += 1
        self._wake()

    def finish(self, ok: bool, result: str) -> None:
        self.ok, self.result, self.finished = ok, result, time.time()
        self._wake()

    def _wake(self) -> None:
        # Waiters re-read from where they are; a fresh event for the next change.
        self.changed.set()
        self.changed = asyncio.Event()


class Context:
    def __init__(self, config: Config, make_hive: HiveFactory) -> None:
        self.config = config
        self.make_hive = make_hive
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, verb: Callable[[Hive], T]) -> T:
        """Run a library verb in a worker thread, with a Hive of its own (the hive lock
        orders it against the CLI and every other request)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: verb(self.make_hive(None)))

    def start_job(
        self, title: str, agent: str, verb: Callable[[Hive], str], next_url: str = "/"
    ) -> Job:
        """Run `verb` in the background; its build output goes to the job's lines."""
        loop = asyncio.get_running_loop()
        job = Job(next(self._ids), title, agent, next_url=next_url)
        self.jobs[job.id] = job
        finished = [j for j in self.jobs.values() if j.finished is not None]
        for old in finished[:-MAX_FINISHED_JOBS]:
            del self.jobs[old.id]

        def output(line: str) -> None:
            loop.call_soon_threadsafe(job.add_line, line)

        def work() -> str:
            return verb(self.make_hive(output))

        async def runner() -> None:
            try:
                result = await loop.run_in_executor(None, work)
            except HivegenError as exc:
                log.warning("job %d (%s) failed: %s", job.id, title, terminal_line(str(exc)))
                job.finish(False, str(exc))
            except Exception as exc:  # a bug must not kill the server: show it
                log.exception("job %d (%s) crashed", job.id, title)
                job.finish(False, f"internal error: {exc!r}")
            else:
                log.info("job %d (%s) done", job.id, title)
                job.finish(True, result)

        task = loop.create_task(runner())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job
