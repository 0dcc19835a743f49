"""The engine: drives a run's stages in the worker pool, with timeouts, retries and polling.

A stage's blocking `run(ctx)` is called in the worker pool (never on the
event loop); a `Wait` is polled again with an asyncio sleep (holding no
thread); a `Transient` error is retried with backoff; the stage and total
timeouts end the run. Every outcome goes to the run's recorder (recorder.py),
the one writer of status, conditions, Events and metrics.

Durability: the stage records and every external id live in `status`. An id
a stage learns and then acts on is saved at once (`StageContext.record`); a
stage that did work is saved as done before the next stage begins, so a
restarted operator skips recorded stages and resumes at the one that was
running. Stages look before they act, so redoing the interrupted one is safe.
A stage's start, held by the recorder until something else is written, is
saved once the stage has run for `SHOW_RUNNING_AFTER` seconds.

Nothing is left open: a run that ends (failed, timed out, crashed, superseded
or deleted) in stage 4 or 5 (3 to 5 with an ECS strategy, whose service
deployment stage 3 starts) stops its CodeDeploy deployment or ECS service
deployment with rollback
(found by the run's id when it was being created as the run ended), so the
next run is not refused with DeploymentLimitExceeded. Only a run that is
merely interrupted (operator shutdown, or a status that cannot be written:
`StatusNotSaved`) leaves it, to be resumed. Nor is a run's work left
running behind its recorded end: a stage the engine gives up on is told to
stop and given `STOP_GRACE_SECONDS` to do so (`_let_stop`) first.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from controller import metrics
from controller.adapters import AdapterFactory, Adapters
from controller.errors import PandaDeployError, Reason, StageFailed, StageTimeout, StatusNotSaved, Transient
from controller.models import RunResult, StageName, StageRecord, StageResult
from controller.pipeline.build_stop import close_build
from controller.pipeline.rollouts import stop_codedeploy_if_open, stop_service_deployment_if_open
from controller.pipeline.run import Run
from controller.pipeline.stage import Done, Stage, StageContext, Wait

FINISHED_STAGE = (StageResult.succeeded, StageResult.skipped)
TRANSIENT_BACKOFF = (2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
SHOW_RUNNING_AFTER = 1.0  # seconds a stage runs before its start is saved (if nothing saved it sooner)
# The reason a stage fails with when it gives up retrying an error that named none of its own.
STAGE_REASONS = {StageName.build: Reason.BUILD_FAILED, StageName.push: Reason.PUSH_FAILED,
                 StageName.service: Reason.SERVICE_UPDATE_FAILED, StageName.blue_green: Reason.BLUE_GREEN_FAILED,
                 StageName.verify: Reason.BLUE_GREEN_FAILED}
# The stages a run may end in with its deployment open: CodeDeploy's starts in stage 4, ECS's own in stage 3.
_OPENING_STAGES = {False: (StageName.blue_green, StageName.verify),
                   True: (StageName.service, StageName.blue_green, StageName.verify)}
CALL_WAIT_SECONDS = 30.0  # a run ending in stage 4 waits this long for its CodeDeploy call in flight
STOP_SECONDS = 60.0  # and this long to find and stop its deployment
STOP_GRACE_SECONDS = 5.0  # an abandoned stage's call gets this long to stop before the run's end is recorded


class RunAdapters:
    """A run's adapters, made when a stage first asks (a run whose stages find their work done may not),
    then shared by its stages across worker threads."""

    def __init__(self, factory: AdapterFactory, run: Run) -> None:
        self._factory, self._run = factory, run
        self._built: Adapters | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Adapters:
        with self._lock:
            if self._built is None:
                self._built = self._factory(self._run.spec, self._run.credentials)
            return self._built

    @property
    def made(self) -> Adapters | None:
        """The adapters if a stage asked for them, else None (nothing external was called)."""
        return self._built


@dataclasses.dataclass
class StageCall:
    """The stage's call now (or last) in the worker pool; a run that ends waits for it before closing its
    deployment, which that call may be creating."""
    future: concurrent.futures.Future[Done | Wait] | None = None


@dataclasses.dataclass
class Retries:
    """The transient errors of one stage since its last good call: how many, since when, the last one."""
    attempts: int = 0
    since: float = 0.0
    last: Transient | None = None

    def note(self, error: Transient, *, called: float) -> float:
        """Count the error; the backoff before the next attempt."""
        if self.attempts == 0:
            self.since = called
        self.last = error
        delay = TRANSIENT_BACKOFF[min(self.attempts, len(TRANSIENT_BACKOFF) - 1)]
        self.attempts += 1
        return delay

    def gave_up(self, stage: StageName, *, now: float) -> StageFailed:
        """The run's failure when the next attempt would come too late: the error's reason (the stage's when
        it named none), how many attempts over how long."""
        assert self.last is not None
        reason = self.last.reason
        if reason == Reason.UNEXPECTED_ERROR:
            reason = STAGE_REASONS.get(stage, reason)
        return StageFailed(f'{self.last.message} (gave up after {self.attempts} attempts over '
                           f'{now - self.since:.1f} seconds)', reason=reason)


class DeadlinePassed(Exception):
    """The engine's own deadline for a call (the stage or total limit), told apart from a `TimeoutError`
    the stage raised itself (`asyncio.TimeoutError` is `TimeoutError`)."""


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
        adapters = RunAdapters(self.adapter_factory, run)
        run.recorder.started()
        try:
            for stage in self._due(run, until=until):
                if not await self._run_recorded(run, stage, adapters):
                    return RunResult.failed
            await self._succeed(run, until=until)
            return RunResult.succeeded
        except asyncio.CancelledError:
            await self._cancelled(run)
            raise
        finally:
            metrics.RUNS_IN_PROGRESS.dec()

    def _due(self, run: Run, *, until: StageName | None) -> Iterator[Stage]:
        """The stages still to run, in order (recorded ones are skipped), up to and including `until`."""
        for stage in self.stages:
            record = run.status.stage_record(stage.name)
            if record is not None and record.result in FINISHED_STAGE:
                continue
            yield stage
            if stage.name == until:
                return

    async def _run_recorded(self, run: Run, stage: Stage, adapters: RunAdapters) -> bool:
        """One stage from its start to its record; False when it failed, which ended the run."""
        recorder = run.recorder
        record = recorder.stage_started(stage.name)
        ctx = StageContext(run=run, name=stage.name, loop=asyncio.get_running_loop(), adapters=adapters)
        call = StageCall()
        try:
            outcome = await self._run_stage(stage, ctx, record, call)
        except asyncio.CancelledError:
            await _let_stop(ctx, call)
            if run.cancel_result is not None:
                recorder.stage_cancelled(record, run.cancel_result, abort=run.abort)
                await self._close_deployment(run, adapters, stage.name, call)
            raise
        except StatusNotSaved:  # interrupted, as by a restart: resumed from the status last written
            await _let_stop(ctx, call)
            raise
        except PandaDeployError as exc:
            await _let_stop(ctx, call)
            await self._fail(run, record, exc, adapters, call)
            return False
        except Exception as exc:  # a bug or an adapter's surprise: fail the run, say what it was
            await _let_stop(ctx, call)
            run.logger.exception('Stage %s raised unexpectedly', stage.name.value)
            await self._fail(run, record, StageFailed(f'{type(exc).__name__}: {exc}', reason=Reason.UNEXPECTED_ERROR),
                             adapters, call)
            return False
        await recorder.stage_done(stage.name, record, message=run.redact(outcome.message), skipped=outcome.skipped,
                                  learnt=outcome.record)
        return True

    async def _fail(self, run: Run, record: StageRecord, error: PandaDeployError, adapters: RunAdapters,
                    call: StageCall) -> None:
        await self._close_deployment(run, adapters, record.name, call)
        message = run.failure_message(error)
        run.recorder.stage_failed(record.name, record, reason=error.reason, message=message)
        await self._finish(run, RunResult.failed, reason=error.reason, message=message)

    async def _succeed(self, run: Run, *, until: StageName | None) -> None:
        status = run.status
        revision = status.revision_short or 'unknown'
        colour = f'; {status.active_color} is active' if status.active_color else ''
        # Nothing written so far and stages 1-5 all found their work done: one quiet status write.
        quiet = until is None and not run.recorder.written and _all_found_done(run)
        if until is not None and until != StageName.complete:
            message = f'Stopped after stage {until.number}/6 {until.value} as asked; revision {revision}'
        elif quiet:
            message = f'Revision {revision} already deployed{colour}; nothing to do'
        else:
            message = f'Revision {revision} deployed{colour}'
        await self._finish(run, RunResult.succeeded, reason=Reason.SUCCEEDED, message=message, quiet=quiet)

    async def _cancelled(self, run: Run) -> None:
        """Superseded, deleted or aborted: the run ends here, in history. Operator shutdown: nothing is written.
        A cancel that comes while the run's own end is being recorded leaves that end as it is (`_finish`)."""
        result = run.cancel_result
        if result is None:
            return
        if run.abort is not None:
            reason, message = run.abort.reason, run.failure_message(run.abort)
        else:
            reason = result.value
            message = f'Run {run.status.deployment_id} {result.value.lower()} at stage {run.status.stage or "start"}'
        try:
            await self._finish(run, result, reason=reason, message=message)
        except StatusNotSaved as exc:  # the run is over all the same; whoever superseded it writes next
            run.logger.error('The end of run %s could not be written: %s', run.status.deployment_id, exc.message)

    @staticmethod
    async def _finish(run: Run, result: RunResult, *, reason: str, message: str, quiet: bool = False) -> None:
        """Record the run's end, once: shielded, so a cancel that comes meanwhile neither cuts the final writes
        short nor records a second end (`_cancelled` waits for this one)."""
        if run.ending is None:
            run.ending = asyncio.ensure_future(run.recorder.finish(
                result, reason=reason, message=message, history_limit=run.spec.history_limit, quiet=quiet))
        await asyncio.shield(run.ending)

    async def _close_deployment(self, run: Run, adapters: RunAdapters, stage: StageName, call: StageCall) -> None:
        """A run that ends in stage 4 or 5 stops its open CodeDeploy deployment with rollback, so traffic stays
        where it was and the next run is not refused (DeploymentLimitExceeded). Best effort, bounded in time:
        the deployment's own ready wait still ends it."""
        if stage == StageName.build:  # on CodeBuild: its build is stopped
            return await close_build(run, adapters.made, self.pool, call.future)
        if stage not in _OPENING_STAGES[run.spec.ecs_native]:
            return
        if stage == StageName.verify and not (run.status.code_deploy_deployment_id
                                              or run.status.service_deployment_arn):
            return  # no deployment (a first rollout, an unchanged image): production was checked
        try:
            await asyncio.shield(self._stop_open_deployment(run, adapters, stage, call))
        except Exception as exc:
            run.logger.warning('Could not stop the CodeDeploy deployment of run %s: %s', run.status.deployment_id,
                               run.redact(f'{type(exc).__name__}: {exc}'))

    async def _stop_open_deployment(self, run: Run, adapters: RunAdapters, stage: StageName, call: StageCall) -> None:
        if call.future is not None and not call.future.done():  # e.g. CreateDeployment in flight: let it answer
            await asyncio.wait({asyncio.wrap_future(call.future)}, timeout=CALL_WAIT_SECONDS)
        # Only the stage that starts one (4 for CodeDeploy, 3 for ECS) may end before its id reached status.
        find = stage != StageName.verify
        stop = functools.partial(stop_service_deployment_if_open if run.spec.ecs_native else stop_codedeploy_if_open,
                                 run, adapters, find=find)
        loop = asyncio.get_running_loop()
        stopped = await asyncio.wait_for(loop.run_in_executor(self.pool, stop), timeout=STOP_SECONDS)
        if stopped:
            kind = 'Service' if run.spec.ecs_native else 'CodeDeploy'
            run.recorder.progress(f'{kind} deployment {stopped} stopped with rollback')

    async def _run_stage(self, stage: Stage, ctx: StageContext, record: StageRecord, call: StageCall) -> Done:
        """Call the stage until it is done: waits polled at their pace, transient errors retried with backoff."""
        run = ctx.run
        loop = asyncio.get_running_loop()
        retries = Retries()  # a timeout after transient errors names the last one
        while True:
            remaining, timeout = self._deadline(run, record)
            if remaining <= 0:
                raise _with_last_error(timeout, retries.last)
            called = loop.time()
            try:
                outcome = await self._call(stage, ctx, record, call, remaining=remaining)
            except DeadlinePassed:
                ctx.cancel.set()
                raise _with_last_error(self._deadline(run, record)[1], retries.last) from None
            except (Transient, TimeoutError) as exc:
                error = exc if isinstance(exc, Transient) else _call_timed_out(exc)
                delay = retries.note(error, called=called)
                if self._deadline(run, record)[0] <= delay:
                    raise retries.gave_up(stage.name, now=loop.time()) from exc
                ctx.progress(f'{error.message}; retry {retries.attempts} in {delay:.0f}s')
                await run.recorder.flush()  # the stage shows as running while it waits
                await asyncio.sleep(delay)
                continue
            if isinstance(outcome, Done):
                return outcome
            retries = Retries()
            if outcome.message:
                ctx.progress(outcome.message)
            await run.recorder.flush()  # the stage shows as running while it waits
            remaining, _ = self._deadline(run, record)
            # `seconds` apart from the start of the previous call (a fixed rate: checks `intervalSeconds`
            # apart, polls not slowed by the time each call takes).
            await asyncio.sleep(max(0.0, min(outcome.seconds - (loop.time() - called), remaining)))

    async def _call(self, stage: Stage, ctx: StageContext, record: StageRecord, call: StageCall, *,
                    remaining: float) -> Done | Wait:
        """One call of the stage in the worker pool within the time left; a long call shows as running.
        `DeadlinePassed` when the time is up; whatever the stage raised (a `TimeoutError` too) otherwise."""
        recorder = ctx.run.recorder
        call.future = self.pool.submit(stage.run, ctx)
        future = asyncio.wrap_future(call.future)
        try:
            if recorder.pending and remaining > SHOW_RUNNING_AFTER:
                finished, _ = await asyncio.wait({future}, timeout=SHOW_RUNNING_AFTER)
                if not finished:  # a long stage shows as running
                    await recorder.flush()
                remaining, _ = self._deadline(ctx.run, record)
            finished, _ = await asyncio.wait({future}, timeout=max(0.0, remaining))
        except BaseException:  # cancelled, or the flush failed: a call not started yet never starts
            future.cancel()
            raise
        if not finished:
            future.cancel()
            raise DeadlinePassed()
        return future.result()

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


