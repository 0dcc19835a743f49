"""ECS service deployments: one method per operation, the driver that resumes them, and the clock that moves them.

Services stay in moto; a CreateService or UpdateService that starts a
deployment of a service with a ``BLUE_GREEN``, ``CANARY`` or ``LINEAR``
strategy calls :meth:`EcsDeploymentSimulator.start_deployment` once moto has
stored it (:mod:`.ecs_responses`), and the deployment then acts on moto's
ECS and ELBv2 backends (:mod:`.ecs_lifecycle`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from controller.sandbox.aws.backends import MotoBackends
from controller.sandbox.aws.clock import ClockedSimulator
from controller.sandbox.aws.ecs_config import Route, Strategy
from controller.sandbox.aws.ecs_hooks import timed_out
from controller.sandbox.aws.ecs_lifecycle import EcsCallbacks, EcsLifecycle
from controller.sandbox.aws.ecs_models import (
    DONE_STATUSES,
    SERVICE_DEPLOYMENT_STATUSES,
    EcsState,
    ServiceDeployment,
    ServiceRevision,
)
from controller.sandbox.aws.ecs_services import new_revision, show_start
from controller.sandbox.aws.effects import AwaitAction, Call, EcsEffect, Sleep
from controller.sandbox.aws.exceptions import EcsError
from controller.sandbox.aws.timings import Timings

log = logging.getLogger(__name__)

#: What an effect resolves to: (when it happened, the value sent into the process), or None while it has not.
Outcome = tuple[float, Any] | None


def not_found(arn: str | None) -> EcsError:
    return EcsError('ServiceDeploymentNotFoundException', f'The service deployment {arn} does not exist.')


class EcsDeploymentSimulator(ClockedSimulator):
    """ECS service deployments, acting on moto's ECS and ELBv2 backends; :class:`EcsResponses` is the wire layer."""

    def __init__(self, *, timings: Timings | None = None, callbacks: EcsCallbacks | None = None) -> None:
        self.state = EcsState()
        super().__init__(name='ECS deployment simulator', timings=timings or Timings(), state=self.state)
        self.lifecycle = EcsLifecycle(timings=self.timings, callbacks=callbacks or EcsCallbacks(), state=self.state)

    # -- the driver --

    def advance(self, d: ServiceDeployment, *, now: float) -> None:
        """Resume the deployment's process as long as what it waits for has happened by ``now``."""
        self._expire_pauses(d, now=now)
        while d.process is not None and d.effect is not None:
            outcome = self._outcome(d.effect)
            if outcome is None or outcome[0] > now:
                return
            d.clock = max(d.clock, outcome[0])
            self._resume(d, outcome[1])

    def _expire_pauses(self, d: ServiceDeployment, *, now: float) -> None:
        """PAUSE hooks past ``expiresAt``: TIMED_OUT, and their timeout action (ROLLBACK at once)."""
        for run in list(d.hooks):
            if run.awaiting and now >= run.expires_at:
                run.status, run.completed_at = 'TIMED_OUT', run.expires_at
                if run.timeout_action == 'ROLLBACK' and d.status == 'IN_PROGRESS':
                    self._interrupt(d, rollback=True, reason=timed_out(run), now=run.expires_at)

    def _outcome(self, effect: EcsEffect) -> Outcome:
        if isinstance(effect, Sleep):
            return effect.until, None
        if isinstance(effect, AwaitAction):
            run = effect.run
            return None if run.awaiting else (run.completed_at or 0.0, run.status)
        return self._call_outcome(effect)

    def _call_outcome(self, call: Call) -> Outcome:
        """The call itself once the background thread has run it; queued for it the first time."""
        return (call.finished, call) if self.state.outbox.ready(call) else None

    def _resume(self, d: ServiceDeployment, value: Any) -> None:
        assert d.process is not None
        try:
            d.effect = d.process.send(value)
        except StopIteration:
            d.process = d.effect = None
        except Exception as exc:  # noqa: BLE001 -- a simulator bug ends the deployment, not the server
            log.exception('service deployment %s: simulator error', d.arn)
            d.process = d.effect = None
            d.finished_at = d.stopped_at = d.clock
            d.touch(status='STOPPED', reason=f'Simulator error: {exc!r}')

    def _interrupt(self, d: ServiceDeployment, *, rollback: bool, reason: str, now: float) -> None:
        """End what the deployment was doing; roll it back or stop it from ``now`` on."""
        if d.process is not None:
            d.process.close()
        d.clock = max(d.clock, now)
        d.process = (self.lifecycle.roll_back(d, reason=reason) if rollback
                     else self.lifecycle.abort(d, reason=reason))
        d.effect = None
        self._resume(d, None)
        log.info('service deployment %s: %s (%s)', d.arn, 'rollback' if rollback else 'stop', reason)

    # -- operations --

    def start_deployment(self, *, account: str, region: str, service: Any, strategy: Strategy, routes: list[Route],
                         config: dict[str, Any], previous_task_definition: str | None) -> ServiceDeployment:
        """A new service deployment of moto's (just created or updated) service: PENDING, then on its way."""
        moto = MotoBackends(account=account, region=region)
        with self.lock:
            now = time.time()
            key = f'{service.cluster_name}:{service.name}'
            arn = f'arn:aws:ecs:{region}:{account}:service-deployment/{service.cluster_name}/{service.name}/' \
                  f'{self.state.new_id()}'
            for old in self.state.of_service(account=account, region=region, key=key):
                if old.active:
                    self.lifecycle.supersede(old, by=arn, now=now)
            sources = self._sources(account=account, region=region, key=key, service=service, moto=moto,
                                    previous_task_definition=previous_task_definition, now=now)
            target = new_revision(service, moto=moto, task_definition=service.task_definition, created_at=now,
                                  state=self.state)
            d = ServiceDeployment(
                arn=arn, account=account, region=region, cluster=service.cluster_name, service=service.name,
                cluster_arn=service.cluster_arn, service_arn=service.arn, config=config, strategy=strategy,
                routes=routes, sources=sources, target=target, desired_count=int(service.desired_count or 0),
                created_at=now, reconcile=len(sources) > 1, updated_at=now, clock=now)
            self.state.deployments[arn] = d
            show_start(d, moto=moto)
            d.process = self.lifecycle.process(d)
            d.effect = next(d.process)
            log.info('service deployment %s started (%s, %s)', arn, strategy.name, target.task_definition)
            return d

    def _sources(self, *, account: str, region: str, key: str, service: Any, moto: MotoBackends,
                 previous_task_definition: str | None, now: float) -> list[ServiceRevision]:
        """The revisions with tasks (production's first); for a service that ran before any native
        deployment, one for the task definition it ran."""
        running = list(self.state.running.get((account, region, key)) or [])
        if running or not previous_task_definition:
            return running
        revision = new_revision(service, moto=moto, task_definition=previous_task_definition, created_at=now,
                                state=self.state)
        revision.scale(int(service.desired_count or 0))
        revision.production_weight = revision.test_weight = 100.0
        return [revision]

    def describe(self, *, account: str, region: str,
                 arns: Iterable[str]) -> tuple[list[ServiceDeployment], list[dict[str, str]]]:
        """DescribeServiceDeployments: (found, failures)."""
        found, failures = [], []
        for arn in arns:
            d = self.state.deployments.get(arn)
            if d is not None and (d.account, d.region) == (account, region):
                found.append(d)
            else:
                failures.append({'arn': arn, 'reason': 'MISSING'})
        return found, failures

    def list_deployments(self, *, account: str, region: str, key: str, statuses: Iterable[str] = (),
             created_after: float | None = None, created_before: float | None = None) -> list[ServiceDeployment]:
        """ListServiceDeployments of one service, newest first."""
        wanted = set(statuses)
        if unknown := wanted - SERVICE_DEPLOYMENT_STATUSES:
            raise EcsError('InvalidParameterException', f'The status {sorted(unknown)[0]} is not valid.')
        found = [d for d in self.state.of_service(account=account, region=region, key=key)
                 if (not wanted or d.status in wanted)
                 and (created_after is None or d.created_at >= created_after)
                 and (created_before is None or d.created_at <= created_before)]
        return found[::-1]

    def stop_deployment(self, *, account: str, region: str, arn: str, stop_type: str | None) -> str:
        """StopServiceDeployment: ROLLBACK (the default) or ABORT."""
        stop_type = stop_type or 'ROLLBACK'
        if stop_type not in ('ROLLBACK', 'ABORT'):
            raise EcsError('InvalidParameterException', f'The stop type {stop_type} is not valid; use ROLLBACK.')
        with self.lock:
            d = self._deployment(account=account, region=region, arn=arn)
            if d.status in DONE_STATUSES:
                raise EcsError('ConflictException', f'The service deployment {arn} has already ended ({d.status}).',
                               extra={'resourceIds': [arn]})
            if d.status in ('PENDING', 'IN_PROGRESS'):
                reason = ('Service deployment rolled back because of a StopServiceDeployment request.'
                          if stop_type == 'ROLLBACK' else 'Service deployment stopped by a StopServiceDeployment '
                                                          'request (ABORT).')
                self._interrupt(d, rollback=stop_type == 'ROLLBACK', reason=reason, now=time.time())
            return arn

    def continue_deployment(self, *, account: str, region: str, arn: str, hook_id: str,
                            action: str | None) -> str:
        """ContinueServiceDeployment: settle a PAUSE hook with CONTINUE (the default) or ROLLBACK."""
        action = action or 'CONTINUE'
        if action not in ('CONTINUE', 'ROLLBACK'):
            raise EcsError('InvalidParameterException', f'The action {action} is not valid; use CONTINUE or '
                                                        f'ROLLBACK.')
        with self.lock:
            d = self._deployment(account=account, region=region, arn=arn)
            self._expire_pauses(d, now=time.time())  # too late is too late, whether the clock ticked or not
            run = d.hook(hook_id) if d.status == 'IN_PROGRESS' else None
            if run is None or run.target_type != 'PAUSE' or not run.awaiting:
                what = (f'is {run.status}, not AWAITING_ACTION' if run is not None and run.target_type == 'PAUSE'
                        else f'is not a PAUSE hook the deployment waits at (deployment {d.status}, stage '
                             f'{d.lifecycle_stage})')
                raise EcsError('InvalidParameterException', f'The lifecycle hook {hook_id} {what}.')
            now = time.time()
            run.completed_at = max(d.clock, now)
            if action == 'CONTINUE':
                run.status = 'SUCCEEDED'
                self.advance(d, now=now)
            else:
                run.status = 'FAILED'
                self._interrupt(d, rollback=True, now=now, reason=f'Service deployment rolled back by '
                                                                  f'ContinueServiceDeployment at the {run.stage} '
                                                                  f'lifecycle hook {hook_id}.')
            return arn

    def revisions(self, *, account: str, region: str,
                  arns: Iterable[str]) -> tuple[list[ServiceRevision], list[dict[str, str]]]:
        """DescribeServiceRevisions of the revisions the simulator made: (found, failures)."""
        found, failures = [], []
        for arn in arns:
            revision = self.state.revisions.get(arn)
            if revision is not None and arn.split(':')[3:5] == [region, account]:
                found.append(revision)
            else:
                failures.append({'arn': arn, 'reason': 'MISSING'})
        return found, failures

    def forget_service(self, *, account: str, region: str, key: str) -> None:
        """DeleteService: ECS deletes the service's deployments with it."""
        with self.lock:
            self.state.forget_service(account=account, region=region, key=key)

    def _deployment(self, *, account: str, region: str, arn: str | None) -> ServiceDeployment:
        d = self.state.deployments.get(arn or '')
        if d is None or (d.account, d.region) != (account, region):
            raise not_found(arn)
        return d
