"""Stage 5, Verify: health-check green, then let CodeDeploy shift production traffic.

Green gets `healthCheck.checks` checks, one per poll, `intervalSeconds`
apart (no thread held between them); when stage 4 had nothing to switch,
production gets them instead (once it first answers: a new service needs its
tasks up) and there is no traffic to move. All pass: with `promotion: manual` the
stage waits for the `deploy.panda.dev/promote` annotation naming this run's
`deploymentId` (one naming another run, or `true`, approves nothing: an
approval is for one run, never a standing order), then continues the
CodeDeploy deployment and waits for it to succeed. Any check fails: the
deployment is stopped with rollback, traffic stays on blue, the run fails.

A run that deployed nothing (stage 3 found the task definition registered
and the service there, stage 4 found the service already running it) skips
the checks when the newest run in `status.history` succeeded with the same
image: that image passed them then, and no traffic is to move now. After a
failed or superseded run, the checks run again.

With an ECS strategy the deployment is ECS's own service deployment, held
at the operator's PAUSE hook while the checks run; after `CONTINUE` the
checks go on through each canary or linear step and the bake, and the stage
ends only when ECS says how the deployment ended (`rollouts.EcsGate`).

Between polls the stage keeps its progress in one `CheckProgress` (in the
stage's in-memory scratch): it is lost on restart, which only means the
checks run again. Each poll walks the same named steps in order; a step
returns the poll's outcome or None to let the next step go on.
"""
from __future__ import annotations

import dataclasses
import statistics
from typing import NoReturn

from controller.adapters import Probe
from controller.errors import HealthCheckFailed, Reason, StageFailed
from controller.models import (
    PROMOTE_ANNOTATION,
    HealthCheckStatus,
    HistoryEntry,
    Promotion,
    RunResult,
    StageName,
    StageResult,
)
from controller.pipeline.recorder import DEPLOYMENT_ID
from controller.pipeline.rollouts import Gate, open_gate
from controller.pipeline.stage import Done, StageContext, Wait

POLL_SECONDS = 5.0


@dataclasses.dataclass
class CheckProgress:
    """How far the checks of one Verify stage got, kept between its polls."""
    url: str
    latencies: list[float] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)  # one per failed check, in order
    answering: bool = False  # the checked URL gave a first good answer (checks without a deployment)
    first: Probe | None = None  # that first good answer, counted as check 1
    continued: bool = False  # all checks passed and CodeDeploy was told to shift traffic

    @property
    def failures(self) -> int:
        return len(self.errors)

    def summary(self, total: int) -> HealthCheckStatus:
        return summarise_checks(self.url, self.latencies, self.failures, total)


def summarise_checks(url: str, latencies: list[float], failures: int, total: int) -> HealthCheckStatus:
    done = len(latencies)
    return HealthCheckStatus(
        url=url, passed=done - failures, failed=failures, total=total,
        latency_median_ms=round(statistics.median(latencies) * 1000, 1) if latencies else None,
        latency_max_ms=round(max(latencies) * 1000, 1) if latencies else None,
        error_rate=round(failures / done, 4) if done else None)


_PROGRESS = 'checks'  # the one key of Verify's scratch


def _progress(ctx: StageContext) -> CheckProgress | None:
    found = ctx.scratch.get(_PROGRESS)
    assert found is None or isinstance(found, CheckProgress)
    return found


