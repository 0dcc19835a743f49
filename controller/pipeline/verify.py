"""Stage 5, Verify: health-check green, then let CodeDeploy shift production traffic.

Green gets `healthCheck.checks` checks, one per poll, `intervalSeconds`
apart (no thread held between them); when stage 4 had nothing to switch,
production gets them instead (once it first answers: a new service needs its
tasks up) and there is no traffic to move. All pass: with `promotion: manual` the
stage waits for the `deploy.panda.dev/promote` annotation, then continues the
CodeDeploy deployment and waits for it to succeed. Any check fails: the
deployment is stopped with rollback, traffic stays on blue, the run fails.

A run that deployed nothing (stage 3 found the task definition registered
and the service there, stage 4 found the service already running it) skips
the checks when the newest run in `status.history` succeeded with the same
image: that image passed them then, and no traffic is to move now. After a
failed or superseded run, the checks run again.
"""
from __future__ import annotations

import statistics

from controller.adapters import Probe
from controller.errors import HealthCheckFailed, Reason, StageFailed
from controller.models import HealthCheckStatus, HistoryEntry, Promotion, RunResult, StageName, StageResult
from controller.pipeline.bluegreen import report_lifecycle
from controller.pipeline.engine import Done, StageContext, Wait

PROMOTE_ANNOTATION = 'deploy.panda.dev/promote'
POLL_SECONDS = 5.0


def summarise_checks(url: str, latencies: list[float], failures: int, total: int) -> HealthCheckStatus:
    done = len(latencies)
    return HealthCheckStatus(
        url=url, passed=done - failures, failed=failures, total=total,
        latency_median_ms=round(statistics.median(latencies) * 1000, 1) if latencies else None,
        latency_max_ms=round(max(latencies) * 1000, 1) if latencies else None,
        error_rate=round(failures / done, 4) if done else None)


class Verify:
    name = StageName.verify
    poll_seconds = POLL_SECONDS

    def run(self, ctx: StageContext) -> Done | Wait:
        spec, adapters = ctx.spec, ctx.adapters
        deployment_id = ctx.status.code_deploy_deployment_id
        check = spec.health_check
        scratch = ctx.scratch

        if not deployment_id and 'url' not in scratch and (verified := verified_before(ctx)) is not None:
            return Done(f'Nothing deployed by this run; image {verified.image_uri} passed its checks in run '
                        f'{verified.deployment_id}', skipped=True)

        if deployment_id and 'continued' not in scratch:
            state = adapters.codedeploy.get_deployment(deployment_id)
            if state.status == 'Succeeded' or state.traffic_shifted:  # resumed after traffic already moved
                return Done(f'Traffic switched (deployment {deployment_id})')

        if 'continued' not in scratch:
            if 'url' not in scratch:
                traffic = adapters.loadbalancer.traffic(spec=spec)
                # With a deployment, the replacement sits behind the colour not serving production (the
                # test listener); without one (a new service, an unchanged image) production is checked.
                base = traffic.standby_url if deployment_id else traffic.active_url
                scratch.update(url=check.url or (base or '').rstrip('/') + check.path,
                               latencies=[], failures=0, errors=[])
            url, latencies = scratch['url'], scratch['latencies']
            if not deployment_id and not scratch.get('answering'):
                # A service created just now answers only once its tasks run and its targets are
                # healthy (the load balancer says 503 meanwhile): wait for a first good answer,
                # bounded by the stage timeout, before counting checks.
                probe = refuse_denied(ctx, adapters.http.get(url, timeout=check.timeout_seconds), url, deployment_id)
                if probe.status != check.expected_status:
                    ctx.progress(f'Waiting for {url} to answer ({probe.error or f"HTTP {probe.status}"})')
                    return Wait(max(check.interval_seconds, self.poll_seconds))
                scratch['answering'] = True
                scratch['first'] = probe  # the first good answer is check 1
            done = len(latencies)
            if done < check.checks:
                probe = scratch.pop('first', None) or refuse_denied(
                    ctx, adapters.http.get(url, timeout=check.timeout_seconds), url, deployment_id)
                latencies.append(probe.seconds)
                ok = probe.status == check.expected_status
                if not ok:
                    scratch['failures'] += 1
                    scratch['errors'].append(probe.error or f'HTTP {probe.status}')
                ctx.progress(f'HealthCheck in progress - Check {done + 1}/{check.checks}'
                             + ('' if ok else f' failed ({scratch["errors"][-1]})'))
                if done + 1 < check.checks:
                    return Wait(check.interval_seconds)
            summary = summarise_checks(url, latencies, scratch['failures'], check.checks)
            if deployment_id or summary.failed:  # saved before the deployment is stopped or continued
                ctx.record(health_check=summary)
            if summary.failed:
                if deployment_id:
                    adapters.codedeploy.stop_deployment(deployment_id, rollback=True)
                    ctx.progress('Deployment stopped and rolled back; traffic stays where it was')
                raise HealthCheckFailed(url=url, failed=summary.failed, total=summary.total,
                                        detail=scratch['errors'][0])
            if not deployment_id:
                return Done(f'{summary.total}/{summary.total} checks passed on {url}; no traffic to shift',
                            record={'health_check': summary})
            if spec.blue_green.promotion == Promotion.manual and not ctx.promote_requested():
                if not ctx.status.promotion:
                    ctx.record(promotion=f'Green passed {summary.total}/{summary.total} checks; '
                                         f'annotate {PROMOTE_ANNOTATION}=true to shift traffic')
                    ctx.progress('Waiting for promotion')
                return Wait(self.poll_seconds)
            adapters.codedeploy.continue_deployment(deployment_id)
            scratch['continued'] = True
            ctx.progress('Traffic shift started')
            if ctx.status.promotion:
                ctx.record(promotion=None)

        assert deployment_id
        state = adapters.codedeploy.get_deployment(deployment_id)
        report_lifecycle(ctx, state)
        if state.status in ('Failed', 'Stopped'):
            raise StageFailed(f'CodeDeploy deployment {deployment_id} {state.status} while shifting traffic'
                              + (f': {state.error}' if state.error else ''), reason=Reason.BLUE_GREEN_FAILED)
        if state.status != 'Succeeded' and not state.traffic_shifted:
            return Wait(self.poll_seconds)
        colour = adapters.loadbalancer.traffic(spec=spec).active_color
        ctx.progress(f'Traffic switched to {colour}')
        return Done(f'Traffic switched to {colour} (deployment {deployment_id})')


def refuse_denied(ctx: StageContext, probe: Probe, url: str, deployment_id: str | None) -> Probe:
    """A URL the operator never connects to (PANDA_DEPLOY_HEALTH_CHECK_DENY) ends the run at once, with an open
    deployment stopped and rolled back: no retry or wait can change the answer. Any other probe goes on."""
    if not probe.denied:
        return probe
    if deployment_id:
        ctx.adapters.codedeploy.stop_deployment(deployment_id, rollback=True)
        ctx.progress('Deployment stopped and rolled back; traffic stays where it was')
    raise StageFailed(f'Health check URL {url} is not allowed: {probe.error}',
                      reason=Reason.HEALTH_CHECK_URL_NOT_ALLOWED)


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
