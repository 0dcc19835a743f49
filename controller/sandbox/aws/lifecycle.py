"""One ECS blue/green deployment from Created to its end: the simulator's state machine.

The simulator follows the ECS blue/green deployment as AWS documents it (CodeDeploy
user guide: "AppSpec 'hooks' section for an Amazon ECS deployment" for the
lifecycle events and what each one does; API reference ``DeploymentReadyOption``,
``ContinueDeployment``, ``StopDeployment``, ``PutLifecycleEventHookExecutionStatus``;
the predefined ``CodeDeployDefault.ECS*`` deployment configurations)::

    Created -> InProgress
      BeforeInstall (hook) -> Install (replacement task set on the green target
      group) -> AfterInstall (hook) -> AllowTestTraffic (test listener -> green)
      -> AfterAllowTestTraffic (hook)
      [deploymentReadyOption STOP_DEPLOYMENT: status Ready until
       ContinueDeployment(READY_WAIT); Stopped after waitTimeInMinutes]
      -> BeforeAllowTraffic (hook) -> AllowTraffic (production listener -> green,
      all at once, canary or linear; green becomes the primary task set)
      -> AfterAllowTraffic (hook)
      [terminateBlueInstancesOnDeploymentSuccess TERMINATE: wait
       terminationWaitTimeInMinutes or ContinueDeployment(TERMINATION_WAIT),
       then remove the original task set]
    -> Succeeded

A hook named in the AppSpec's ``Hooks`` stays ``InProgress`` until someone
reports ``PutLifecycleEventHookExecutionStatus`` for its execution id (AWS
would invoke the Lambda function with that id; moto cannot run it, so the id is
published by :meth:`AwsSandbox.pending_hooks`, the ``on_hook`` callback and
``GET /_sandbox/codedeploy/hooks``).  ``auto_hooks=True`` (``--auto-hooks``) is
a sandbox-only convenience that reports ``Succeeded`` for every hook after a
short delay.  A ``Failed`` hook fails the deployment; failure and
``StopDeployment`` roll back when asked to (``autoRollbackEnabled``, or the
group's ``autoRollbackConfiguration``): production and test listeners return
to the original target group, the replacement task set is removed, and a
``codeDeployRollback`` deployment records the rollback.

A deployment's process is a generator: it yields what it waits for (an effect,
see :mod:`.effects`) and :mod:`.driver` resumes it once that has happened.
"""
from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Generator
from typing import Any

from controller.sandbox.aws.backends import MotoBackends
from controller.sandbox.aws.effects import AwaitContinue, AwaitHook, Call, Effect, Sleep
from controller.sandbox.aws.events import HOOK_EVENTS, HookExecution, LifecycleEvent
from controller.sandbox.aws.exceptions import DeploymentFailed, ReadyTimeout
from controller.sandbox.aws.models import Deployment, SimulatorState, TaskSetRecord
from controller.sandbox.aws.task_sets import install_green, remove_task_set, resolve_blue, restore_blue
from controller.sandbox.aws.timings import Timings

log = logging.getLogger(__name__)

