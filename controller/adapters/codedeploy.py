"""CodeDeploy ECS blue/green deployments through boto3.

One run starts at most one deployment: its description carries the run id
(`panda-deploy run dep_…`), so `find_deployment` recognises the deployment a
run started even when the id never reached `status` (a lost response, an
operator restart). The deployment group must wait for us before shifting
production traffic (`deploymentReadyOption.actionOnTimeout: STOP_DEPLOYMENT`):
that wait is where our own health checks gate the switch, so a group that
shifts traffic on its own is refused rather than silently skipping the checks.

The deployment group is also where the blue/green layout lives (the two
target groups, the production and test listeners); reading it is
`controller.adapters.traffic_layout`'s job, shared with the ECS and ELBv2
adapters. When the spec names the layout (`spec.blueGreen.loadBalancer`) and
a service role (`spec.blueGreen.codeDeploy.serviceRoleArn`), the operator
creates a missing application and deployment group.

Throttling, 5xx and dropped connections become `Transient` (the engine
retries the stage); everything else ends the run with BlueGreenFailed.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

from controller.adapters import DeploymentState, LifecycleEvent
from controller.adapters.aws import AwsAdapter, error_code
from controller.adapters.traffic_layout import GROUP_MISSING_CODES, TrafficLayout, layout_from_group, layout_from_spec
from controller.errors import Reason, StageFailed, Transient
from controller.models import PandaDeploySpec

DESCRIPTION_PREFIX = 'panda-deploy run '
_RUN_IN_DESCRIPTION = re.compile(r'^panda-deploy run (\S+)')

# Deployments that may still be waiting for us; "Baking" is CodeDeploy's post-traffic bake time.
OPEN_STATUSES = ('Created', 'Queued', 'InProgress', 'Baking', 'Ready')
# How far back `find_deployment` looks for finished deployments, beyond the run's total timeout.
RECENT_MARGIN_SECONDS = 3600
BATCH_GET_LIMIT = 25  # BatchGetDeployments takes at most 25 ids
# AWS bounds deploymentReadyOption.waitTimeInMinutes to 2 days.
MAX_READY_WAIT_MINUTES = 2880
# The original (blue) task set is terminated as soon as traffic has moved: Verify waits for
# `Succeeded`, which CodeDeploy reports only after this wait. Raise it together with Verify
# accepting `DeploymentState.traffic_shifted` to keep a rollback window.
TERMINATION_WAIT_MINUTES = 0


# -- AppSpec ----------------------------------------------------------------------------


def appspec(spec: PandaDeploySpec, *, task_definition_arn: str) -> dict[str, Any]:
    """The AppSpec (version 0.0) of an ECS deployment of `task_definition_arn`."""
    ecs = spec.ecs
    properties: dict[str, Any] = {
        'TaskDefinition': task_definition_arn,
        'LoadBalancerInfo': {'ContainerName': ecs.container_name, 'ContainerPort': ecs.container_port},
    }
    networking = ecs.networking
    if networking is not None and networking.subnets:
        vpc: dict[str, Any] = {'Subnets': list(networking.subnets),
                               'AssignPublicIp': 'ENABLED' if networking.assign_public_ip else 'DISABLED'}
        if networking.security_groups:
            vpc['SecurityGroups'] = list(networking.security_groups)
        properties['NetworkConfiguration'] = {'AwsvpcConfiguration': vpc}
    content: dict[str, Any] = {
        'version': '0.0',
        'Resources': [{'TargetService': {'Type': 'AWS::ECS::Service', 'Properties': properties}}],
    }
    hooks = spec.blue_green.hooks
    if hooks is not None:
        listed = [{'BeforeAllowTraffic': hooks.before_allow_traffic} if hooks.before_allow_traffic else None,
                  {'AfterAllowTraffic': hooks.after_allow_traffic} if hooks.after_allow_traffic else None]
        if any(listed):
            content['Hooks'] = [hook for hook in listed if hook]
    return content


def revision(content: dict[str, Any]) -> dict[str, Any]:
    """The CreateDeployment `revision` carrying `content` as AppSpec JSON with its SHA-256."""
    text = json.dumps(content, separators=(',', ':'))
    return {'revisionType': 'AppSpecContent',
            'appSpecContent': {'content': text, 'sha256': hashlib.sha256(text.encode('utf-8')).hexdigest()}}


def description(*, run_id: str, task_definition_arn: str) -> str:
    """The deployment's description: it names the run, which is how `find_deployment` finds it."""
    return f'{DESCRIPTION_PREFIX}{run_id} (task definition {task_definition_arn.rsplit("/", 1)[-1]})'


