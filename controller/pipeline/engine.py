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
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from controller import metrics
from controller.adapters import AdapterFactory, Adapters
from controller.errors import PandaDeployError, Reason, StageFailed, StageTimeout, Transient
from controller.models import RunResult, StageName, StageRecord, StageResult
from controller.pipeline.run import Run
from controller.pipeline.stage import Done, Stage, StageContext, Wait

FINISHED_STAGE = (StageResult.succeeded, StageResult.skipped)
TRANSIENT_BACKOFF = (2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
SHOW_RUNNING_AFTER = 1.0  # seconds a stage runs before its start is saved (if nothing saved it sooner)


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
        try:
            outcome = await self._run_stage(stage, ctx, record)
        except asyncio.CancelledError:
            ctx.cancel.set()
            if run.cancel_result is not None:
                recorder.stage_cancelled(record, run.cancel_result, abort=run.abort)
                await self._stop_open_deployment(run, adapters)
            raise
        except PandaDeployError as exc:
            ctx.cancel.set()
            await self._fail(run, record, exc)
            return False
        except Exception as exc:  # a bug or an adapter's surprise: fail the run, say what it was
            ctx.cancel.set()
            run.logger.exception('Stage %s raised unexpectedly', stage.name.value)
            await self._fail(run, record, StageFailed(f'{type(exc).__name__}: {exc}', reason=Reason.UNEXPECTED_ERROR))
            return False
        await recorder.stage_done(stage.name, record, message=run.redact(outcome.message), skipped=outcome.skipped,
                                  learnt=outcome.record)
        return True

    async def _fail(self, run: Run, record: StageRecord, error: PandaDeployError) -> None:
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
        """Superseded, deleted or aborted: the run ends here, in history. Operator shutdown: nothing is written."""
        result = run.cancel_result
        if result is None:
            return
        if run.abort is not None:
            reason, message = run.abort.reason, run.failure_message(run.abort)
        else:
            reason = result.value
            message = f'Run {run.status.deployment_id} {result.value.lower()} at stage {run.status.stage or "start"}'
        await asyncio.shield(self._finish(run, result, reason=reason, message=message))

    @staticmethod
    async def _finish(run: Run, result: RunResult, *, reason: str, message: str, quiet: bool = False) -> None:
        await run.recorder.finish(result, reason=reason, message=message, history_limit=run.spec.history_limit,
                                  quiet=quiet)

    async def _stop_open_deployment(self, run: Run, adapters: RunAdapters) -> None:
        """A run that ends while its CodeDeploy deployment is open stops it with rollback, so traffic stays
        where it was and the next run is not blocked by an open deployment."""
        deployment_id = run.status.code_deploy_deployment_id
        if not deployment_id or run.status.stage_name not in (StageName.blue_green, StageName.verify):
            return
        loop = asyncio.get_running_loop()
        try:
            stop = functools.partial(adapters().codedeploy.stop_deployment, deployment_id, rollback=True)
            await asyncio.shield(asyncio.wait_for(loop.run_in_executor(self.pool, stop), timeout=60))
            run.recorder.progress(f'CodeDeploy deployment {deployment_id} stopped with rollback')
        except Exception as exc:  # best effort: the deployment's own timeout still ends it
            run.logger.warning('Could not stop CodeDeploy deployment %s: %s', deployment_id, run.redact(str(exc)))

    async def _run_stage(self, stage: Stage, ctx: StageContext, record: StageRecord) -> Done:
        """Call the stage until it is done: waits polled at their pace, transient errors retried with backoff."""
        run = ctx.run
        loop = asyncio.get_running_loop()
        attempts = 0
        last_error: Transient | None = None  # a timeout after transient errors names the last one
        while True:
            remaining, timeout = self._deadline(run, record)
            if remaining <= 0:
                raise _with_last_error(timeout, last_error)
            called = loop.time()
            try:
                outcome = await self._call(stage, ctx, record, remaining=remaining)
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
                await run.recorder.flush()  # the stage shows as running while it waits
                await asyncio.sleep(delay)
                continue
            if isinstance(outcome, Done):
                return outcome
            attempts, last_error = 0, None
            if outcome.message:
                ctx.progress(outcome.message)
            await run.recorder.flush()  # the stage shows as running while it waits
            remaining, _ = self._deadline(run, record)
            # `seconds` apart from the start of the previous call (a fixed rate: checks `intervalSeconds`
            # apart, polls not slowed by the time each call takes).
            await asyncio.sleep(max(0.0, min(outcome.seconds - (loop.time() - called), remaining)))

    async def _call(self, stage: Stage, ctx: StageContext, record: StageRecord, *, remaining: float) -> Done | Wait:
        """One call of the stage in the worker pool within the time left; a long call shows as running."""
        recorder = ctx.run.recorder
        future = asyncio.get_running_loop().run_in_executor(self.pool, stage.run, ctx)
        if recorder.pending and remaining > SHOW_RUNNING_AFTER:
            finished, _ = await asyncio.wait({future}, timeout=SHOW_RUNNING_AFTER)
            if not finished:  # a long stage shows as running
                await recorder.flush()
            remaining, _ = self._deadline(ctx.run, record)
        return await asyncio.wait_for(future, timeout=max(0.0, remaining))

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


def _all_found_done(run: Run) -> bool:
    """Stages 1-5 were all skipped: each found its work already done."""
    return all((record := run.status.stage_record(name)) is not None and record.result == StageResult.skipped
               for name in StageName if name != StageName.complete)