Process = Generator[Effect, Any, None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Callbacks:
    """The user's callbacks: ``(task definition ARN, image, container port)`` for task sets, the execution for hooks."""

    on_green_task_set: Callable[[str, str, int], Any] | None = None
    on_cleanup: Callable[[str, str, int], Any] | None = None
    on_hook: Callable[[HookExecution], Any] | None = None


class DeploymentLifecycle:
    """The lifecycle events of ECS deployments, run against moto's backends."""

    def __init__(self, *, timings: Timings, callbacks: Callbacks, state: SimulatorState) -> None:
        self.timings = timings
        self.callbacks = callbacks
        self.state = state

    def process(self, d: Deployment) -> Process:
        """The deployment from Created to its end, as a generator paused on what it waits for."""
        try:
            yield from self._deploy(d)
        except DeploymentFailed as failure:
            self.finish(d, status='Failed', code=failure.code, message=failure.message,
                        rollback=self.rolls_back(d, on='DEPLOYMENT_FAILURE'))
        except ReadyTimeout as timeout:
            self.finish(d, status='Stopped', code='TIMEOUT', message=str(timeout), rollback=True)

    def _deploy(self, d: Deployment) -> Process:
        yield Sleep(until=d.clock + self.timings.step_seconds)
        d.status, d.start_time = 'InProgress', d.clock
        self._set_target(d, 'InProgress')
        moto = MotoBackends(account=d.account, region=d.region)
        resolve_blue(d, moto=moto)
        for event in d.events:
            event.status, event.start_time = 'InProgress', d.clock
            d.target_updated = d.clock
            yield from self._run_event(d, event, moto=moto)
            event.status, event.end_time = 'Succeeded', d.clock
            d.target_updated = d.clock
            if event.name == 'AfterAllowTestTraffic':
                yield from self._ready_wait(d)
        yield from self._terminate_blue(d, moto=moto)
        self.finish(d, status='Succeeded')

    def _run_event(self, d: Deployment, event: LifecycleEvent, *, moto: MotoBackends) -> Process:
        """What one lifecycle event does, until it has succeeded."""
        if event.name in HOOK_EVENTS:
            yield from self._hook(d, event)
        elif event.name == 'Install':
            yield from self._install(d, moto=moto)
        elif event.name == 'AllowTestTraffic':
            self._route_test(d, moto=moto, to=d.green)
            yield Sleep(until=d.clock + self.timings.step_seconds)
        elif event.name == 'AllowTraffic':
            yield from self._allow_traffic(d, moto=moto)

    def _install(self, d: Deployment, *, moto: MotoBackends) -> Process:
        """Install: create the replacement task set behind the green target group, start it (``on_green_task_set``)."""
        install_green(d, moto=moto)
        assert d.green is not None
        if self.callbacks.on_green_task_set is not None:
            error = yield Call(fn=self.callbacks.on_green_task_set,
                               args=(d.green.task_definition_arn, d.green.image, d.green.container_port))
            if error is not None:
                raise DeploymentFailed('ECS_UPDATE_ERROR', f'The replacement task set did not start: {error}')
        yield Sleep(until=d.clock + self.timings.step_seconds)

    def _hook(self, d: Deployment, event: LifecycleEvent) -> Process:
        """A hookable event: run the AppSpec's function for it and wait for its reported status."""
        function = d.appspec.hooks.get(event.name) if d.appspec else None
        if function is None:
            yield Sleep(until=d.clock + self.timings.step_seconds)
            return
        execution = HookExecution(execution_id=str(uuid.uuid4()), deployment_id=d.deployment_id,
                                  lifecycle_event=event.name, function_name=function, started=d.clock)
        self.state.executions[execution.execution_id] = execution
        d.hooks.append(execution)
        if self.callbacks.on_hook is not None:
            self.state.outbox.notify(self.callbacks.on_hook, dataclasses.replace(execution))
        deadline = d.clock + self.timings.hook_timeout_minutes * self.timings.minute_seconds
        outcome = yield AwaitHook(execution=execution, deadline=deadline)
        if outcome == 'Failed':
            event.diagnostics = {'errorCode': 'ScriptFailed', 'scriptName': function,
                                 'message': f'The {event.name} hook {function} reported Failed.', 'logTail': ''}
            raise DeploymentFailed('HOOK_EXECUTION_FAILURE',
                                   f'The deployment failed because the {event.name} hook {function} reported Failed.')
        if outcome == 'Timeout':
            execution.status = 'Failed'
            event.diagnostics = {'errorCode': 'ScriptTimedOut', 'scriptName': function,
                                 'message': f'The {event.name} hook {function} did not report in time.',
                                 'logTail': ''}
            raise DeploymentFailed('HOOK_EXECUTION_FAILURE',
                                   f'The deployment failed because the {event.name} hook {function} did not report '
                                   f'a status within {self.timings.hook_timeout_minutes:g} minutes.')

    def _route_test(self, d: Deployment, *, moto: MotoBackends, to: TaskSetRecord | None) -> None:
        """Point the test listener (if any) at one colour's target group."""
        test = d.listener_arns('testTrafficRoute')
        if test and to is not None:
            moto.route(test, weights={to.target_group_arn: 100})

    def _allow_traffic(self, d: Deployment, *, moto: MotoBackends) -> Process:
        """AllowTraffic: shift the production listener to green (at once, canary or linear), make green primary."""
        assert d.blue is not None and d.green is not None
        prod = d.listener_arns('prodTrafficRoute')
        for weight, hold_minutes in d.routing.steps():
            moto.route(prod, weights={d.blue.target_group_arn: 100 - weight, d.green.target_group_arn: weight})
            d.green.traffic_weight, d.blue.traffic_weight = float(weight), float(100 - weight)
            d.target_updated = d.clock
            log.info('deployment %s: %d%% of production traffic on %s', d.deployment_id, weight,
                     d.green.target_group_name)
            if hold_minutes:
                yield Sleep(until=d.clock + hold_minutes * self.timings.minute_seconds)
        service = moto.service(cluster=d.cluster, service=d.service)
        if service is not None and d.green.arn:
            moto.ecs.update_service_primary_task_set(service.cluster_name, service.name, d.green.arn)
            d.green.status, d.blue.status = 'PRIMARY', 'ACTIVE'
        yield Sleep(until=d.clock + self.timings.step_seconds)

    def _ready_wait(self, d: Deployment) -> Process:
        """With deploymentReadyOption STOP_DEPLOYMENT: status Ready until ContinueDeployment or the wait time ends."""
        ready = d.blue_green.get('deploymentReadyOption') or {}
        if ready.get('actionOnTimeout') != 'STOP_DEPLOYMENT':
            return
        minutes = float(ready.get('waitTimeInMinutes') or 0)
        deadline = d.clock + minutes * self.timings.minute_seconds if minutes > 0 else None
        d.status = 'Ready'
        self._set_target(d, 'Ready')
        log.info('deployment %s is Ready: test traffic on %s, waiting for ContinueDeployment', d.deployment_id,
                 d.green.target_group_name if d.green else '?')
        outcome = yield AwaitContinue(wait_type='READY_WAIT', deadline=deadline)
        if outcome == 'timeout':
            raise ReadyTimeout(f'Traffic rerouting was not started within {minutes:g} minutes '
                               f'(deploymentReadyOption.waitTimeInMinutes).')
        d.status = 'InProgress'
        self._set_target(d, 'InProgress')

    def _terminate_blue(self, d: Deployment, *, moto: MotoBackends) -> Process:
        """After AfterAllowTraffic: wait terminationWaitTimeInMinutes (or TERMINATION_WAIT), remove blue."""
        terminate = d.blue_green.get('terminateBlueInstancesOnDeploymentSuccess') or {}
        if terminate.get('action', 'TERMINATE') != 'TERMINATE' or d.blue is None:
            return
        minutes = float(terminate.get('terminationWaitTimeInMinutes') or 0)
        d.termination_wait_started = True
        if minutes > 0:
            yield AwaitContinue(wait_type='TERMINATION_WAIT', deadline=d.clock + minutes * self.timings.minute_seconds)
        self._remove(d, d.blue, moto=moto)

    def _remove(self, d: Deployment, record: TaskSetRecord, *, moto: MotoBackends) -> None:
        """Delete one colour's task set from moto and tell ``on_cleanup``."""
        if remove_task_set(d, record, moto=moto) and self.callbacks.on_cleanup is not None:
            self.state.outbox.notify(self.callbacks.on_cleanup, record.task_definition_arn, record.image,
                              record.container_port)

    # -- the end --

    def finish(self, d: Deployment, *, status: str, code: str | None = None, message: str | None = None,
               rollback: bool = False) -> None:
        """End the deployment: statuses of events, target and hooks, rollback, completion time."""
        for event in d.events:
            if event.status == 'InProgress':
                event.status = 'Failed' if status == 'Failed' else 'Skipped'
                event.end_time = d.clock
            elif event.status == 'Pending' and status != 'Succeeded':
                event.status = 'Skipped'
        for execution in d.hooks:
            if execution.status == 'InProgress':
                execution.status, execution.completed = 'Skipped', d.clock
        if code is not None:
            d.error = {'code': code, 'message': message or code}
        if rollback:
            self._roll_back(d)
        d.status, d.complete_time = status, d.clock
        self._set_target(d, {'Succeeded': 'Succeeded', 'Failed': 'Failed'}.get(status, 'Skipped'))
        log.info('deployment %s %s%s', d.deployment_id, status, f': {message}' if message else '')

    @staticmethod
    def rolls_back(d: Deployment, *, on: str) -> bool:
        """Whether the deployment's ``autoRollbackConfiguration`` rolls back on that event."""
        config = d.auto_rollback or {}
        return bool(config.get('enabled')) and on in (config.get('events') or [])

    def _roll_back(self, d: Deployment) -> None:
        """Reroute production and test traffic to blue, remove green, record a codeDeployRollback deployment."""
        if d.blue is None or d.green is None or not d.green.arn:
            return  # nothing was changed yet (AWS: "a rollback is not possible at this point")
        moto = MotoBackends(account=d.account, region=d.region)
        restore_blue(d, moto=moto)
        self._remove(d, d.green, moto=moto)
        rollback = d.rollback(deployment_id=self.state.new_deployment_id())
        self.state.deployments[rollback.deployment_id] = rollback
        d.rollback_info = {'rollbackDeploymentId': rollback.deployment_id,
                           'rollbackMessage': f'Deployment {d.deployment_id} was rolled back by deployment '
                                              f'{rollback.deployment_id}: traffic is on {d.blue.target_group_name}.'}
        log.info('deployment %s rolled back (%s): traffic on %s', d.deployment_id, rollback.deployment_id,
                 d.blue.target_group_name)

    @staticmethod
    def _set_target(d: Deployment, status: str) -> None:
        d.target_status, d.target_updated = status, d.clock