def run_of(description_text: str | None) -> str | None:
    """The run id a deployment's description names, or None for deployments not started by panda-deploy."""
    found = _RUN_IN_DESCRIPTION.match(description_text or '')
    return found.group(1) if found else None


# -- the deployment group -------------------------------------------------------------


def deployment_group_request(spec: PandaDeploySpec, *, layout: TrafficLayout,
                             service_role_arn: str) -> dict[str, Any]:
    """CreateDeploymentGroup's arguments: ECS blue/green with traffic control that waits for us
    (STOP_DEPLOYMENT) on `layout`, rolling back when a deployment fails or is stopped."""
    code_deploy = spec.blue_green.code_deploy
    pair: dict[str, Any] = {
        'targetGroups': [{'name': layout.blue_target_group}, {'name': layout.green_target_group}],
        'prodTrafficRoute': {'listenerArns': list(layout.production_listener_arns)},
    }
    if layout.test_listener_arns:
        pair['testTrafficRoute'] = {'listenerArns': list(layout.test_listener_arns)}
    ready_wait = min(MAX_READY_WAIT_MINUTES, max(1, math.ceil(spec.timeouts.total / 60)))
    return {
        'applicationName': code_deploy.application,
        'deploymentGroupName': code_deploy.deployment_group,
        'deploymentConfigName': code_deploy.deployment_config,
        'serviceRoleArn': service_role_arn,
        'deploymentStyle': {'deploymentType': 'BLUE_GREEN', 'deploymentOption': 'WITH_TRAFFIC_CONTROL'},
        'blueGreenDeploymentConfiguration': {
            'deploymentReadyOption': {'actionOnTimeout': 'STOP_DEPLOYMENT', 'waitTimeInMinutes': ready_wait},
            'terminateBlueInstancesOnDeploymentSuccess': {
                'action': 'TERMINATE', 'terminationWaitTimeInMinutes': TERMINATION_WAIT_MINUTES},
        },
        'loadBalancerInfo': {'targetGroupPairInfoList': [pair]},
        'ecsServices': [{'serviceName': spec.ecs.service, 'clusterName': spec.ecs.cluster}],
        'autoRollbackConfiguration': {'enabled': True,
                                      'events': ['DEPLOYMENT_FAILURE', 'DEPLOYMENT_STOP_ON_REQUEST']},
    }


# -- the adapter ------------------------------------------------------------------------


