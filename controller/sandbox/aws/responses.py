"""The wire layer (AWS JSON 1.1): requests in, simulator calls, JSON documents out, or a :class:`Forward` to moto.

CodeDeploy deployments of EC2/on-premises and Lambda applications stay moto's
(inert, as before); so do applications, deployment groups and configurations,
which a few operations complete on the way through (``Forward`` with a body
or a ``merge`` of moto's answer).
"""
from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable
from typing import Any

from controller.sandbox.aws.backends import MotoBackends
from controller.sandbox.aws.deployment_configs import DEFAULT_ECS_CONFIG, ECS_DEPLOYMENT_CONFIGS, MOTO_DEFAULT_CONFIG
from controller.sandbox.aws.deployment_groups import check_ecs_deployment_group
from controller.sandbox.aws.exceptions import CodeDeployError
from controller.sandbox.aws.models import TARGET_STATUSES, Deployment
from controller.sandbox.aws.simulator import DeploymentSimulator

Answer = dict[str, Any]


@dataclasses.dataclass(kw_only=True)
class Forward:
    """Answer from moto instead: with this request body (None: unchanged), its JSON answer passed through ``merge``."""

    body: dict[str, Any] | None = None
    merge: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


def _compact(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if v is not None}


class CodeDeployResponses:
    """The wire layer: JSON requests in, simulator calls, JSON documents out (or a :class:`Forward` to moto)."""

    def __init__(self, *, simulator: DeploymentSimulator) -> None:
        self.simulator = simulator

    def dispatch(self, operation: str, request: dict[str, Any], *, account: str, region: str) -> Answer | Forward:
        """Answer one operation; raises :class:`CodeDeployError`."""
        method = getattr(self, re.sub(r'(?<!^)(?=[A-Z])', '_', operation).lower())
        answer: Answer | Forward = method(request, account=account, region=region)
        return answer

    # -- simulated operations --

    def create_deployment(self, request: dict[str, Any], *, account: str, region: str) -> Answer | Forward:
        moto = MotoBackends(account=account, region=region)
        application = moto.codedeploy.applications.get(request.get('applicationName') or '')
        if application is not None and application.compute_platform != 'ECS':
            return Forward()  # EC2/on-premises and Lambda deployments stay moto's
        d = self.simulator.create_deployment(
            account=account, region=region, application_name=request.get('applicationName'),
            group_name=request.get('deploymentGroupName'), revision=request.get('revision'),
            config_name=request.get('deploymentConfigName'), description=request.get('description'),
            auto_rollback=request.get('autoRollbackConfiguration'))
        return {'deploymentId': d.deployment_id}

    def get_deployment(self, request: dict[str, Any], *, account: str, region: str) -> Answer | Forward:
        deployment_id = request.get('deploymentId')
        if deployment_id and MotoBackends(account=account, region=region).has_deployment(deployment_id):
            return Forward()
        d = self.simulator.get_deployment(account=account, region=region, deployment_id=deployment_id)
        with self.simulator.lock:
            return {'deploymentInfo': self.deployment_info(d)}

    def batch_get_deployments(self, request: dict[str, Any], *, account: str, region: str) -> Answer | Forward:
        ids = request.get('deploymentIds')
        if not ids:
            raise CodeDeployError('DeploymentIdRequiredException', 'At least one deployment ID must be specified.')
        if len(ids) > 25:
            raise CodeDeployError('BatchLimitExceededException', 'The maximum number of names or IDs allowed for '
                                                                 'this request (25) was exceeded.')
        infos = []
        with self.simulator.lock:
            for deployment_id in ids:
                d = self.simulator.deployments.get(deployment_id)
                if d is not None and (d.account, d.region) == (account, region):
                    infos.append(self.deployment_info(d))
        moto = MotoBackends(account=account, region=region)
        theirs = [i for i in ids if moto.has_deployment(i)]
        if not theirs:
            return {'deploymentsInfo': infos}
        return Forward(body={'deploymentIds': theirs},
                       merge=lambda answer: {'deploymentsInfo': infos + list(answer.get('deploymentsInfo') or [])})

    def list_deployments(self, request: dict[str, Any], *, account: str, region: str) -> Answer | Forward:
        time_range = request.get('createTimeRange') or {}
        ours = self.simulator.list_deployments(
            account=account, region=region, application_name=request.get('applicationName'),
            group_name=request.get('deploymentGroupName'), statuses=request.get('includeOnlyStatuses') or (),
            created_after=_epoch(time_range.get('start')), created_before=_epoch(time_range.get('end')))
        # moto checks the names and the time range, and adds its own (non-ECS) deployments.
        return Forward(merge=lambda answer: {'deployments': ours + list(answer.get('deployments') or [])})

    def continue_deployment(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        self.simulator.continue_deployment(account=account, region=region, deployment_id=request.get('deploymentId'),
                                           wait_type=request.get('deploymentWaitType'))
        return {}

    def stop_deployment(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        status, message = self.simulator.stop_deployment(
            account=account, region=region, deployment_id=request.get('deploymentId'),
            auto_rollback_enabled=request.get('autoRollbackEnabled'))
        return {'status': status, 'statusMessage': message}

    def list_deployment_targets(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        filters = request.get('targetFilters') or {}
        if unknown := set(filters) - {'TargetStatus', 'ServerInstanceLabel'}:
            raise CodeDeployError('InvalidTargetFilterNameException', f'The target filter {sorted(unknown)[0]} is '
                                                                      f'not valid.')
        ids = self.simulator.list_targets(account=account, region=region, deployment_id=request.get('deploymentId'),
                                          target_statuses=filters.get('TargetStatus') or ())
        return {'targetIds': ids}

    def get_deployment_target(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        d = self.simulator.deployment_target(account=account, region=region,
                                             deployment_id=request.get('deploymentId'),
                                             target_id=request.get('targetId'))
        with self.simulator.lock:
            return {'deploymentTarget': self.deployment_target(d)}

    def batch_get_deployment_targets(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        ids = request.get('targetIds')
        if not ids:
            raise CodeDeployError('DeploymentTargetIdRequiredException', 'A deployment target ID was not provided.')
        if len(ids) > 25:
            raise CodeDeployError('DeploymentTargetListSizeExceededException',
                                  'The maximum number of targets that can be associated with an Amazon ECS '
                                  'deployment was exceeded.')
        targets = []
        for target_id in ids:
            d = self.simulator.deployment_target(account=account, region=region,
                                                 deployment_id=request.get('deploymentId'), target_id=target_id)
            with self.simulator.lock:
                targets.append(self.deployment_target(d))
        return {'deploymentTargets': targets}

    def put_lifecycle_event_hook_execution_status(self, request: dict[str, Any], *, account: str,
                                                  region: str) -> Answer:
        execution_id = self.simulator.put_hook_status(
            account=account, region=region, deployment_id=request.get('deploymentId'),
            execution_id=request.get('lifecycleEventHookExecutionId'), status=request.get('status'))
        return {'lifecycleEventHookExecutionId': execution_id}

    # -- moto's resources, adjusted on the way --

    def create_deployment_group(self, request: dict[str, Any], *, account: str, region: str) -> Answer | Forward:
        moto = MotoBackends(account=account, region=region)
        application = moto.codedeploy.applications.get(request.get('applicationName') or '')
        if application is None or application.compute_platform != 'ECS':
            return Forward()
        if request.get('deploymentGroupName') in moto.codedeploy.deployment_groups.get(
                application.application_name, {}):
            return Forward()  # moto answers DeploymentGroupAlreadyExistsException
        check_ecs_deployment_group(moto, request)
        return Forward(body={**request, 'deploymentConfigName': request.get('deploymentConfigName')
                             or DEFAULT_ECS_CONFIG})

    def get_deployment_group(self, request: dict[str, Any], *, account: str, region: str) -> Forward:
        attempted, succeeded = self.simulator.group_history(
            account=account, region=region, application_name=request.get('applicationName') or '',
            group_name=request.get('deploymentGroupName') or '')

        def merge(answer: dict[str, Any]) -> dict[str, Any]:
            info = dict(answer.get('deploymentGroupInfo') or {})
            if info.get('computePlatform') == 'ECS' and info.get('deploymentConfigName') == MOTO_DEFAULT_CONFIG:
                info['deploymentConfigName'] = DEFAULT_ECS_CONFIG
            for key, d in (('lastAttemptedDeployment', attempted), ('lastSuccessfulDeployment', succeeded)):
                if d is not None:
                    info[key] = _compact({'deploymentId': d.deployment_id, 'status': d.status,
                                          'endTime': d.complete_time, 'createTime': d.create_time})
            if succeeded is not None:
                info['targetRevision'] = succeeded.revision
            return {**answer, 'deploymentGroupInfo': info}

        return Forward(merge=merge)

    def get_deployment_config(self, request: dict[str, Any], *, account: str, region: str) -> Answer | Forward:
        name = request.get('deploymentConfigName') or ''
        routing = ECS_DEPLOYMENT_CONFIGS.get(name)
        if routing is None:
            return Forward()
        return {'deploymentConfigInfo': {
            'deploymentConfigId': str(uuid.uuid5(uuid.NAMESPACE_URL, name)), 'deploymentConfigName': name,
            'computePlatform': 'ECS', 'trafficRoutingConfig': routing.serialise(), 'createTime': 0.0}}

    # -- documents --

    @staticmethod
    def deployment_info(d: Deployment) -> dict[str, Any]:
        """A ``DeploymentInfo`` document."""
        overview = {status: 0 for status in TARGET_STATUSES}
        if d.target_status in overview:
            overview[d.target_status] = 1
        return _compact({
            'applicationName': d.application_name, 'deploymentGroupName': d.group_name,
            'deploymentConfigName': d.config_name, 'deploymentId': d.deployment_id,
            'previousRevision': d.previous_revision, 'revision': d.revision, 'status': d.status,
            'errorInformation': d.error, 'createTime': d.create_time, 'startTime': d.start_time,
            'completeTime': d.complete_time, 'deploymentOverview': overview, 'description': d.description,
            'creator': d.creator, 'ignoreApplicationStopFailures': False,
            'autoRollbackConfiguration': d.auto_rollback or None, 'updateOutdatedInstancesOnly': False,
            'rollbackInfo': d.rollback_info, 'deploymentStyle': d.deployment_style or None,
            'instanceTerminationWaitTimeStarted': d.termination_wait_started,
            'blueGreenDeploymentConfiguration': d.blue_green or None, 'loadBalancerInfo': d.load_balancer_info or None,
            'deploymentStatusMessages': list(d.status_messages), 'computePlatform': 'ECS',
        })

    @staticmethod
    def deployment_target(d: Deployment) -> dict[str, Any]:
        """A ``DeploymentTarget`` document for the deployment's ECS target."""
        task_sets = [_compact({
            'identifer': ts.identifier,  # sic: the API's spelling
            'desiredCount': ts.desired_count, 'pendingCount': 0, 'runningCount': ts.desired_count,
            'status': ts.status, 'trafficWeight': ts.traffic_weight, 'targetGroup': {'name': ts.target_group_name},
            'taskSetLabel': ts.label,
        }) for ts in (d.blue, d.green) if ts is not None and ts.arn]
        events = [_compact({'lifecycleEventName': e.name, 'status': e.status, 'startTime': e.start_time,
                            'endTime': e.end_time, 'diagnostics': e.diagnostics}) for e in d.events]
        return {'deploymentTargetType': 'ECSTarget', 'ecsTarget': _compact({
            'deploymentId': d.deployment_id, 'targetId': d.target_id, 'targetArn': d.service_arn or None,
            'lastUpdatedAt': d.target_updated, 'lifecycleEvents': events, 'status': d.target_status,
            'taskSetsInfo': task_sets})}
