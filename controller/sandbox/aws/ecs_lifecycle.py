"""One ECS service deployment (``BLUE_GREEN``, ``CANARY``, ``LINEAR``) from PENDING to its end: the state machine.

It follows AWS's developer guide ("Amazon ECS blue/green service deployments
workflow", "... canary deployments", "... linear deployments", "Lifecycle hooks
for Amazon ECS service deployments", "Stopping Amazon ECS service
deployments") and the API reference's ``lifecycleStage`` values::

    PENDING -> IN_PROGRESS
      [RECONCILE_SERVICE: only when more than one revision is ACTIVE (a deployment
       was stopped or superseded midway): all traffic back on production's, the rest drained]
      PRE_SCALE_UP -> SCALE_UP (green's tasks start: ``on_green_task_set``)
      -> POST_SCALE_UP -> TEST_TRAFFIC_SHIFT (test rule: 100 % green)
      -> POST_TEST_TRAFFIC_SHIFT
      -> for each step (BLUE_GREEN: 100; CANARY: canaryPercent, 100; LINEAR: stepPercent,
         2 x stepPercent, ..., 100): PRE_PRODUCTION_TRAFFIC_SHIFT hooks, PRODUCTION_TRAFFIC_SHIFT
         (production rule weighted), then the step's bake time (none after 100 %)
      -> POST_PRODUCTION_TRAFFIC_SHIFT -> BAKE_TIME (bakeTimeInMinutes, both running)
      -> CLEAN_UP (blue's tasks stop: ``on_cleanup``)
    -> SUCCESSFUL

The hooks of each stage run as :mod:`.ecs_hooks` says. A failed or timed-out
hook, ContinueServiceDeployment(ROLLBACK) and StopServiceDeployment(ROLLBACK)
roll back: ROLLBACK_REQUESTED -> ROLLBACK_IN_PROGRESS (production and test
rules all on blue, green's tasks stopped) -> ROLLBACK_SUCCESSFUL, or
ROLLBACK_FAILED when a rule cannot be restored or there is no previous
revision. StopServiceDeployment(ABORT): STOP_REQUESTED -> STOPPED, traffic
left as it is. Green's tasks failing to start are retried; with
``deploymentCircuitBreaker`` enabled they trip it after its threshold: a
rollback, or STOPPED without ``rollback``. ``PRE_PRODUCTION_TRAFFIC_SHIFT`` is
a hook stage but not a ``lifecycleStage`` value in the model, so the
deployment reports ``PRODUCTION_TRAFFIC_SHIFT`` while its hooks run.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Generator
from typing import Any

from controller.sandbox.aws import ecs_traffic as traffic
from controller.sandbox.aws.backends import MotoBackends
from controller.sandbox.aws.ecs_hooks import HookRunner, LambdaHook
from controller.sandbox.aws.ecs_models import EcsState, ServiceDeployment, ServiceRevision
from controller.sandbox.aws.ecs_services import add_event, show_end, show_revisions
from controller.sandbox.aws.effects import Call, EcsEffect, Sleep
from controller.sandbox.aws.exceptions import DeploymentFailed
from controller.sandbox.aws.timings import Timings

log = logging.getLogger(__name__)

Process = Generator[EcsEffect, Any, None]


class CircuitBreakerTripped(DeploymentFailed):
    """The deployment circuit breaker counted enough failed task launches."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EcsCallbacks:
    """``(task definition ARN, image, container port)`` when a revision's tasks start or stop; Lambda hooks."""

    on_green_task_set: Callable[[str, str, int], Any] | None = None
    on_cleanup: Callable[[str, str, int], Any] | None = None
    on_lambda_hook: LambdaHook | None = None


