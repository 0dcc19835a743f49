"""The one writer of a run's status: stall, begin, queued, start, stage records, end.

The reconciler makes one `Recorder` per run, before it knows whether the run
can start (an invalid spec or a missing Secret is recorded here as a stall),
and hands it to the `Run`; the engine and the stages write through it and
nothing else writes the status. Because there is only one, it alone knows
whether anything about the run has been written (`written`), what changed
since the last save and which Events still wait for it.

Writes are few (Kubernetes API writes are the operator's own cost): a
stage's start is saved with its first record or wait (or once the engine
sees it run for a while), not on its own; ids known only at a stage's end
travel with the stage's record; a stage whose end adds nothing to what it
already recorded (or that was skipped: it found its work done) is saved with
the next write, since redoing it only looks again; and the last stage's
Event is the run's final Event. A run in which stages 1 to 5 all found their
work done writes its status once and no Event at all (as Flux does not
announce a reconciliation that changed nothing).

The recorder does not see credentials: what it is given (stage messages,
error messages) is redacted by the `Run` first.
"""
from __future__ import annotations

import asyncio
import random
import string
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from controller import conditions, metrics
from controller.adapters.notices import RunNotices, Silent
from controller.errors import PandaDeployError, Reason, Stall
from controller.models import DEPLOYMENT_ID as DEPLOYMENT_ID  # what new_deployment_id makes; its users import it here
from controller.models import (
    HistoryEntry,
    PandaDeployStatus,
    Phase,
    RunResult,
    StageName,
    StageRecord,
    StageResult,
    Trigger,
    TriggerKind,
)


class Sink(Protocol):
    """Where a run reports: the Kubernetes API in the operator, the terminal in `panda-deploy run`."""

    async def save(self, status: PandaDeployStatus) -> None: ...

    async def event(self, *, type: str, reason: str, message: str) -> None: ...

    def progress(self, line: str) -> None:
        """One progress line (log or print); called from worker threads too."""


def new_deployment_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return 'dep_' + ''.join(random.SystemRandom().choice(alphabet) for _ in range(10))


