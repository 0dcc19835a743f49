"""The run: six stages driven as a durable state machine.

A stage is a small object with a name and a blocking `run(ctx)` that returns
`Done` or `Wait`. The engine calls it in the worker pool (never on the event
loop), polls `Wait`s with asyncio sleeps (holding no thread), enforces the
stage and total timeouts, and hands every outcome to the `Recorder`, the one
place that turns results into status, conditions, events and metrics.

Durability: the stage records and every external id live in `status`. An id
a stage learns and then acts on is saved at once (`StageContext.record`); a
stage that did work is saved as done before the next stage begins, so a
restarted operator skips recorded stages and resumes at the one that was
running. Stages look before they act, so redoing the interrupted one is safe.

Writes are few (Kubernetes API writes are the operator's own cost): a
stage's start is saved with its first record or wait, or once it has run for
`SHOW_RUNNING_AFTER` seconds, not on its own; ids known only at a stage's end
travel in `Done.record` and are saved with the stage's record; a stage whose
end adds nothing to what it already recorded (or that was skipped: it found
its work done) is saved with the next write, since redoing it only looks
again; and the last stage's Event is the run's final Event. A run in which
stages 1 to 5 all found their work done writes its status once and no Event
at all (as Flux does not announce a reconciliation that changed nothing).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import functools
import logging
import random
import string
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from controller import conditions, metrics
from controller.adapters import AdapterFactory, Adapters
from controller.credentials import Credentials, credentials_used, redact
from controller.errors import PandaDeployError, Reason, StageFailed, StageTimeout, Transient
from controller.models import (
    HistoryEntry, PandaDeploySpec, PandaDeployStatus, Phase, RunResult, StageName, StageRecord, StageResult,
)

FINISHED_STAGE = (StageResult.succeeded, StageResult.skipped)
TRANSIENT_BACKOFF = (2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
SHOW_RUNNING_AFTER = 1.0  # seconds a stage runs before its start is saved (if nothing saved it sooner)


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


class Sink(Protocol):
    """Where a run reports: the Kubernetes API in the operator, the terminal in `panda-deploy run`."""

    async def save(self, status: PandaDeployStatus) -> None: ...

    async def event(self, *, type: str, reason: str, message: str) -> None: ...

    def progress(self, line: str) -> None:
        """One progress line (log or print); called from worker threads too."""


def new_deployment_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return 'dep_' + ''.join(random.SystemRandom().choice(alphabet) for _ in range(10))


@dataclasses.dataclass
class Run:
    """One run of the stages for one generation of one resource."""
    spec: PandaDeploySpec
    generation: int
    status: PandaDeployStatus
    credentials: Credentials
    sink: Sink
    logger: logging.Logger
    promote_requested: Callable[[], bool] = lambda: False
    # In-memory state shared by the run's stages (lost on restart; nothing in it is needed to resume).
    scratch: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Set by whoever cancels the run: Superseded or Cancelled. None (operator shutdown): the run is
    # only interrupted; its status stays as it is so the next operator resumes it.
    cancel_result: RunResult | None = None
    # Set once anything about this run is written (Queued included): a run that wrote nothing may end quietly.
    written: bool = False

    def redact(self, text: str) -> str:
        return redact(text, self.credentials.values())


class Recorder:
    """Turns run and stage outcomes into status, conditions, events and metrics."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._dirty = False  # the status changed since it was last saved
        self._held: list[tuple[str, str, str]] = []  # Events (type, reason, message) held for the next write
        self._lock = asyncio.Lock()  # flushes come from the engine and from stages' records

    @property
    def pending(self) -> bool:
        """Status changes or Events not written yet."""
        return self._dirty or bool(self._held)

    @property
    def status(self) -> PandaDeployStatus:
        return self.run.status

    async def flush(self) -> None:
        """Send the held Events in order (they tell what already happened), then save the status if it changed."""
        async with self._lock:
            held, self._held = self._held, []
            for type_, reason, message in held:
                self.run.written = True
                await self.run.sink.event(type=type_, reason=reason, message=message)
            if self._dirty:
                self._dirty = False
                self.run.written = True
                await self.run.sink.save(self.status)

    def _hold(self, type_: str, reason: str, message: str) -> None:
        self._held.append((type_, reason, message))

    def begin(self) -> None:
        """Reset the status for a new run of the current generation (no write yet)."""
        s = self.status
        s.observed_generation = self.run.generation
        s.deployment_id = new_deployment_id()
        s.phase = Phase.pending
        s.stages = []
        s.set_stage(None)
        s.set_revision(None)
        s.image = None
        s.task_definition_arn = s.code_deploy_deployment_id = None
        s.health_check = None
        s.promotion = None
        s.started_at = s.completed_at = s.duration_seconds = None
        s.message = None
        conditions.remove(s, *conditions.STAGE_TYPES)

    async def queued(self, *, ahead: int) -> None:
        s = self.status
        s.phase = Phase.pending
        s.message = f'Waiting for a free worker ({ahead} run(s) ahead)'
        conditions.summarise(s, reason=Reason.QUEUED, message=s.message, generation=self.run.generation)
        self.run.written = True
        await self.run.sink.save(s)
        await self.run.sink.event(type='Normal', reason=Reason.QUEUED, message=s.message)

    async def started(self) -> None:
        s = self.status
        resumed = s.started_at is not None
        if not resumed:
            s.started_at = conditions.now()
        s.phase = Phase.progressing
        metrics.RUNS_IN_PROGRESS.inc()
        if resumed:
            message = f'Run {s.deployment_id} resumed at stage {s.stage or "1"} for generation {self.run.generation}'
        else:
            message = f'Run {s.deployment_id} started for generation {self.run.generation}'
        s.message = message
        conditions.summarise(s, reason=Reason.PROGRESSING, message=message, generation=self.run.generation)
        # Held: written with the first stage's first write.
        self._dirty = True
        self._hold('Normal', 'Resumed' if resumed else 'Started', message)
        self.run.sink.progress(message)

    async def stage_started(self, name: StageName) -> StageRecord:
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
                                 message=message, generation=self.run.generation)
        conditions.summarise(s, reason=Reason.PROGRESSING, message=message, generation=self.run.generation)
        self._dirty = True  # saved with the stage's first record, first wait or end
        self.run.sink.progress(f'[Stage {name.number}] {name.value} started')
        return record

    async def record(self, fields: dict[str, Any], *, abandoned: threading.Event | None = None) -> None:
        """Write external ids as soon as they are known (not for a stage the engine gave up on)."""
        if abandoned is not None and abandoned.is_set():
            return
        self._apply(fields)
        await self.flush()

    def _apply(self, fields: dict[str, Any]) -> bool:
        """Set status fields; whether any of them changed."""
        s = self.status
        changed = False
        for key, value in fields.items():
            if getattr(s, key) == value:
                continue
            changed = True
            if key == 'revision':
                s.set_revision(value)
            else:
                setattr(s, key, value)
        self._dirty = self._dirty or changed
        return changed

    async def stage_done(self, name: StageName, record: StageRecord, outcome: Done) -> None:
        s = self.status
        learnt = self._apply(outcome.record)
        record.result = StageResult.skipped if outcome.skipped else StageResult.succeeded
        record.completed_at = conditions.now()
        record.message = self.run.redact(outcome.message)
        record.reason = None
        reason = 'Skipped' if outcome.skipped else Reason.SUCCEEDED
        conditions.set_condition(s, type=name.value, value='True', reason=reason,
                                 message=record.message or reason, generation=self.run.generation)
        metrics.STAGE_DURATION.labels(stage=name.value, result=record.result.value).observe(_seconds(record))
        text = f'Stage {name.number}/6 {name.value} {"skipped" if outcome.skipped else "succeeded"}'
        if record.message:
            text += f': {record.message}'
        self._dirty = True
        self.run.sink.progress(f'[Stage {name.number}] {record.message or reason}')
        if name == StageName.complete:  # the run's final Event, which follows at once, says it
            return
        self._hold('Normal', f'{name.value}{reason}', text)
        if learnt and not outcome.skipped:  # what its work made is saved before the next stage begins
            await self.flush()

    async def stage_failed(self, name: StageName, record: StageRecord, error: PandaDeployError) -> None:
        s = self.status
        message = self.run.redact(error.message)
        if used := credentials_used(self.run.spec, error.reason):  # which credentials were refused
            message = message.rstrip('.') + used
        record.result = StageResult.failed
        record.completed_at = conditions.now()
        record.message, record.reason = message, error.reason
        conditions.set_condition(s, type=name.value, value='False', reason=error.reason, message=message,
                                 generation=self.run.generation)
        metrics.STAGE_DURATION.labels(stage=name.value, result=StageResult.failed.value).observe(_seconds(record))
        metrics.STAGE_FAILURES.labels(stage=name.value, reason=error.reason).inc()
        self.run.sink.progress(f'[Stage {name.number}] failed: {error.reason}: {message}')
        await self.finish(RunResult.failed, reason=error.reason, message=message)

    async def stage_cancelled(self, name: StageName, record: StageRecord, result: RunResult) -> None:
        record.result = StageResult.cancelled
        record.completed_at = conditions.now()
        record.message = f'{result.value} while running'

    async def finish(self, result: RunResult, *, reason: str, message: str, quiet: bool = False) -> None:
        """End the run: status and history saved, then the held Events and the final one (none when `quiet`)."""
        s = self.status
        s.completed_at = conditions.now()
        started = s.started_at or s.completed_at
        s.duration_seconds = round((s.completed_at - started).total_seconds(), 3)
        s.message = message
        entry = HistoryEntry(
            deployment_id=s.deployment_id or '', generation=self.run.generation, revision=s.revision,
            result=result, reason=reason, message=message, started_at=started, completed_at=s.completed_at,
            duration_seconds=s.duration_seconds, image_uri=s.image.uri if s.image else None,
            active_color=s.active_color)
        s.history = [entry, *s.history][:self.run.spec.history_limit]
        if result == RunResult.succeeded:
            s.phase = Phase.succeeded
        elif result == RunResult.failed:
            s.phase = Phase.failed
        else:  # superseded or cancelled: no run is in progress any more
            s.phase = Phase.pending
        conditions.summarise(s, reason=reason, message=message, generation=self.run.generation)
        metrics.RUNS.labels(result=result.value).inc()
        metrics.RUN_DURATION.observe(s.duration_seconds)
        self._dirty = True
        if quiet:
            self._held = []
        await self.flush()
        if not quiet:
            await self.run.sink.event(type='Warning' if result == RunResult.failed else 'Normal', reason=reason,
                                      message=message)
        self.run.sink.progress(f'Run {s.deployment_id} {result.value}: {message}')