class EcsLifecycle:
    """The lifecycle stages of service deployments, run against moto's backends."""

    def __init__(self, *, timings: Timings, callbacks: EcsCallbacks, state: EcsState) -> None:
        self.timings = timings
        self.callbacks = callbacks
        self.state = state
        self.hooks = HookRunner(timings=timings, on_lambda_hook=callbacks.on_lambda_hook)

    def process(self, d: ServiceDeployment) -> Process:
        """The deployment from PENDING to its end, as a generator paused on what it waits for."""
        try:
            yield from self._deploy(d)
        except CircuitBreakerTripped as tripped:
            if d.strategy.circuit_breaker.get('rollback'):
                yield from self.roll_back(d, reason=tripped.message)
            else:
                self._finish(d, 'STOPPED', reason=tripped.message, serving=d.sources[0] if d.sources else d.target)
        except DeploymentFailed as failure:
            yield from self.roll_back(d, reason=failure.message)

    def _deploy(self, d: ServiceDeployment) -> Process:
        yield self._step(d)
        d.started_at = d.clock
        d.touch(status='IN_PROGRESS')
        moto = MotoBackends(account=d.account, region=d.region)
        if d.reconcile:
            yield from self._stage(d, 'RECONCILE_SERVICE', then=lambda: self._reconcile(d, moto=moto))
        traffic.assign_target_groups(d, moto=moto)
        yield from self._stage(d, 'PRE_SCALE_UP')
        yield from self._scale_up(d, moto=moto)
        yield from self._stage(d, 'POST_SCALE_UP')
        yield from self._stage(d, 'TEST_TRAFFIC_SHIFT', first=functools.partial(traffic.shift, d, moto=moto, test=100.0))
        yield from self._stage(d, 'POST_TEST_TRAFFIC_SHIFT')
        for percent, hold_minutes in d.strategy.steps:
            yield from self._stage(d, 'PRE_PRODUCTION_TRAFFIC_SHIFT')
            yield from self._stage(d, 'PRODUCTION_TRAFFIC_SHIFT',
                                   first=functools.partial(traffic.shift, d, moto=moto, production=percent))
            log.info('service deployment %s: %g%% of production on %s', d.arn, percent, d.target.task_definition)
            if hold_minutes:
                yield Sleep(until=d.clock + hold_minutes * self.timings.minute_seconds)
        yield from self._stage(d, 'POST_PRODUCTION_TRAFFIC_SHIFT')
        d.touch(stage='BAKE_TIME')
        d.hooks = []
        yield Sleep(until=d.clock + max(d.strategy.bake_minutes * self.timings.minute_seconds,
                                        self.timings.step_seconds))
        yield from self._clean_up(d, moto=moto)

    def _stage(self, d: ServiceDeployment, stage: str, *, first: Callable[[], None] | None = None,
               then: Callable[[], None] | None = None) -> Process:
        """One lifecycle stage: what it does first, its hooks, what it does then, at least one step."""
        d.touch(stage='PRODUCTION_TRAFFIC_SHIFT' if stage == 'PRE_PRODUCTION_TRAFFIC_SHIFT' else stage)
        d.hooks = []
        if first is not None:
            first()
        yield from self.hooks.run(d, stage)
        if then is not None:
            then()
        yield self._step(d)

    def _step(self, d: ServiceDeployment) -> Sleep:
        return Sleep(until=d.clock + self.timings.step_seconds)

    def _reconcile(self, d: ServiceDeployment, *, moto: MotoBackends) -> None:
        """Keep the revision production serves most; point all traffic at it; stop the others' tasks."""
        d.sources.sort(key=lambda revision: revision.production_weight, reverse=True)
        traffic.settle(d, moto=moto)
        for revision in d.sources[1:]:
            self._stop_tasks(revision)
        d.sources[1:] = []
        show_revisions(d, moto=moto)

    def _scale_up(self, d: ServiceDeployment, *, moto: MotoBackends) -> Process:
        """SCALE_UP: green's tasks start (``on_green_task_set``), retried while they fail, as ECS retries."""
        d.touch(stage='SCALE_UP')
        d.hooks = []
        green = d.target
        while self.callbacks.on_green_task_set is not None and d.desired_count:
            d.scale_up = Call(fn=self.callbacks.on_green_task_set,
                              args=(green.task_definition, green.image, green.container_port))
            yield d.scale_up
            error, d.scale_up = d.scale_up.error, None
            if error is None:
                break
            self._launch_failed(d, error, moto=moto)
            yield self._step(d)
        green.scale(d.desired_count)
        show_revisions(d, moto=moto)
        yield self._step(d)

    def _launch_failed(self, d: ServiceDeployment, error: BaseException, *, moto: MotoBackends) -> None:
        d.failure_count += 1
        service = moto.service(cluster=d.cluster, service=d.service)
        if service is not None:
            add_event(service, d.clock, f'(service {d.service}) failed to launch a task with (error {error}).')
        breaker = d.strategy.circuit_breaker
        if breaker.get('enable') and d.failure_count >= circuit_breaker_threshold(d):
            raise CircuitBreakerTripped('CIRCUIT_BREAKER', f'ECS deployment circuit breaker: tasks failed to start '
                                                           f'({d.failure_count} failures; last: {error}).')

    def _clean_up(self, d: ServiceDeployment, *, moto: MotoBackends) -> Process:
        """CLEAN_UP: blue's tasks stop; green is the production revision."""
        d.touch(stage='CLEAN_UP')
        for revision in d.sources:
            self._stop_tasks(revision)
        self.state.running[(d.account, d.region, d.key)] = [d.target]
        show_revisions(d, moto=moto)
        yield self._step(d)
        self._finish(d, 'SUCCESSFUL', reason=None, serving=d.target)

    # -- stopping --

    def roll_back(self, d: ServiceDeployment, *, reason: str) -> Process:
        """ROLLBACK_REQUESTED -> ROLLBACK_IN_PROGRESS -> ROLLBACK_SUCCESSFUL (or ROLLBACK_FAILED)."""
        blue = d.sources[0] if d.sources else None
        d.touch(status='ROLLBACK_REQUESTED', reason=reason)
        d.rollback = {'reason': reason, 'startedAt': d.clock, **({'serviceRevisionArn': blue.arn} if blue else {})}
        yield from self._await_scale_up(d)
        yield self._step(d)
        d.touch(status='ROLLBACK_IN_PROGRESS')
        if blue is None:
            self._stop_tasks(d.target)
            self._finish(d, 'ROLLBACK_FAILED', reason=f'{reason} There is no previous service revision to roll back '
                                                      f'to.', serving=d.target)
            return
        try:
            if d.target.production_weight or d.target.test_weight:
                traffic.restore(d, moto=MotoBackends(account=d.account, region=d.region))
        except DeploymentFailed as failure:
            self._finish(d, 'ROLLBACK_FAILED', reason=f'{reason} {failure.message}', serving=d.target)
            return
        self._stop_tasks(d.target)
        blue.scale(d.desired_count)
        self.state.running[(d.account, d.region, d.key)] = [blue]
        yield self._step(d)
        self._finish(d, 'ROLLBACK_SUCCESSFUL', reason=reason, serving=blue)

    def abort(self, d: ServiceDeployment, *, reason: str) -> Process:
        """StopServiceDeployment(ABORT): STOP_REQUESTED -> STOPPED; traffic and tasks stay as they are."""
        d.touch(status='STOP_REQUESTED', reason=reason)
        yield from self._await_scale_up(d)
        yield self._step(d)
        self._finish(d, 'STOPPED', reason=reason, serving=d.sources[0] if d.sources else d.target)

    def supersede(self, d: ServiceDeployment, *, by: str, now: float) -> None:
        """A newer deployment of the service replaced this one midway: STOPPED, its revisions left running."""
        if d.process is not None:
            d.process.close()
        d.process = d.effect = None
        if d.scale_up is not None:  # its tasks are starting: count them, the next deployment reconciles them
            d.target.scale(d.desired_count)
            d.scale_up = None
        d.clock = max(d.clock, now)
        d.stopped_at = d.finished_at = d.clock
        d.touch(status='STOPPED', reason=f'The service deployment was superseded by {by}.')
        self._leave_running(d)

    def _await_scale_up(self, d: ServiceDeployment) -> Process:
        """Green's tasks are starting: wait for them, so that they can be counted (and stopped)."""
        call, d.scale_up = d.scale_up, None
        if call is None:
            return
        yield call
        if call.error is None:
            d.target.scale(d.desired_count)

    def _leave_running(self, d: ServiceDeployment) -> None:
        """The revisions that still have tasks, production's first: the next deployment starts by reconciling them."""
        live = [r for r in (*d.sources, d.target) if r.requested]
        self.state.running[(d.account, d.region, d.key)] = sorted(live, key=lambda r: -r.production_weight)

    def _finish(self, d: ServiceDeployment, status: str, *, reason: str | None, serving: ServiceRevision) -> None:
        d.finished_at = d.clock
        if status == 'STOPPED':
            d.stopped_at = d.clock
        d.touch(status=status, reason=reason)
        if status in ('STOPPED', 'ROLLBACK_FAILED'):
            self._leave_running(d)
        message = {'SUCCESSFUL': f'(service {d.service}) has reached a steady state.',
                   'ROLLBACK_SUCCESSFUL': f'(service {d.service}) rolled back service deployment {_id(d)}: {reason}',
                   }.get(status, f'(service {d.service}) service deployment {_id(d)} ended {status}: {reason}')
        show_end(d, moto=MotoBackends(account=d.account, region=d.region), serving=serving, message=message)
        log.info('service deployment %s %s%s', d.arn, status, f': {reason}' if reason else '')

    def _stop_tasks(self, revision: ServiceRevision) -> None:
        """A revision's tasks stop (``on_cleanup``)."""
        if revision.requested and self.callbacks.on_cleanup is not None:
            self.state.outbox.notify(self.callbacks.on_cleanup, revision.task_definition, revision.image,
                              revision.container_port)
        revision.scale(0)


def circuit_breaker_threshold(d: ServiceDeployment) -> int:
    """AWS: half the desired count, at least 3 and at most 200 (or ``thresholdConfiguration``'s COUNT)."""
    threshold = d.strategy.circuit_breaker.get('thresholdConfiguration') or {}
    if threshold.get('type') == 'COUNT':
        return max(1, int(threshold.get('value') or 1))
    return min(200, max(3, math.ceil(d.desired_count * 0.5)))


def _id(d: ServiceDeployment) -> str:
    return d.arn.rsplit('/', 1)[-1]