class Verify:
    name = StageName.verify
    poll_seconds = POLL_SECONDS

    def run(self, ctx: StageContext) -> Done | Wait:
        gate = open_gate(ctx)
        progress = _progress(ctx)
        if gate is None and progress is None and (verified := verified_before(ctx)) is not None:
            return Done(f'Nothing deployed by this run; image {verified.image_uri} passed its checks in run '
                        f'{verified.deployment_id}', skipped=True)
        if progress is None or not progress.continued:
            moved = gate.moved(ctx) if gate is not None else False
            if isinstance(moved, Done):
                return moved
            if progress is None:
                progress = self._start_checks(ctx, gate)
            if moved:  # resumed while production moves: no gate left to keep, follow it to its end
                progress.continued = True
            else:
                outcome = self._check(ctx, progress, gate)
                if outcome is not None:
                    return outcome
        assert gate is not None
        return gate.follow(ctx, progress, poll=self.poll_seconds)

    # -- the steps, in the order a poll takes them ---------------------------------------

    @staticmethod
    def _start_checks(ctx: StageContext, gate: Gate | None) -> CheckProgress:
        """The URL to check, kept for the stage's later polls."""
        check = ctx.spec.health_check
        traffic = ctx.adapters.loadbalancer.traffic(spec=ctx.spec)
        # With a deployment, the replacement sits behind the colour not serving production (the
        # test listener); without one (a new service, an unchanged image) production is checked.
        base = traffic.standby_url if gate is not None else traffic.active_url
        if not check.url and not base:
            raise _nothing_to_check(ctx, gate)
        progress = CheckProgress(url=check.url or (base or '').rstrip('/') + check.path)
        ctx.scratch[_PROGRESS] = progress
        return progress

    def _check(self, ctx: StageContext, progress: CheckProgress, gate: Gate | None) -> Done | Wait | None:
        """The checks up to their verdict; None once traffic shift started."""
        if gate is None and not progress.answering:
            waiting = self._wait_for_first_answer(ctx, progress)
            if waiting is not None:
                return waiting
        if len(progress.latencies) < ctx.spec.health_check.checks:
            more = self._one_check(ctx, progress)
            if more is not None:
                return more
        summary = progress.summary(ctx.spec.health_check.checks)
        if gate is not None or summary.failed:  # saved before the deployment is stopped or continued
            ctx.record(health_check=summary)
        if summary.failed:
            self._roll_back(ctx, progress, summary, gate)
        if gate is None:
            return Done(f'{summary.total}/{summary.total} checks passed on {progress.url}; no traffic to shift',
                        record={'health_check': summary})
        return self._promote(ctx, progress, summary, gate)

    def _wait_for_first_answer(self, ctx: StageContext, progress: CheckProgress) -> Wait | None:
        """A service created just now answers only once its tasks run and its targets are healthy (the
        load balancer says 503 meanwhile): wait for a first good answer, bounded by the stage timeout,
        before counting checks."""
        check = ctx.spec.health_check
        probe = probe_once(ctx, progress.url)
        if probe.status != check.expected_status:
            ctx.progress(f'Waiting for {progress.url} to answer ({probe.error or f"HTTP {probe.status}"})')
            return Wait(max(check.interval_seconds, self.poll_seconds))
        progress.answering = True
        progress.first = probe  # the first good answer is check 1
        return None

    @staticmethod
    def _one_check(ctx: StageContext, progress: CheckProgress) -> Wait | None:
        """One check; a Wait until the next when more are to come, None after the last."""
        check = ctx.spec.health_check
        done = len(progress.latencies)
        probe, progress.first = progress.first, None
        if probe is None:
            probe = probe_once(ctx, progress.url)
        progress.latencies.append(probe.seconds)
        ok = probe.status == check.expected_status
        if not ok:
            progress.errors.append(probe.error or f'HTTP {probe.status}')
        ctx.show(f'HealthCheck in progress - Check {done + 1}/{check.checks}'
                 + ('' if ok else f' failed ({progress.errors[-1]})'))
        if done + 1 < check.checks:
            return Wait(check.interval_seconds)
        return None

    @staticmethod
    def _roll_back(ctx: StageContext, progress: CheckProgress, summary: HealthCheckStatus,
                   gate: Gate | None) -> NoReturn:
        """A check failed: stop the deployment with rollback (traffic stays put) and fail the stage."""
        outcome = ''
        if gate is not None:
            gate.stop(ctx)
            ctx.progress('Deployment stopped and rolled back; traffic stays where it was')
            outcome = 'rolled back, production traffic unchanged'
        raise HealthCheckFailed(url=progress.url, failed=summary.failed, total=summary.total,
                                detail=progress.errors[0], outcome=outcome)

    def _promote(self, ctx: StageContext, progress: CheckProgress, summary: HealthCheckStatus,
                 gate: Gate) -> Wait | None:
        """All checks passed: wait for a manual promotion if the spec asks for one, then continue the
        deployment (None: the shift started)."""
        if ctx.spec.promotion == Promotion.manual:
            waiting = awaiting_promotion(ctx.approval(), ctx.status.deployment_id or '', summary)
            if waiting is not None:
                if waiting != ctx.status.promotion:  # news once: written when what it says changes, not per poll
                    ctx.record(promotion=waiting)
                    ctx.progress(f'Waiting for promotion: {waiting}')
                return Wait(self.poll_seconds)
            ctx.progress(f'Promoted by {PROMOTE_ANNOTATION}={ctx.status.deployment_id}')
        gate.promote(ctx)
        progress.continued = True
        ctx.progress('Traffic shift started')
        if ctx.status.promotion:
            ctx.record(promotion=None)
        return None


