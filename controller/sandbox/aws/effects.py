"""What a deployment's process waits for between steps (the driver resumes it)."""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller.sandbox.aws.events import HookExecution

if TYPE_CHECKING:
    from controller.sandbox.aws.ecs_models import HookRun

log = logging.getLogger(__name__)


@dataclasses.dataclass(kw_only=True)
class Sleep:
    """Resume at ``until``."""

    until: float


@dataclasses.dataclass(kw_only=True)
class AwaitHook:
    """Resume with the status the hook reports, or ``'Timeout'`` at ``deadline``."""

    execution: HookExecution
    deadline: float


@dataclasses.dataclass(kw_only=True)
class AwaitContinue:
    """Resume with ``'continued'`` on ContinueDeployment, or ``'timeout'`` at ``deadline`` (if any)."""

    wait_type: str  # READY_WAIT | TERMINATION_WAIT
    deadline: float | None


@dataclasses.dataclass(kw_only=True)
class Call:
    """A user callback, run by the background thread outside the simulator's lock (its return value kept)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    queued: bool = False
    done: bool = False
    error: BaseException | None = None
    result: Any = None
    finished: float = 0.0

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except Exception as exc:  # noqa: BLE001 -- reported to the waiting deployment
            log.warning('sandbox callback %s failed: %s', getattr(self.fn, '__name__', self.fn), exc)
            self.error = exc
        self.finished = time.time()
        self.done = True


@dataclasses.dataclass(kw_only=True)
class AwaitAction:
    """An ECS PAUSE hook: resume with its status once ContinueServiceDeployment (or its timeout) settled it."""

    run: HookRun


@dataclasses.dataclass
class Outbox:
    """The callbacks due to run on the background thread, outside the simulator's lock."""

    calls: list[Call] = dataclasses.field(default_factory=list)

    def notify(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a callback soon, without waiting for it."""
        self.calls.append(Call(fn=fn, args=args, queued=True))

    def ready(self, call: Call) -> bool:
        """Whether a callback a process waits for has run; handed to the thread the first time it is asked."""
        if not call.done and not call.queued:
            call.queued = True
            self.calls.append(call)
        return call.done

    def take(self) -> list[Call]:
        """The callbacks due, removed from the outbox."""
        calls, self.calls = self.calls, []
        return calls

    def clear(self) -> None:
        self.calls.clear()


Effect = Sleep | AwaitHook | AwaitContinue | Call
EcsEffect = Sleep | AwaitAction | Call
