"""ECS through boto3: the task definition revision and the CodeDeploy-controlled service.

Task definitions are compared, not blindly registered: a run that deploys the
same image with the same settings must not add a revision (stage 3 is
idempotent), so the wanted definition is compared with the family's latest
ACTIVE revision on the fields we set. ECS echoes a definition back with
defaults filled in (container cpu 0, empty environment, hostPort equal to
containerPort under awsvpc, …), so the comparison treats absent and empty as
equal and only looks at what the spec controls.

The service is created once, with the CODE_DEPLOY deployment controller and
the blue target group; an existing service is never updated with a task
definition (AWS refuses that for CodeDeploy-controlled services; the new
revision rolls out through stage 4). Which target group is blue comes from
`controller.adapters.traffic_layout` (the deployment group, or the
spec), so ECS, CodeDeploy and ELBv2 agree.

Errors name the cluster and service (`ServiceUpdateFailed`) with the AWS
error code; throttling, 5xx and dropped connections are `Transient`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import boto3.session

from controller.adapters import ServiceState
from controller.adapters.aws import AwsAdapter, error_code
from controller.adapters.traffic_layout import missing_layout_text, traffic_layout
from controller.credentials import Credentials
from controller.errors import DeploymentControllerMismatch, PandaDeployError, Reason, ServiceUpdateFailed, Transient
from controller.models import PandaDeploySpec

# Task-level fields compared even when the wanted definition leaves them out (removing a role is a change).
TASK_FIELDS = ('networkMode', 'requiresCompatibilities', 'cpu', 'memory', 'executionRoleArn', 'taskRoleArn',
               'containerDefinitions')
# Container fields compared even when the wanted container leaves them out.
CONTAINER_FIELDS = ('name', 'image', 'portMappings', 'essential', 'logConfiguration')
# Fields that say nothing about the revision's content.
_IGNORED_TASK_FIELDS = frozenset({'family', 'tags'})
_NO_REVISION_CODES = frozenset({'ClientException', 'TaskDefinitionNotFoundException'})


def _empty(value: object) -> bool:
    return value is None or value == [] or value == {} or value == ''


def _port_mappings(value: object) -> list[dict[str, Any]]:
    """Port mappings with ECS's defaults made explicit: protocol tcp, hostPort dropped when it equals containerPort."""
    found = []
    for mapping in value if isinstance(value, list) else []:
        entry = {k: v for k, v in dict(mapping).items() if not _empty(v)}
        entry.setdefault('protocol', 'tcp')
        if entry.get('hostPort') in (None, entry.get('containerPort')):
            entry.pop('hostPort', None)
        found.append(entry)
    return sorted(found, key=lambda m: (m.get('containerPort') or 0, str(m.get('protocol'))))


def _normal(key: str, value: object) -> object:
    """A field's value in a form where equal meaning compares equal."""
    if _empty(value):
        return None
    if key == 'portMappings':
        return _port_mappings(value)
    if key == 'requiresCompatibilities' and isinstance(value, list):
        return sorted(value)
    if key in ('cpu', 'memory'):
        return str(value)
    if key == 'environment' and isinstance(value, list):
        return sorted((str(e.get('name')), str(e.get('value'))) for e in value)
    if isinstance(value, dict):
        return {k: _normal(k, v) for k, v in value.items() if not _empty(v)}
    return value