def _seconds(record: StageRecord) -> float:
    if record.started_at is None or record.completed_at is None:
        return 0.0
    return max(0.0, (record.completed_at - record.started_at).total_seconds())


class StageAbandoned(Exception):
    """Raised in a worker thread whose stage the engine no longer waits for."""


class StageContext:
    """What a stage sees: the spec, the status so far, credentials, adapters, progress and record."""

    def __init__(self, *, run: Run, name: StageName, recorder: Recorder, loop: asyncio.AbstractEventLoop,
                 adapters: Callable[[], Adapters]) -> None:
        self.run = run
        self.name = name
        self.spec = run.spec
        self.credentials = run.credentials
        self.logger = run.logger
        self.cancel = threading.Event()
        self.scratch: dict[str, Any] = {}  # per-run, in-memory state between polls of one stage
        self.recorder = recorder
        self._loop = loop
        self._adapters = adapters

    @property
    def status(self) -> PandaDeployStatus:
        return self.run.status

    @property
    def adapters(self) -> Adapters:
        return self._adapters()

    def progress(self, message: str) -> None:
        self.run.sink.progress(f'[Stage {self.name.number}] {self.run.redact(message)}')

    def record(self, **fields: Any) -> None:
        """Persist outputs now (from the worker thread), before the stage goes on.

        A stage that was abandoned (timed out, superseded, cancelled) may still be
        running in its thread; it must not touch the status any more, so it stops here.
        """
        if self.cancel.is_set():
            raise StageAbandoned(f'stage {self.name.value} was abandoned; its result is discarded')
        future = asyncio.run_coroutine_threadsafe(self.recorder.record(fields, abandoned=self.cancel), self._loop)
        future.result(timeout=120)

    def promote_requested(self) -> bool:
        return self.run.promote_requested()