class CodeDeployDeployments(AwsAdapter):
    """The `CodeDeploy` adapter: one application and deployment group per spec, one deployment per run."""

    failure_reason = Reason.BLUE_GREEN_FAILED

    # -- CodeDeploy protocol -----------------------------------------------------------

    def create_deployment(self, *, spec: PandaDeploySpec, task_definition_arn: str, run_id: str) -> str:
        """Start the run's deployment (creating the application and group when the spec allows); its id."""
        code_deploy = spec.blue_green.code_deploy
        self._ensure_group(spec)
        request = {
            'applicationName': code_deploy.application,
            'deploymentGroupName': code_deploy.deployment_group,
            'deploymentConfigName': code_deploy.deployment_config,
            'description': description(run_id=run_id, task_definition_arn=task_definition_arn),
            'revision': revision(appspec(spec, task_definition_arn=task_definition_arn)),
        }
        try:
            return str(self._client('codedeploy').create_deployment(**request)['deploymentId'])
        except Exception as exc:
            if error_code(exc) == 'DeploymentLimitExceededException':
                open_ids = ', '.join(self._open_deployments(spec)) or 'unknown'
                raise Transient(f'CodeDeploy deployment group {code_deploy.application}/'
                                f'{code_deploy.deployment_group} already has an active deployment ({open_ids}); '
                                f'waiting for it to finish') from exc
            raise self._error(exc, f'CodeDeploy CreateDeployment in {code_deploy.application}/'
                                   f'{code_deploy.deployment_group}') from exc

    def find_deployment(self, *, spec: PandaDeploySpec, run_id: str) -> str | None:
        """The deployment `run_id` started (open, or created within the run's total timeout), else None."""
        if not run_id:
            return None
        code_deploy = spec.blue_green.code_deploy
        since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
            seconds=spec.timeouts.total + RECENT_MARGIN_SECONDS)
        try:
            ids = list(dict.fromkeys([*self._list(spec, includeOnlyStatuses=list(OPEN_STATUSES)),
                                      *self._list(spec, createTimeRange={'start': since})]))
            matches = [info for info in self._batch_get(ids) if run_of(info.get('description')) == run_id]
        except Exception as exc:
            if error_code(exc) in GROUP_MISSING_CODES:
                return None
            raise self._error(exc, f'CodeDeploy ListDeployments of {code_deploy.application}/'
                                   f'{code_deploy.deployment_group}') from exc
        if not matches:
            return None
        # One per run by construction; should two exist, the open or newest one is the run's.
        matches.sort(key=lambda info: (info.get('status') in OPEN_STATUSES, _timestamp(info.get('createTime'))))
        return str(matches[-1]['deploymentId'])

    def get_deployment(self, deployment_id: str) -> DeploymentState:
        """Status, readiness for traffic, the target's lifecycle events and the error, as one poll sees them."""
        try:
            info = self._client('codedeploy').get_deployment(deploymentId=deployment_id)['deploymentInfo']
        except Exception as exc:
            raise self._error(exc, f'CodeDeploy GetDeployment {deployment_id}') from exc
        raw = str(info.get('status') or 'Created')
        status = 'InProgress' if raw == 'Baking' else raw
        error = info.get('errorInformation') or {}
        error_text = ': '.join(str(part) for part in (error.get('code'), error.get('message')) if part) or None
        return DeploymentState(
            id=deployment_id, status=status,
            ready_for_traffic=raw == 'Ready',
            events=self._lifecycle_events(deployment_id),
            error=error_text,
            traffic_shifted=bool(info.get('instanceTerminationWaitTimeStarted')) or raw in ('Baking', 'Succeeded'),
        )

    def continue_deployment(self, deployment_id: str) -> None:
        """Let CodeDeploy shift production traffic to green (ContinueDeployment READY_WAIT).

        Already continued (a resumed run repeating the call): a no-op while the
        deployment is in progress or has succeeded.
        """
        try:
            self._client('codedeploy').continue_deployment(deploymentId=deployment_id, deploymentWaitType='READY_WAIT')
        except Exception as exc:
            if error_code(exc) in ('DeploymentIsNotInReadyStateException', 'DeploymentAlreadyCompletedException'):
                status = self._status(deployment_id)
                if status in ('InProgress', 'Baking', 'Succeeded'):
                    return
                raise StageFailed(f'CodeDeploy deployment {deployment_id} cannot continue: it is {status}',
                                  reason=Reason.BLUE_GREEN_FAILED) from exc
            raise self._error(exc, f'CodeDeploy ContinueDeployment {deployment_id}') from exc

    def stop_deployment(self, deployment_id: str, *, rollback: bool) -> None:
        """Stop the deployment, rolling back to blue when `rollback`; a no-op when it already stopped or failed."""
        try:
            self._client('codedeploy').stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=rollback)
        except Exception as exc:
            if error_code(exc) == 'DeploymentAlreadyCompletedException':
                status = self._status(deployment_id)
                if status in ('Stopped', 'Failed'):
                    return
                raise StageFailed(f'CodeDeploy deployment {deployment_id} cannot be stopped: it already {status}',
                                  reason=Reason.BLUE_GREEN_FAILED) from exc
            raise self._error(exc, f'CodeDeploy StopDeployment {deployment_id}') from exc

    # -- the application and deployment group ----------------------------------------

    def _ensure_group(self, spec: PandaDeploySpec) -> dict[str, Any]:
        """The deployment group's info, creating application and group when missing and the spec allows."""
        code_deploy = spec.blue_green.code_deploy
        where = f'{code_deploy.application}/{code_deploy.deployment_group}'
        cd = self._client('codedeploy')
        try:
            group = dict(cd.get_deployment_group(applicationName=code_deploy.application,
                                                 deploymentGroupName=code_deploy.deployment_group)
                         ['deploymentGroupInfo'])
        except Exception as exc:
            code = error_code(exc)
            if code not in GROUP_MISSING_CODES:
                raise self._error(exc, f'CodeDeploy GetDeploymentGroup {where}') from exc
            group = self._create_group(spec, application_missing=code == 'ApplicationDoesNotExistException')
        self._check_group(group, where=where)
        return group

    def _create_group(self, spec: PandaDeploySpec, *, application_missing: bool) -> dict[str, Any]:
        code_deploy = spec.blue_green.code_deploy
        missing = (f'CodeDeploy application {code_deploy.application}' if application_missing
                   else f'CodeDeploy deployment group {code_deploy.deployment_group} '
                        f'of application {code_deploy.application}')
        layout, role = layout_from_spec(spec), code_deploy.service_role_arn
        if layout is None or role is None:
            needs = [name for name, value in (('spec.blueGreen.loadBalancer', layout),
                                              ('spec.blueGreen.codeDeploy.serviceRoleArn', role)) if value is None]
            raise StageFailed(f'{missing} does not exist; create it (ECS, blue/green with traffic control, '
                              f'deploymentReadyOption STOP_DEPLOYMENT) or set {" and ".join(needs)} '
                              f'so the operator creates it', reason=Reason.BLUE_GREEN_FAILED)
        cd = self._client('codedeploy')
        if application_missing:
            try:
                cd.create_application(applicationName=code_deploy.application, computePlatform='ECS')
            except Exception as exc:
                if error_code(exc) != 'ApplicationAlreadyExistsException':
                    raise self._error(exc, f'CodeDeploy CreateApplication {code_deploy.application}') from exc
        request = deployment_group_request(spec, layout=layout, service_role_arn=role)
        where = f'{code_deploy.application}/{code_deploy.deployment_group}'
        try:
            cd.create_deployment_group(**request)
        except Exception as exc:
            if error_code(exc) != 'DeploymentGroupAlreadyExistsException':
                raise self._error(exc, f'CodeDeploy CreateDeploymentGroup {where}') from exc
        try:
            return dict(cd.get_deployment_group(applicationName=code_deploy.application,
                                                deploymentGroupName=code_deploy.deployment_group)
                        ['deploymentGroupInfo'])
        except Exception as exc:
            raise self._error(exc, f'CodeDeploy GetDeploymentGroup {where}') from exc

    @staticmethod
    def _check_group(group: dict[str, Any], *, where: str) -> None:
        """Refuse a group whose deployments would shift production traffic without our health checks."""
        ready = (group.get('blueGreenDeploymentConfiguration') or {}).get('deploymentReadyOption') or {}
        if ready.get('actionOnTimeout') != 'STOP_DEPLOYMENT':
            found = ready.get('actionOnTimeout') or 'CONTINUE_DEPLOYMENT (the default)'
            raise StageFailed(f'CodeDeploy deployment group {where} reroutes traffic without waiting '
                              f'(deploymentReadyOption.actionOnTimeout {found}); set STOP_DEPLOYMENT so that '
                              f'health checks gate the switch', reason=Reason.BLUE_GREEN_FAILED)
        if layout_from_group(group) is None:
            raise StageFailed(f'CodeDeploy deployment group {where} names no target group pair '
                              f'(loadBalancerInfo.targetGroupPairInfoList)', reason=Reason.BLUE_GREEN_FAILED)

    # -- inside ------------------------------------------------------------------------

    def _lifecycle_events(self, deployment_id: str) -> tuple[LifecycleEvent, ...]:
        """The ECS target's lifecycle events in CodeDeploy's order; none before the deployment starts."""
        cd = self._client('codedeploy')
        events: list[LifecycleEvent] = []
        try:
            for page in cd.get_paginator('list_deployment_targets').paginate(deploymentId=deployment_id):
                for target_id in page.get('targetIds') or []:
                    target = cd.get_deployment_target(deploymentId=deployment_id, targetId=target_id)
                    found = target.get('deploymentTarget') or {}
                    ecs_target = found.get('ecsTarget') or {}
                    for event in ecs_target.get('lifecycleEvents') or []:
                        events.append(LifecycleEvent(name=str(event.get('lifecycleEventName') or ''),
                                                     status=str(event.get('status') or 'Unknown')))
        except Exception as exc:
            if error_code(exc) == 'DeploymentNotStartedException':
                return ()
            raise self._error(exc, f'CodeDeploy ListDeploymentTargets {deployment_id}') from exc
        return tuple(events)

    def _status(self, deployment_id: str) -> str:
        try:
            return str(self._client('codedeploy').get_deployment(deploymentId=deployment_id)['deploymentInfo']['status'])
        except Exception as exc:
            raise self._error(exc, f'CodeDeploy GetDeployment {deployment_id}') from exc

    def _open_deployments(self, spec: PandaDeploySpec) -> list[str]:
        try:
            return list(self._list(spec, includeOnlyStatuses=list(OPEN_STATUSES)))
        except Exception:  # only used to word a message
            return []

    def _list(self, spec: PandaDeploySpec, **filters: Any) -> Iterator[str]:
        code_deploy = spec.blue_green.code_deploy
        pages = self._client('codedeploy').get_paginator('list_deployments').paginate(
            applicationName=code_deploy.application, deploymentGroupName=code_deploy.deployment_group, **filters)
        for page in pages:
            yield from (str(i) for i in page.get('deployments') or [])

    def _batch_get(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = list(ids)
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), BATCH_GET_LIMIT):
            answer = self._client('codedeploy').batch_get_deployments(deploymentIds=ids[start:start + BATCH_GET_LIMIT])
            found.extend(answer.get('deploymentsInfo') or [])
        return found


def _timestamp(value: object) -> float:
    return value.timestamp() if isinstance(value, datetime.datetime) else 0.0