def changed_fields(wanted: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The fields (`containerDefinitions[app].image`, `cpu`, …) where `current` differs from `wanted`; [] when same."""
    changed: list[str] = []
    keys = [k for k in dict.fromkeys([*TASK_FIELDS, *wanted]) if k not in _IGNORED_TASK_FIELDS]
    for key in keys:
        if key == 'containerDefinitions':
            changed.extend(_changed_containers(wanted.get(key) or [], current.get(key) or []))
        elif _normal(key, wanted.get(key)) != _normal(key, current.get(key)):
            changed.append(key)
    return changed


def _changed_containers(wanted: list[Mapping[str, Any]], current: list[Mapping[str, Any]]) -> list[str]:
    by_name = {str(c.get('name')): c for c in current}
    changed = [f'containerDefinitions[{name}]' for name in by_name if name not in {str(w.get('name')) for w in wanted}]
    for container in wanted:
        name = str(container.get('name'))
        found = by_name.get(name)
        if found is None:
            changed.append(f'containerDefinitions[{name}]')
            continue
        for key in dict.fromkeys([*CONTAINER_FIELDS, *container]):
            if _normal(key, container.get(key)) != _normal(key, found.get(key)):
                changed.append(f'containerDefinitions[{name}].{key}')
    return changed


def network_configuration(spec: PandaDeploySpec) -> dict[str, Any] | None:
    """The service's awsvpc networkConfiguration, or None when the spec names no subnets."""
    networking = spec.ecs.networking
    if networking is None or not networking.subnets:
        return None
    vpc: dict[str, Any] = {'subnets': list(networking.subnets),
                           'assignPublicIp': 'ENABLED' if networking.assign_public_ip else 'DISABLED'}
    if networking.security_groups:
        vpc['securityGroups'] = list(networking.security_groups)
    return {'awsvpcConfiguration': vpc}


class EcsService(AwsAdapter):
    """The `Ecs` adapter: task definitions and the service, through one boto3 session."""

    failure_reason = Reason.SERVICE_UPDATE_FAILED

    def __init__(self, *, session: boto3.session.Session | None = None, credentials: Credentials | None = None,
                 clients: Mapping[str, Any] | None = None) -> None:
        super().__init__(session=session, credentials=credentials, clients=clients)
        self.last_changes: list[str] = []
        """The fields that made the last `register_task_definition` register (for messages and tests)."""

    # -- Ecs protocol ------------------------------------------------------------------

    def register_task_definition(self, definition: Mapping[str, object]) -> tuple[str, bool]:
        """(ARN, registered): a new revision only when the family's latest ACTIVE one differs on our fields."""
        family = str(definition['family'])
        ecs = self._client('ecs')
        current: Mapping[str, Any] | None = None
        try:
            current = ecs.describe_task_definition(taskDefinition=family)['taskDefinition']
        except Exception as exc:
            if error_code(exc) not in _NO_REVISION_CODES:
                raise self._error(exc, f'ECS DescribeTaskDefinition {family}') from exc
        if current is not None and current.get('status', 'ACTIVE') == 'ACTIVE':
            changes = changed_fields(definition, current)
            if not changes:
                self.last_changes = []
                return str(current['taskDefinitionArn']), False
        else:
            changes = ['family (no active revision)']
        try:
            registered = ecs.register_task_definition(**definition)['taskDefinition']
        except Exception as exc:
            raise self._error(exc, f'ECS RegisterTaskDefinition {family}') from exc
        self.last_changes = changes
        return str(registered['taskDefinitionArn']), True

    def ensure_service(self, *, spec: PandaDeploySpec, task_definition_arn: str) -> ServiceState:
        """Create the service (CODE_DEPLOY controller, blue target group) when missing; never update it."""
        cluster, name = spec.ecs.cluster, spec.ecs.service
        found = self._describe(cluster=cluster, service=name)
        if found is not None:
            return self._existing(found, cluster=cluster, service=name)

        request = self._create_request(spec, task_definition_arn=task_definition_arn)
        try:
            self._client('ecs').create_service(**request)
        except Exception as exc:
            # Created meanwhile by another run: ECS answers "Creation of service was not idempotent".
            if error_code(exc) == 'InvalidParameterException':
                again = self._describe(cluster=cluster, service=name)
                if again is not None:
                    return self._existing(again, cluster=cluster, service=name)
            raise self._service_error(exc, 'CreateService', cluster=cluster, service=name) from exc
        return ServiceState(cluster=cluster, service=name, created=True)

    def running_task_definition(self, *, spec: PandaDeploySpec) -> str | None:
        """The task definition the service runs now (its primary task set's), or None without a service."""
        found = self._describe(cluster=spec.ecs.cluster, service=spec.ecs.service)
        return str(found['taskDefinition']) if found and found.get('taskDefinition') else None

    # -- inside ------------------------------------------------------------------------

    def _describe(self, *, cluster: str, service: str) -> dict[str, Any] | None:
        """The service unless it is missing or INACTIVE (deleted)."""
        try:
            answer = self._client('ecs').describe_services(cluster=cluster, services=[service])
        except Exception as exc:
            raise self._service_error(exc, 'DescribeServices', cluster=cluster, service=service) from exc
        for found in answer.get('services') or []:
            if found.get('status') != 'INACTIVE':
                return dict(found)
        return None

    @staticmethod
    def _existing(found: Mapping[str, Any], *, cluster: str, service: str) -> ServiceState:
        status = found.get('status')
        if status == 'DRAINING':
            raise Transient(f'ECS service {service} in cluster {cluster} is DRAINING (being deleted); '
                            f'it can be created again once it is INACTIVE')
        controller = (found.get('deploymentController') or {}).get('type') or 'ECS'
        if controller != 'CODE_DEPLOY':
            raise DeploymentControllerMismatch(cluster=cluster, service=service, controller=controller,
                                               strategy='CodeDeploy')
        return ServiceState(cluster=cluster, service=service, created=False)

    def _create_request(self, spec: PandaDeploySpec, *, task_definition_arn: str) -> dict[str, Any]:
        ecs = spec.ecs
        request: dict[str, Any] = {
            'cluster': ecs.cluster,
            'serviceName': ecs.service,
            'taskDefinition': task_definition_arn,
            'desiredCount': ecs.desired_count,
            'launchType': ecs.launch_type,
            'deploymentController': {'type': 'CODE_DEPLOY'},
            'schedulingStrategy': 'REPLICA',
            'loadBalancers': [{'targetGroupArn': self._blue_target_group_arn(spec),
                               'containerName': ecs.container_name, 'containerPort': ecs.container_port}],
        }
        if (network := network_configuration(spec)) is not None:
            request['networkConfiguration'] = network
        return request

    def _blue_target_group_arn(self, spec: PandaDeploySpec) -> str:
        """The ARN of the blue target group (the deployment group's first, or the spec's)."""
        cluster, service = spec.ecs.cluster, spec.ecs.service
        try:
            layout = traffic_layout(spec=spec, codedeploy=self._client('codedeploy'))
        except Exception as exc:
            raise self._service_error(exc, 'CodeDeploy GetDeploymentGroup', cluster=cluster, service=service) from exc
        if layout is None:
            raise ServiceUpdateFailed(cluster=cluster, service=service,
                                      detail=f'no target group to attach: {missing_layout_text(spec)}')
        if layout.blue_target_group_arn:
            return layout.blue_target_group_arn
        try:
            groups = self._client('elbv2').describe_target_groups(Names=[layout.blue_target_group])['TargetGroups']
        except Exception as exc:
            raise self._service_error(exc, f'ELBv2 DescribeTargetGroups {layout.blue_target_group}',
                                      cluster=cluster, service=service) from exc
        if not groups:
            raise ServiceUpdateFailed(cluster=cluster, service=service,
                                      detail=f'target group {layout.blue_target_group} not found')
        return str(groups[0]['TargetGroupArn'])

    def _service_error(self, exc: BaseException, action: str, *, cluster: str, service: str) -> PandaDeployError:
        """`ServiceUpdateFailed` naming cluster, service and the AWS error code.

        Transient errors (retried) and refused credentials (InvalidCredentials) keep their own type.
        """
        mapped = self._error(exc, action)
        if isinstance(mapped, (Transient, ServiceUpdateFailed)) or mapped.reason == Reason.INVALID_CREDENTIALS:
            return mapped
        if error_code(exc) == 'ClusterNotFoundException':
            return ServiceUpdateFailed(cluster=cluster, service=service,
                                       detail=f'cluster {cluster} not found ({action}: ClusterNotFoundException)')
        return ServiceUpdateFailed(cluster=cluster, service=service, detail=mapped.message)