class Engine:
    """Drives runs through the stages with a shared worker pool."""

    def __init__(self, *, stages: Sequence[Stage], adapters: AdapterFactory,
                 pool: concurrent.futures.ThreadPoolExecutor, clock: Callable[[], float] = time.time) -> None:
        self.stages = stages
        self.adapter_factory = adapters
        self.pool = pool
        self.clock = clock

    async def drive(self, run: Run, *, until: StageName | None = None) -> RunResult:
        """Run (or resume) the stages; returns the result. Cancellation is recorded, then re-raised."""
        recorder = Recorder(run)
        loop = asyncio.get_running_loop()
        built: list[Adapters] = []
        lock = threading.Lock()

        def adapters() -> Adapters:
            with lock:
                if not built:
                    built.append(self.adapter_factory(run.spec, run.credentials))
                return built[0]

        await recorder.started()
        try:
            for stage in self.stages:
                record = run.status.stage_record(stage.name)
                if record is not None and record.result in FINISHED_STAGE:
                    continue
                record = await recorder.stage_started(stage.name)
                ctx = StageContext(run=run, name=stage.name, recorder=recorder, loop=loop, adapters=adapters)
                try:
                    outcome = await self._run_stage(stage, ctx, record)
                except asyncio.CancelledError:
                    ctx.cancel.set()
                    if run.cancel_result is not None:
                        await recorder.stage_cancelled(stage.name, record, run.cancel_result)
                        await self._stop_open_deployment(run, adapters)
                    raise
                except PandaDeployError as exc:
                    ctx.cancel.set()
                    await recorder.stage_failed(stage.name, record, exc)
                    return RunResult.failed
                except Exception as exc:  # a bug or an adapter's surprise: fail the run, say what it was
                    ctx.cancel.set()
                    run.logger.exception('Stage %s raised unexpectedly', stage.name.value)
                    error = StageFailed(f'{type(exc).__name__}: {exc}', reason=Reason.UNEXPECTED_ERROR)
                    await recorder.stage_failed(stage.name, record, error)
                    return RunResult.failed
                await recorder.stage_done(stage.name, record, outcome)
                if until is not None and stage.name == until:
                    break
            revision = run.status.revision_short or 'unknown'
            colour = run.status.active_color
            message = f'Revision {revision} deployed' + (f'; {colour} is active' if colour else '')
            # Nothing written so far and stages 1-5 all found their work done: one quiet status write.
            quiet = not run.written and until is None and all(
                (r := run.status.stage_record(name)) is not None and r.result == StageResult.skipped
                for name in StageName if name != StageName.complete)
            if quiet:
                message = f'Revision {revision} already deployed' + (f'; {colour} is active' if colour else '') \
                    + '; nothing to do'
            if until is not None and until != StageName.complete:
                message = f'Stopped after stage {until.number}/6 {until.value} as asked; revision {revision}'
            await recorder.finish(RunResult.succeeded, reason=Reason.SUCCEEDED, message=message, quiet=quiet)
            return RunResult.succeeded
        except asyncio.CancelledError:
            result = run.cancel_result
            if result is not None:  # superseded or deleted: the run ends here, in history
                stage = run.status.stage or 'start'
                await asyncio.shield(recorder.finish(
                    result, reason=result.value,
                    message=f'Run {run.status.deployment_id} {result.value.lower()} at stage {stage}'))
            raise
        finally:
            metrics.RUNS_IN_PROGRESS.dec()

    async def _stop_open_deployment(self, run: Run, adapters: Callable[[], Adapters]) -> None:
        """A run that ends while its CodeDeploy deployment is open stops it with rollback, so traffic stays
        where it was and the next run is not blocked by an open deployment."""
        deployment_id = run.status.code_deploy_deployment_id
        if not deployment_id or run.status.stage_name not in (StageName.blue_green, StageName.verify):
            return
        loop = asyncio.get_running_loop()
        try:
            stop = functools.partial(adapters().codedeploy.stop_deployment, deployment_id, rollback=True)
            await asyncio.shield(asyncio.wait_for(loop.run_in_executor(self.pool, stop), timeout=60))
            run.sink.progress(f'CodeDeploy deployment {deployment_id} stopped with rollback')
        except Exception as exc:  # best effort: the deployment's own timeout still ends it
            run.logger.warning('Could not stop CodeDeploy deployment %s: %s', deployment_id, run.redact(str(exc)))

    async def _run_stage(self, stage: Stage, ctx: StageContext, record: StageRecord) -> Done:
        run = ctx.run
        loop = asyncio.get_running_loop()
        attempts = 0
        last_error: Transient | None = None  # a timeout after transient errors names the last one
        while True:
            remaining, timeout = self._deadline(run, record)
            if remaining <= 0:
                raise _with_last_error(timeout, last_error)
            try:
                called = loop.time()
                future = loop.run_in_executor(self.pool, stage.run, ctx)
                if ctx.recorder.pending and remaining > SHOW_RUNNING_AFTER:
                    finished, _ = await asyncio.wait({future}, timeout=SHOW_RUNNING_AFTER)
                    if not finished:  # a long stage shows as running
                        await ctx.recorder.flush()
                    remaining, timeout = self._deadline(run, record)
                outcome = await asyncio.wait_for(future, timeout=max(0.0, remaining))
            except asyncio.TimeoutError:
                ctx.cancel.set()
                raise _with_last_error(self._deadline(run, record)[1], last_error) from None
            except Transient as exc:
                last_error = exc
                delay = TRANSIENT_BACKOFF[min(attempts, len(TRANSIENT_BACKOFF) - 1)]
                attempts += 1
                remaining, timeout = self._deadline(run, record)
                if remaining <= delay:
                    raise StageFailed(f'{exc.message} (gave up after {attempts} attempts)', reason=exc.reason) from exc
                ctx.progress(f'{exc.message}; retry {attempts} in {delay:.0f}s')
                await ctx.recorder.flush()  # the stage shows as running while it waits
                await asyncio.sleep(delay)
                continue
            if isinstance(outcome, Done):
                return outcome
            attempts, last_error = 0, None
            if outcome.message:
                ctx.progress(outcome.message)
            await ctx.recorder.flush()  # the stage shows as running while it waits
            remaining, _ = self._deadline(run, record)
            # `seconds` apart from the start of the previous call (a fixed rate: checks `intervalSeconds`
            # apart, polls not slowed by the time each call takes).
            await asyncio.sleep(max(0.0, min(outcome.seconds - (loop.time() - called), remaining)))

    def _deadline(self, run: Run, record: StageRecord) -> tuple[float, StageTimeout]:
        """Seconds left before the nearer of the stage and total limits, and the error to raise then."""
        now = self.clock()
        stage_start = _epoch(record.started_at, now)
        run_start = _epoch(run.status.started_at, now)
        stage_limit, total_limit = run.spec.timeouts.stage, run.spec.timeouts.total
        stage_left = stage_start + stage_limit - now
        total_left = run_start + total_limit - now
        name = record.name
        if total_left < stage_left:
            return total_left, StageTimeout(stage=name.value, number=name.number, seconds=now - run_start,
                                            limit=total_limit, total=True)
        return stage_left, StageTimeout(stage=name.value, number=name.number, seconds=now - stage_start,
                                        limit=stage_limit, total=False)


def _with_last_error(timeout: StageTimeout, error: Transient | None) -> StageTimeout:
    """The timeout, its message naming the last transient error (e.g. the AWS error code) when there was one."""
    if error is not None:
        timeout.message = f'{timeout.message}; last error: {error.message}'
        timeout.args = (timeout.message,)
    return timeout


def _epoch(moment: datetime.datetime | None, default: float) -> float:
    return moment.timestamp() if moment is not None else default
