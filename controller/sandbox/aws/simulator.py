"""CodeDeploy's ECS blue/green deployments: one method per operation, and the clock that moves them on.

Applications and deployment groups stay in moto; the simulator reads them from
moto's backend and acts on moto's ECS and ELBv2 backends (:mod:`.lifecycle`),
so ``describe_listeners`` and ``describe_task_sets`` show what a real
deployment would have done.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controller.sandbox.aws.appspec import parse_appspec, revision_content
from controller.sandbox.aws.backends import MotoBackends
from controller.sandbox.aws.clock import ClockedSimulator
from controller.sandbox.aws.deployment_configs import (
    DEFAULT_ECS_CONFIG,
    ECS_DEPLOYMENT_CONFIGS,
    MOTO_DEFAULT_CONFIG,
)
from controller.sandbox.aws.deployment_groups import ecs_deployment_group
from controller.sandbox.aws.driver import Driver
from controller.sandbox.aws.events import HookExecution
from controller.sandbox.aws.exceptions import CodeDeployError
from controller.sandbox.aws.lifecycle import Callbacks, DeploymentLifecycle
from controller.sandbox.aws.models import (
    ACTIVE_STATUSES,
    DEPLOYMENT_STATUSES,
    DONE_STATUSES,
    Deployment,
    SimulatorState,
)
from controller.sandbox.aws.timings import Timings

log = logging.getLogger(__name__)


class DeploymentSimulator(ClockedSimulator):
    """CodeDeploy's ECS blue/green deployments, acting on moto's ECS and ELBv2 backends.

    Every public method is one CodeDeploy operation's semantics (arguments already
    parsed, results as state objects); :class:`CodeDeployResponses` is the wire layer.
    """

    def __init__(self, *, timings: Timings | None = None, auto_hooks: bool = False,
                 on_green_task_set: Callable[[str, str, int], Any] | None = None,
                 on_cleanup: Callable[[str, str, int], Any] | None = None,
                 on_hook: Callable[[HookExecution], Any] | None = None) -> None:
        self.state = SimulatorState()
        super().__init__(name='CodeDeploy simulator', timings=timings or Timings(), state=self.state)
        self.auto_hooks = auto_hooks
        self.deployments = self.state.deployments
        self.executions = self.state.executions
        self.lifecycle = DeploymentLifecycle(
            timings=self.timings, state=self.state,
            callbacks=Callbacks(on_green_task_set=on_green_task_set, on_cleanup=on_cleanup, on_hook=on_hook))
        self.driver = Driver(timings=self.timings, auto_hooks=auto_hooks, state=self.state, lifecycle=self.lifecycle)

    def advance(self, d: Deployment, *, now: float) -> None:
        self.driver.advance(d, now=now)

    def pending_hooks(self) -> list[HookExecution]:
        """Hook executions waiting for PutLifecycleEventHookExecutionStatus, oldest first."""
        with self.lock:
            return [dataclasses.replace(e) for e in self.executions.values() if e.status == 'InProgress']

    # -- operations --

    def create_deployment(self, *, account: str, region: str, application_name: str | None,
                          group_name: str | None, revision: Mapping[str, Any] | None,
                          config_name: str | None = None, description: str | None = None,
                          auto_rollback: Mapping[str, Any] | None = None) -> Deployment:
        """CreateDeployment for an ECS application."""
        if not application_name:
            raise CodeDeployError('ApplicationNameRequiredException', 'The minimum number of required application '
                                  'names was not specified.')
        if not group_name:
            raise CodeDeployError('DeploymentGroupNameRequiredException', 'The deployment group name was not '
                                  'specified.')
        if description is not None and len(description) > 512:
            raise CodeDeployError('DescriptionTooLongException', 'The description is too long.')
        group = ecs_deployment_group(MotoBackends(account=account, region=region),
                                     application_name=application_name, group_name=group_name)
        appspec = parse_appspec(revision_content(revision or {}))
        config_name = _ecs_config_name(config_name or str(group.deployment_config_name or ''))
        cluster, service = _ecs_service(group, group_name=group_name)
        with self.lock:
            self._refuse_second_active(account=account, region=region, application_name=application_name,
                                       group_name=group_name)
            now = time.time()
            d = Deployment(
                deployment_id=self.state.new_deployment_id(), account=account, region=region,
                application_name=application_name, group_name=group_name, config_name=config_name,
                routing=ECS_DEPLOYMENT_CONFIGS[config_name], revision=json.loads(json.dumps(revision)),
                appspec=appspec, description=description, creator='user',
                auto_rollback=dict(auto_rollback if auto_rollback is not None
                                   else (group.auto_rollback_configuration or {})),
                deployment_style=dict(group.deployment_style or {}),
                blue_green=json.loads(json.dumps(group.blue_green_deployment_configuration or {})),
                load_balancer_info=json.loads(json.dumps(group.load_balancer_info or {})),
                cluster=cluster, service=service, create_time=now, clock=now, target_updated=now,
                previous_revision=self._last_successful_revision(account=account, region=region,
                                                                 application_name=application_name,
                                                                 group_name=group_name),
            )
            self.deployments[d.deployment_id] = d
            d.process = self.lifecycle.process(d)
            d.effect = next(d.process)
            log.info('deployment %s created for %s/%s (%s)', d.deployment_id, application_name, group_name,
                     appspec.task_definition)
            return d

    def get_deployment(self, *, account: str, region: str, deployment_id: str | None) -> Deployment:
        """GetDeployment."""
        if not deployment_id:
            raise CodeDeployError('DeploymentIdRequiredException', 'At least one deployment ID must be specified.')
        with self.lock:
            d = self.deployments.get(deployment_id)
            if d is None or (d.account, d.region) != (account, region):
                raise CodeDeployError('DeploymentDoesNotExistException',
                                      f'The deployment {deployment_id} does not exist with the user or AWS account.')
            return d

    def list_deployments(self, *, account: str, region: str, application_name: str | None = None,
                         group_name: str | None = None, statuses: Iterable[str] = (),
                         created_after: float | None = None, created_before: float | None = None) -> list[str]:
        """ListDeployments (the caller validates the names against moto), newest first."""
        statuses = set(statuses)
        if unknown := statuses - DEPLOYMENT_STATUSES:
            raise CodeDeployError('InvalidDeploymentStatusException',
                                  f'The deployment status {sorted(unknown)[0]} is not valid.')
        with self.lock:
            found = [d for d in self.deployments.values()
                     if (d.account, d.region) == (account, region)
                     and (not application_name or d.application_name == application_name)
                     and (not group_name or d.group_name == group_name)
                     and (not statuses or d.status in statuses)
                     and (created_after is None or d.create_time >= created_after)
                     and (created_before is None or d.create_time <= created_before)]
            return [d.deployment_id for d in sorted(found, key=lambda d: d.create_time, reverse=True)]

    def continue_deployment(self, *, account: str, region: str, deployment_id: str | None,
                            wait_type: str | None = None) -> None:
        """ContinueDeployment: end the READY_WAIT (reroute production traffic) or the TERMINATION_WAIT."""
        wait_type = wait_type or 'READY_WAIT'
        if wait_type not in ('READY_WAIT', 'TERMINATION_WAIT'):
            raise CodeDeployError('InvalidDeploymentWaitTypeException',
                                  f'The wait type {wait_type} is invalid; use READY_WAIT or TERMINATION_WAIT.')
        with self.lock:
            d = self._active(account=account, region=region, deployment_id=deployment_id)
            if d.waiting_for != wait_type:
                what = ('a status of Ready' if wait_type == 'READY_WAIT'
                        else 'started waiting to terminate the original task set')
                raise CodeDeployError('DeploymentIsNotInReadyStateException',
                                      f'The deployment {d.deployment_id} does not have {what} and cannot continue '
                                      f'yet (status {d.status}).')
            d.continued[wait_type] = time.time()
            log.info('deployment %s continued (%s)', d.deployment_id, wait_type)
            self.driver.advance(d, now=time.time())

    def stop_deployment(self, *, account: str, region: str, deployment_id: str | None,
                        auto_rollback_enabled: bool | None = None) -> tuple[str, str]:
        """StopDeployment: ``(status, statusMessage)``; rolls back when asked or the group says so."""
        with self.lock:
            d = self._active(account=account, region=region, deployment_id=deployment_id)
            rollback = (auto_rollback_enabled if auto_rollback_enabled is not None
                        else self.lifecycle.rolls_back(d, on='DEPLOYMENT_STOP_ON_REQUEST'))
            if d.process is not None:
                d.process.close()
            d.process = d.effect = None
            d.clock = max(d.clock, time.time())
            self.lifecycle.finish(d, status='Stopped', code='MANUAL_STOP',
                                  message='The deployment was stopped by a StopDeployment request.',
                                  rollback=rollback)
            return 'Succeeded', f'Deployment {d.deployment_id} stopped' + (' and rolled back.' if rollback else '.')

    def deployment_target(self, *, account: str, region: str, deployment_id: str | None,
                          target_id: str | None) -> Deployment:
        """GetDeploymentTarget's checks: the deployment, once started, and its one ECS target."""
        d = self._started(account=account, region=region, deployment_id=deployment_id)
        if not target_id:
            raise CodeDeployError('DeploymentTargetIdRequiredException', 'A deployment target ID was not provided.')
        if target_id != d.target_id:
            raise CodeDeployError('DeploymentTargetDoesNotExistException',
                                  f'The deployment target {target_id} does not exist in deployment {d.deployment_id}.')
        return d

    def list_targets(self, *, account: str, region: str, deployment_id: str | None,
                     target_statuses: Iterable[str] = ()) -> list[str]:
        """ListDeploymentTargets: the deployment's one ECS target (``cluster:service``)."""
        d = self._started(account=account, region=region, deployment_id=deployment_id)
        statuses = set(target_statuses)
        return [d.target_id] if not statuses or d.target_status in statuses else []

    def put_hook_status(self, *, account: str, region: str, deployment_id: str | None,
                        execution_id: str | None, status: str | None) -> str:
        """PutLifecycleEventHookExecutionStatus: a hook function reports Succeeded or Failed."""
        with self.lock:
            d = self.get_deployment(account=account, region=region, deployment_id=deployment_id)
            if status not in ('Succeeded', 'Failed'):
                raise CodeDeployError('InvalidLifecycleEventHookExecutionStatusException',
                                      f'The status {status} is not valid; a hook reports Succeeded or Failed.')
            execution = self.executions.get(execution_id or '')
            if execution is None or execution.deployment_id != d.deployment_id:
                raise CodeDeployError('InvalidLifecycleEventHookExecutionIdException',
                                      f'The lifecycle event hook execution id {execution_id} is not valid for '
                                      f'deployment {d.deployment_id}.')
            if execution.status != 'InProgress':
                raise CodeDeployError('LifecycleEventAlreadyCompletedException',
                                      f'The {execution.lifecycle_event} lifecycle event has already completed '
                                      f'({execution.status}).')
            execution.status = status
            execution.completed = time.time()
            log.info('deployment %s: hook %s for %s reported %s', d.deployment_id, execution.function_name,
                     execution.lifecycle_event, status)
            self.driver.advance(d, now=time.time())
            return execution.execution_id

    def group_history(self, *, account: str, region: str, application_name: str,
                      group_name: str) -> tuple[Deployment | None, Deployment | None]:
        """(last attempted, last successful) deployment of a group, for GetDeploymentGroup."""
        with self.lock:
            ours = sorted((d for d in self.deployments.values()
                           if (d.account, d.region, d.application_name, d.group_name)
                           == (account, region, application_name, group_name) and d.creator == 'user'),
                          key=lambda d: d.create_time)
            succeeded = [d for d in ours if d.status == 'Succeeded']
            return (ours[-1] if ours else None), (succeeded[-1] if succeeded else None)

    # -- checks shared by the operations --

    def _refuse_second_active(self, *, account: str, region: str, application_name: str, group_name: str) -> None:
        for other in self.deployments.values():
            if (other.account, other.region, other.application_name, other.group_name) == \
                    (account, region, application_name, group_name) and other.status in ACTIVE_STATUSES:
                raise CodeDeployError('DeploymentLimitExceededException',
                                      f"The Deployment Group '{group_name}' already has an active Deployment "
                                      f"'{other.deployment_id}'")

    def _active(self, *, account: str, region: str, deployment_id: str | None) -> Deployment:
        d = self.get_deployment(account=account, region=region, deployment_id=deployment_id)
        if d.status in DONE_STATUSES:
            raise CodeDeployError('DeploymentAlreadyCompletedException',
                                  f'The deployment {d.deployment_id} is already completed.')
        return d

    def _started(self, *, account: str, region: str, deployment_id: str | None) -> Deployment:
        d = self.get_deployment(account=account, region=region, deployment_id=deployment_id)
        if d.status == 'Created':
            raise CodeDeployError('DeploymentNotStartedException', f'The deployment {d.deployment_id} has not started.')
        return d

    def _last_successful_revision(self, *, account: str, region: str, application_name: str,
                                  group_name: str) -> dict[str, Any] | None:
        _, succeeded = self.group_history(account=account, region=region, application_name=application_name,
                                          group_name=group_name)
        return succeeded.revision if succeeded else None


def _ecs_config_name(name: str) -> str:
    """The deployment configuration a deployment uses: ``name``, or the ECS default for none or moto's default."""
    name = name or DEFAULT_ECS_CONFIG
    if name == MOTO_DEFAULT_CONFIG:
        name = DEFAULT_ECS_CONFIG
    if name not in ECS_DEPLOYMENT_CONFIGS:
        raise CodeDeployError('DeploymentConfigDoesNotExistException',
                              f'The deployment configuration {name} does not exist with the user or AWS '
                              f'account (the sandbox knows the predefined CodeDeployDefault.ECS* ones).')
    return name


def _ecs_service(group: Any, *, group_name: str) -> tuple[str, str]:
    """(cluster, service) of the deployment group's one ECS service."""
    services = group.ecs_services or []
    if len(services) != 1 or not services[0].get('clusterName') or not services[0].get('serviceName'):
        raise CodeDeployError('InvalidECSServiceException',
                              f'The deployment group {group_name} does not name one ECS service.')
    return services[0]['clusterName'], services[0]['serviceName']