def probe_once(ctx: StageContext, url: str) -> Probe:
    """One GET of the health-check URL; a URL the operator may not reach ends the stage (`refuse_denied`)."""
    probe = ctx.adapters.http.get(url, timeout=ctx.spec.health_check.timeout_seconds)
    return refuse_denied(ctx, probe, url, open_gate(ctx))


def refuse_denied(ctx: StageContext, probe: Probe, url: str, gate: Gate | None) -> Probe:
    """A URL the operator never connects to (PANDA_DEPLOY_HEALTH_CHECK_DENY) ends the run at once, with an open
    deployment stopped and rolled back: no retry or wait can change the answer. Any other probe goes on."""
    if not probe.denied:
        return probe
    if gate is not None:
        gate.stop(ctx)
        ctx.progress('Deployment stopped and rolled back; traffic stays where it was')
    raise StageFailed(f'Health check URL {url} is not allowed: {probe.error}',
                      reason=Reason.HEALTH_CHECK_URL_NOT_ALLOWED)


def awaiting_promotion(approval: str | None, run_id: str, summary: HealthCheckStatus) -> str | None:
    """None when the promote annotation names this run; else what `status.promotion` says to do."""
    if approval and approval == run_id:
        return None
    checks = f'Green passed {summary.total}/{summary.total} checks'
    if not approval:
        return f'{checks}; annotate {PROMOTE_ANNOTATION}={run_id} to shift traffic'
    if DEPLOYMENT_ID.fullmatch(approval):
        named = f'{PROMOTE_ANNOTATION} names {approval}, not this run {run_id}'
    else:
        named = f'{PROMOTE_ANNOTATION}={approval[:64]} names no run (it takes a deploymentId)'
    return f'{checks}; {named}; annotate with {run_id} to shift traffic'


def _nothing_to_check(ctx: StageContext, gate: Gate | None) -> StageFailed:
    """No URL to check: the spec names none and the load balancer has no listener for the colour to check."""
    if gate is not None and ctx.spec.ecs_native:
        missing = 'spec.rollout.loadBalancer names no test listener rule (testListenerRuleArn)'
    elif gate is not None:
        missing = ('the deployment group has no test listener to reach the replacement task set '
                   '(spec.blueGreen.loadBalancer.testListenerArn, or the group\'s testTrafficRoute)')
    else:
        missing = 'the load balancer has no production listener URL for the service'
    return StageFailed(f'Nothing to health-check: spec.healthCheck.url is not set and {missing}; set '
                       'spec.healthCheck.url or add a test listener', reason=Reason.NO_HEALTH_CHECK_TARGET)


def verified_before(ctx: StageContext) -> HistoryEntry | None:
    """The newest run, when it succeeded with this image and this run deployed nothing; else None."""
    status = ctx.status
    for name in (StageName.service, StageName.blue_green):
        record = status.stage_record(name)
        if record is None or record.result != StageResult.skipped:
            return None
    last = status.history[0] if status.history else None
    if last is None or last.result != RunResult.succeeded or status.image is None or not status.image.uri:
        return None
    return last if last.image_uri == status.image.uri else None