async def _let_stop(ctx: StageContext, call: StageCall) -> None:
    """Tell the stage's call in the worker pool to stop, and give it `STOP_GRACE_SECONDS` to do so (its git
    tree killed at its next poll, its checkout removed) before the run's end is recorded: a run shown ended
    has nothing of its own still running, and its worker is free for the next run. A call that does not stop
    in time is left to end by itself."""
    ctx.cancel.set()
    if call.future is None or call.future.done():
        return
    waiting = asyncio.wrap_future(call.future)
    finished, _ = await asyncio.wait({waiting}, timeout=STOP_GRACE_SECONDS)
    if not finished:
        waiting.cancel()  # stops only this wait: the call is running
        ctx.run.logger.warning('Stage %s did not stop within %.0f seconds of being abandoned; it ends by itself',
                               ctx.name.value, STOP_GRACE_SECONDS)
    elif not waiting.cancelled():
        waiting.exception()  # whatever the abandoned call raised is of no use any more


def _with_last_error(timeout: StageTimeout, error: Transient | None) -> StageTimeout:
    """The timeout, its message naming the last transient error (e.g. the AWS error code) when there was one."""
    if error is not None:
        timeout.message = f'{timeout.message}; last error: {error.message}'
        timeout.args = (timeout.message,)
    return timeout


def _call_timed_out(exc: TimeoutError) -> Transient:
    """A `TimeoutError` raised inside a stage (a socket, an HTTP library): one call timed out, which may pass;
    retried like any transient error, and named for what it is when the retries give up."""
    return Transient(f'A call timed out ({type(exc).__name__}: {exc or "no detail"})', reason=Reason.CALL_TIMEOUT)


def _epoch(moment: datetime.datetime | None, default: float) -> float:
    return moment.timestamp() if moment is not None else default


def _all_found_done(run: Run) -> bool:
    """Stages 1-5 were all skipped: each found its work already done."""
    return all((record := run.status.stage_record(name)) is not None and record.result == StageResult.skipped
               for name in StageName if name != StageName.complete)
