"""The background thread that moves a simulator's time on: ``tick`` every ``Timings.tick_seconds``."""
from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from controller.sandbox.aws.effects import Outbox
from controller.sandbox.aws.timings import Timings

log = logging.getLogger(__name__)


class Clock:
    """Calls ``tick`` every ``interval`` seconds from a daemon thread until stopped; a failing tick is logged."""

    def __init__(self, *, name: str, interval: float, tick: Callable[[], None]) -> None:
        self.name = name
        self.interval = interval
        self.tick = tick
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 -- the clock must keep running
                log.exception('the %s failed to advance', self.name)


class Advancing(Protocol):
    """A simulator's state, as far as its clock is concerned."""

    @property
    def deployments(self) -> Mapping[str, Any]: ...

    @property
    def outbox(self) -> Outbox: ...

    def clear(self) -> None: ...


class ClockedSimulator(abc.ABC):
    """What the simulators share: the lock, and a clock that advances every deployment and runs due callbacks."""

    def __init__(self, *, name: str, timings: Timings, state: Advancing) -> None:
        self.timings = timings
        self._advancing = state
        self.lock = threading.RLock()  # held while state changes or is serialised
        self.clock = Clock(name=name, interval=timings.tick_seconds, tick=self.tick)

    def start(self) -> None:
        """Start the background thread that moves time on."""
        self.clock.start()

    def stop(self) -> None:
        """Stop the background thread."""
        self.clock.stop()

    def reset(self) -> None:
        """Forget every deployment (moto's reset does the same for the resources)."""
        with self.lock:
            self._advancing.clear()

    def tick(self, *, now: float | None = None) -> None:
        """Advance every deployment to ``now``, then run the callbacks that became due (outside the lock)."""
        with self.lock:
            now = time.time() if now is None else now
            for d in list(self._advancing.deployments.values()):
                self.advance(d, now=now)
            calls = self._advancing.outbox.take()
        for call in calls:
            call.run()

    @abc.abstractmethod
    def advance(self, d: Any, *, now: float) -> None:
        """Resume one deployment's process as long as what it waits for has happened by ``now``."""