class Recorder:
    """Turns a run's outcomes into status, conditions, Events and metrics, and writes them to its sink."""

    def __init__(self, *, sink: Sink, status: PandaDeployStatus, generation: int) -> None:
        self.sink = sink
        self.status = status
        self.generation = generation
        # Set once anything about the run is written (Queued included): a run that wrote nothing may end
        # quietly. A stall, written before the run could start, does not count.
        self.written = False
        self._dirty = False  # the status changed since it was last saved
        self._held: list[tuple[str, str, str]] = []  # Events (type, reason, message) held for the next write
        self._lock = asyncio.Lock()  # flushes come from the engine and from stages' records
        self.notices: RunNotices = Silent()  # the run's start and end, announced (spec.notify); set by the caller

    @property
    def pending(self) -> bool:
        """Status changes or Events not written yet."""
        return self._dirty or bool(self._held)

    def progress(self, line: str) -> None:
        self.sink.progress(line)

    async def flush(self) -> None:
        """Send the held Events in order (they tell what already happened), then save the status if it changed."""
        async with self._lock:
            held, self._held = self._held, []
            for type_, reason, message in held:
                self.written = True
                await self.sink.event(type=type_, reason=reason, message=message)
            if self._dirty:
                self._dirty = False
                self.written = True
                await self.sink.save(self.status)

    def _hold(self, type_: str, reason: str, message: str) -> None:
        self._held.append((type_, reason, message))

    async def stalled(self, stall: Stall) -> None:
        """Stalled with the reason (the run cannot start yet); an Event only when that is news."""
        s = self.status
        current = conditions.get(s, conditions.STALLED)
        news = (current is None or current.status != 'True' or current.reason != stall.reason
                or current.message != stall.message or s.observed_generation != self.generation)
        s.observed_generation = self.generation
        if s.phase in (None, Phase.progressing):
            s.phase = Phase.pending
        s.message = stall.message
        conditions.summarise(s, reason=stall.reason, message=stall.message, generation=self.generation,
                             stalled=True)
        await self.sink.save(s)
        if news:
            await self.sink.event(type='Warning', reason=stall.reason, message=stall.message)

    def begin(self) -> None:
        """Reset the status for a new run of the current generation (no write yet)."""
        s = self.status
        s.observed_generation = self.generation
        s.deployment_id = new_deployment_id()
        s.phase = Phase.pending
        s.stages = []
        s.set_stage(None)
        s.set_revision(None)
        s.image = None
        s.task_definition_arn = s.code_deploy_deployment_id = s.service_deployment_arn = s.code_build_id = None
        s.health_check = None
        s.promotion = None
        s.started_at = s.completed_at = s.duration_seconds = None
        s.message = None
        s.trigger = Trigger(kind=TriggerKind.build)  # an undo or retry says so next (controller/reruns.py)
        conditions.remove(s, *conditions.STAGE_TYPES)

    async def queued(self, *, ahead: int) -> None:
        s = self.status
        s.phase = Phase.pending
        s.message = f'Waiting for a free worker ({ahead} run(s) ahead)'
        conditions.summarise(s, reason=Reason.QUEUED, message=s.message, generation=self.generation)
        self.written = True
        await self.sink.save(s)
        await self.sink.event(type='Normal', reason=Reason.QUEUED, message=s.message)

    def started(self) -> None:
        """The run starts or resumes: Progressing, its Event held for the first stage's first write."""
        s = self.status
        resumed = s.started_at is not None
        if not resumed:
            s.started_at = conditions.now()
        s.phase = Phase.progressing
        metrics.RUNS_IN_PROGRESS.inc()
        if resumed:
            message = f'Run {s.deployment_id} resumed at stage {s.stage or "1"} for generation {self.generation}'
        else:
            message = f'Run {s.deployment_id} started for generation {self.generation}{_why(s.trigger)}'
        s.message = message
        conditions.summarise(s, reason=Reason.PROGRESSING, message=message, generation=self.generation)
        self._dirty = True
        self._hold('Normal', 'Resumed' if resumed else 'Started', message)
        self.sink.progress(message)
        if s.revision:  # resumed, or the revision was known before the run: announce it now
            self.notices.started(s)

    def stage_started(self, name: StageName) -> StageRecord:
        s = self.status
        record = s.stage_record(name)
        if record is None:
            record = StageRecord(number=name.number, name=name, result=StageResult.running,
                                 started_at=conditions.now())
            s.stages = [*s.stages, record]
        else:  # resumed after a restart: keep its start, so its timeout counts from there
            record.result = StageResult.running
            record.completed_at = None
        s.set_stage(name)
        message = f'Stage {name.number}/6 {name.value} running'
        s.message = message
        conditions.set_condition(s, type=name.value, value='Unknown', reason=Reason.PROGRESSING,
                                 message=message, generation=self.generation)
        conditions.summarise(s, reason=Reason.PROGRESSING, message=message, generation=self.generation)
        self._dirty = True  # saved with the stage's first record, first wait or end
        self.sink.progress(f'[Stage {name.number}] {name.value} started')
        return record

    def show(self, name: StageName, message: str, *, save: bool) -> None:
        """Progress inside a stage (a check, a traffic step) in status.message and the conditions; `save`: it
        needs a write of its own (the engine's next flush), else it travels with the next one (progress.py)."""
        s = self.status
        s.message = message
        conditions.set_condition(s, type=name.value, value='Unknown', reason=Reason.PROGRESSING, message=message,
                                 generation=self.generation)
        conditions.summarise(s, reason=Reason.PROGRESSING, message=message, generation=self.generation)
        self._dirty = self._dirty or save

    async def record(self, fields: Mapping[str, Any], *, abandoned: threading.Event | None = None) -> None:
        """Write external ids as soon as they are known (not for a stage the engine gave up on)."""
        if abandoned is not None and abandoned.is_set():
            return
        self._apply(fields)
        await self.flush()

    def _apply(self, fields: Mapping[str, Any]) -> bool:
        """Set status fields; whether any of them changed."""
        s = self.status
        changed = False
        for key, value in fields.items():
            if getattr(s, key) == value:
                continue
            changed = True
            if key == 'revision':
                s.set_revision(value)
                if value:  # the commit this run deploys is known: announce the run
                    self.notices.started(s)
            else:
                setattr(s, key, value)
        self._dirty = self._dirty or changed
        return changed

    async def stage_done(self, name: StageName, record: StageRecord, *, message: str, skipped: bool,
                         learnt: Mapping[str, Any]) -> None:
        """The stage finished (`skipped`: it found its work done); `learnt`: status fields known at its end."""
        s = self.status
        changed = self._apply(learnt)
        record.result = StageResult.skipped if skipped else StageResult.succeeded
        record.completed_at = conditions.now()
        record.message = message
        record.reason = None
        reason = 'Skipped' if skipped else Reason.SUCCEEDED
        conditions.set_condition(s, type=name.value, value='True', reason=reason,
                                 message=record.message or reason, generation=self.generation)
        metrics.STAGE_DURATION.labels(stage=name.value, result=record.result.value).observe(_seconds(record))
        text = f'Stage {name.number}/6 {name.value} {"skipped" if skipped else "succeeded"}'
        if record.message:
            text += f': {record.message}'
        self._dirty = True
        self.sink.progress(f'[Stage {name.number}] {record.message or reason}')
        if name == StageName.complete:  # the run's final Event, which follows at once, says it
            return
        self._hold('Normal', f'{name.value}{reason}', text)
        if changed and not skipped:  # what its work made is saved before the next stage begins
            await self.flush()

    def stage_failed(self, name: StageName, record: StageRecord, *, reason: str, message: str) -> None:
        """The stage's record, condition and metrics for a failure; the run's end (`finish`) follows."""
        record.result = StageResult.failed
        record.completed_at = conditions.now()
        record.message, record.reason = message, reason
        conditions.set_condition(self.status, type=name.value, value='False', reason=reason, message=message,
                                 generation=self.generation)
        metrics.STAGE_DURATION.labels(stage=name.value, result=StageResult.failed.value).observe(_seconds(record))
        metrics.STAGE_FAILURES.labels(stage=name.value, reason=reason).inc()
        self.sink.progress(f'[Stage {name.number}] failed: {reason}: {message}')

    def stage_cancelled(self, record: StageRecord, result: RunResult, *, abort: PandaDeployError | None = None) -> None:
        if abort is not None:  # aborted: the stage fails for the abort's reason
            self.stage_failed(record.name, record, reason=abort.reason, message=abort.message)
            return
        record.result = StageResult.cancelled
        record.completed_at = conditions.now()
        record.message = f'{result.value} while running'

    async def finish(self, result: RunResult, *, reason: str, message: str, history_limit: int,
                     quiet: bool = False) -> None:
        """End the run: status and history saved, then the held Events and the final one (none when `quiet`)."""
        s = self.status
        s.completed_at = conditions.now()
        started = s.started_at or s.completed_at
        s.duration_seconds = round((s.completed_at - started).total_seconds(), 3)
        s.message = message
        s.promotion = None  # an ended run waits for no promotion
        entry = HistoryEntry(
            deployment_id=s.deployment_id or '', generation=self.generation, revision=s.revision,
            result=result, reason=reason, message=message, started_at=started, completed_at=s.completed_at,
            duration_seconds=s.duration_seconds, image_uri=s.image.uri if s.image else None,
            image_digest=s.image.digest if s.image else None, task_definition_arn=s.task_definition_arn,
            active_color=s.active_color, trigger=s.trigger,
            service_deployment_id=s.service_deployment_arn.rsplit('/', 1)[-1] if s.service_deployment_arn else None)
        s.history = [entry, *s.history][:history_limit]
        if result == RunResult.succeeded:
            s.phase = Phase.succeeded
        elif result == RunResult.failed:
            s.phase = Phase.failed
        else:  # superseded or cancelled: no run is in progress any more
            s.phase = Phase.pending
        conditions.summarise(s, reason=reason, message=message, generation=self.generation)
        metrics.RUNS.labels(result=result.value).inc()
        metrics.RUN_DURATION.observe(s.duration_seconds)
        self._dirty = True
        self.notices.ended(s, result=result, reason=reason)
        if quiet:
            self._held = []
        await self.flush()
        if not quiet:
            await self.sink.event(type='Warning' if result == RunResult.failed else 'Normal', reason=reason,
                                  message=message)
        self.sink.progress(f'Run {s.deployment_id} {result.value}: {message}')


def _why(trigger: Trigger | None) -> str:
    """': undo to dep_x' or ': retry of dep_y' (nothing for a build)."""
    if trigger is None or trigger.kind == TriggerKind.build:
        return ''
    return f': {"undo to" if trigger.kind == TriggerKind.undo else "retry of"} {trigger.of}'


def _seconds(record: StageRecord) -> float:
    if record.started_at is None or record.completed_at is None:
        return 0.0
    return max(0.0, (record.completed_at - record.started_at).total_seconds())
