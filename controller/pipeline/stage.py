"""A stage's side of the pipeline: what a stage is, what it sees and what it returns.

Each stage module (build.py … complete.py) needs only this: a stage is an
object with a `name` and a blocking `run(ctx)` that returns `Done` or `Wait`.
It reads the spec and the status so far from its `StageContext`, calls the
run's adapters, and saves an external id the moment it learns it with
`ctx.record` (the context hands it to the run's recorder on the event loop).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from controller.adapters import Adapters
from controller.models import PandaDeployStatus, StageName
from controller.pipeline.progress import ProgressBudget, expected_points
from controller.pipeline.run import Run


@dataclasses.dataclass(frozen=True)
class Done:
    """The stage finished; `skipped` when it found its work already done.

    `record`: status fields learnt at the very end (nothing external happens between them and
    the stage's end, so they are saved with the stage's record rather than on their own)."""
    message: str = ''
    skipped: bool = False
    record: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Wait:
    """Not finished: call the stage again `seconds` after this call began (the thread is released meanwhile)."""
    seconds: float
    message: str = ''


class Stage(Protocol):
    name: StageName

    def run(self, ctx: StageContext) -> Done | Wait: ...


RECORD_TIMEOUT_SECONDS = 120  # a status write that takes longer than this fails the stage


class StageAbandoned(Exception):
    """Raised in a worker thread whose stage the engine no longer waits for."""


class StageContext:
    """What a stage sees: the spec, the status so far, credentials, adapters, progress and record."""

    def __init__(self, *, run: Run, name: StageName, loop: asyncio.AbstractEventLoop,
                 adapters: Callable[[], Adapters]) -> None:
        self.run = run
        self.name = name
        self.spec = run.spec
        self.credentials = run.credentials
        self.logger = run.logger
        self.cancel = threading.Event()
        self.scratch: dict[str, Any] = {}  # per-run, in-memory state between polls of one stage
        self._loop = loop
        self._adapters = adapters

    @property
    def status(self) -> PandaDeployStatus:
        return self.run.status

    @property
    def adapters(self) -> Adapters:
        return self._adapters()

    def progress(self, message: str) -> None:
        self.run.recorder.progress(f'[Stage {self.name.number}] {self.run.redact(message)}')

    def show(self, message: str) -> None:
        """Progress inside the stage (a check, a traffic step) in status, within the run's write budget; logged
        too. From the worker thread, like `record`."""
        self.progress(message)
        if self.cancel.is_set():
            return
        run = self.run
        if run.progress is None:
            run.progress = ProgressBudget(expected_points(run.spec))
        save = run.progress.take()
        showing = functools.partial(run.recorder.show, self.name, run.redact(message), save=save)
        self._loop.call_soon_threadsafe(showing)

    def record(self, **fields: Any) -> None:
        """Persist outputs now (from the worker thread), before the stage goes on.

        A stage that was abandoned (timed out, superseded, cancelled) may still be
        running in its thread; it must not touch the status any more, so it stops here.
        """
        if self.cancel.is_set():
            raise StageAbandoned(f'stage {self.name.value} was abandoned; its result is discarded')
        recording = self.run.recorder.record(fields, abandoned=self.cancel)
        saved = asyncio.run_coroutine_threadsafe(recording, self._loop)
        # Wait in slices: once the run is cancelled (a shutdown, a supersede) the loop may be busy stopping it and
        # never get to this write; the stage is abandoned then, and must not go on as if its output were saved.
        deadline = time.monotonic() + RECORD_TIMEOUT_SECONDS
        while True:
            try:
                saved.result(timeout=0.1)
                return
            except concurrent.futures.TimeoutError:
                if self.cancel.is_set():
                    raise StageAbandoned(f'stage {self.name.value} was abandoned while saving; its result is '
                                         'discarded') from None
                if time.monotonic() >= deadline:
                    raise

    def approval(self) -> str | None:
        """The promote annotation's value now: the deploymentId it approves, or None."""
        return self.run.approval()
