"""The two colours of a deployment as ECS task sets in moto: find blue, create green, remove either.

Each function acts on moto's backends and records what it did on the
:class:`Deployment`; a step that cannot be done raises :class:`DeploymentFailed`
with the error code AWS reports for it.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from controller.sandbox.aws.appspec import AppSpec
from controller.sandbox.aws.backends import MotoBackends
from controller.sandbox.aws.exceptions import DeploymentFailed
from controller.sandbox.aws.models import Deployment, TaskSetRecord

log = logging.getLogger(__name__)


def resolve_blue(d: Deployment, *, moto: MotoBackends) -> None:
    """Find the original (blue) task set: the service's primary one, behind the production target group."""
    service = moto.service(cluster=d.cluster, service=d.service)
    if service is None or service.status != 'ACTIVE':
        raise DeploymentFailed('INVALID_ECS_SERVICE',
                               f'The ECS service {d.service} in cluster {d.cluster} does not exist.')
    d.service_arn = service.arn
    serving, blue_name, green_name, green_arn = _target_groups(d, moto=moto)
    primary = _primary_task_set(d, moto=moto, service=service, serving=serving)
    balancer = (primary.load_balancers or [{}])[0]
    image = moto.image(primary.task_definition, balancer.get('containerName', ''))
    d.blue = TaskSetRecord(
        label='Blue', arn=primary.task_set_arn, identifier=primary.id, task_definition_arn=primary.task_definition,
        image=image, container_name=balancer.get('containerName', ''),
        container_port=int(balancer.get('containerPort') or 0), target_group_arn=serving,
        target_group_name=blue_name, desired_count=service.desired_count, status='PRIMARY', traffic_weight=100.0)
    d.green = TaskSetRecord(
        label='Green', arn='', identifier='', task_definition_arn='', image='', container_name='',
        container_port=0, target_group_arn=green_arn, target_group_name=green_name,
        desired_count=0, status='', traffic_weight=0.0)


def _target_groups(d: Deployment, *, moto: MotoBackends) -> tuple[str, str, str, str]:
    """(serving target group ARN, blue's name, green's name, green's ARN): blue is the one production serves."""
    prod = d.listener_arns('prodTrafficRoute')
    names = [tg.get('name') for tg in d.target_group_pair().get('targetGroups') or []]
    arns = {name: moto.target_group_arn(name) for name in names}
    if len(names) != 2 or None in arns.values() or not prod:
        raise DeploymentFailed('MISSING_ELB_INFORMATION', f'The deployment group {d.group_name} needs two existing '
                                                          f'target groups and a production listener.')
    serving = moto.forwarded_target_group(prod[0])
    if serving is None or serving not in arns.values():
        raise DeploymentFailed('ELASTIC_LOAD_BALANCING_INVALID',
                               f'The production listener {prod[0]} forwards to neither target group of the pair '
                               f'({", ".join(names)}).')
    blue_name = next(name for name, arn in arns.items() if arn == serving)
    green_name = next(name for name in names if name != blue_name)
    return serving, blue_name, green_name, arns[green_name] or ''


def _primary_task_set(d: Deployment, *, moto: MotoBackends, service: Any, serving: str) -> Any:
    """The service's primary task set (moto starts a CODE_DEPLOY service without the one ECS gives it: adopt one)."""
    primary = next((ts for ts in service.task_sets if ts.status == 'PRIMARY'), None)
    if primary is not None:
        return primary
    if not service.task_definition:
        raise DeploymentFailed('INVALID_ECS_SERVICE', f'The ECS service {d.service} has no task definition.')
    balancers = service.load_balancers or [{'targetGroupArn': serving,
                                            'containerName': d.appspec.container_name if d.appspec else '',
                                            'containerPort': d.appspec.container_port if d.appspec else 0}]
    primary = moto.ecs.create_task_set(
        service.name, service.cluster_name, service.task_definition,
        network_configuration=service.network_configuration or None, load_balancers=balancers,
        launch_type=service.launch_type, platform_version=service.platform_version)
    moto.mark_running(primary, desired=service.desired_count)
    moto.ecs.update_service_primary_task_set(service.cluster_name, service.name, primary.task_set_arn)
    return primary


def install_green(d: Deployment, *, moto: MotoBackends) -> None:
    """Install: create the replacement task set behind the green target group."""
    assert d.appspec is not None and d.green is not None
    spec = d.appspec
    definition, container = _replacement_container(moto, spec)
    service = moto.service(cluster=d.cluster, service=d.service)
    if service is None:
        raise DeploymentFailed('INVALID_ECS_SERVICE', f'The ECS service {d.service} no longer exists.')
    try:
        task_set = moto.ecs.create_task_set(
            service.name, service.cluster_name, definition.arn, external_id=d.deployment_id,
            network_configuration=spec.network_configuration or service.network_configuration or None,
            load_balancers=[{'targetGroupArn': d.green.target_group_arn, 'containerName': spec.container_name,
                             'containerPort': spec.container_port}],
            launch_type=None if spec.capacity_provider_strategy else service.launch_type,
            capacity_provider_strategy=spec.capacity_provider_strategy,
            platform_version=spec.platform_version or service.platform_version)
    except Exception as exc:  # noqa: BLE001 -- reported as the deployment's error
        raise DeploymentFailed('ECS_UPDATE_ERROR', f'The replacement task set could not be created: {exc}') from None
    moto.mark_running(task_set, desired=service.desired_count)
    d.green = dataclasses.replace(
        d.green, arn=task_set.task_set_arn, identifier=task_set.id, task_definition_arn=definition.arn,
        image=str(container.get('image') or ''), container_name=spec.container_name,
        container_port=spec.container_port, desired_count=service.desired_count, status='ACTIVE')
    log.info('deployment %s: replacement task set %s (%s) on %s', d.deployment_id, task_set.id,
             definition.arn, d.green.target_group_name)


def _replacement_container(moto: MotoBackends, spec: AppSpec) -> tuple[Any, dict[str, Any]]:
    """(task definition, container definition) the AppSpec names, the container mapping the AppSpec's port."""
    try:
        definition = moto.ecs.describe_task_definition(spec.task_definition)
    except Exception:  # noqa: BLE001 -- moto raises its own not-found error
        raise DeploymentFailed('ECS_UPDATE_ERROR',
                               f'The task definition {spec.task_definition} does not exist.') from None
    container = next((c for c in definition.container_definitions if c.get('name') == spec.container_name), None)
    if container is None:
        raise DeploymentFailed('ECS_UPDATE_ERROR', f'The task definition {definition.arn} has no container named '
                                                   f'{spec.container_name}.')
    ports = {int(m.get('containerPort', 0)) for m in container.get('portMappings') or []}
    if spec.container_port not in ports:
        raise DeploymentFailed('ECS_UPDATE_ERROR', f'The container {spec.container_name} of {definition.arn} does '
                                                   f'not map port {spec.container_port}.')
    return definition, container


def remove_task_set(d: Deployment, record: TaskSetRecord, *, moto: MotoBackends) -> bool:
    """Delete one colour's task set from moto; False if there was none to remove."""
    if not record.arn or record.status == 'DRAINING':
        return False
    service = moto.service(cluster=d.cluster, service=d.service)
    if service is not None:
        try:
            moto.ecs.delete_task_set(service.cluster_name, service.name, record.arn)
        except Exception:  # noqa: BLE001 -- already gone is fine
            pass
    record.status, record.traffic_weight, record.desired_count = 'DRAINING', 0.0, 0
    log.info('deployment %s: task set %s (%s) removed', d.deployment_id, record.identifier, record.label)
    return True


def restore_blue(d: Deployment, *, moto: MotoBackends) -> None:
    """Roll back in moto: production and test traffic to blue, blue the primary task set again."""
    assert d.blue is not None
    moto.route([*d.listener_arns('prodTrafficRoute'), *d.listener_arns('testTrafficRoute')],
               weights={d.blue.target_group_arn: 100})
    service = moto.service(cluster=d.cluster, service=d.service)
    if service is not None and d.blue.status != 'DRAINING':
        try:
            moto.ecs.update_service_primary_task_set(service.cluster_name, service.name, d.blue.arn)
        except Exception:  # noqa: BLE001 -- the original task set is gone; nothing to make primary
            pass
    d.blue.status, d.blue.traffic_weight = 'PRIMARY', 100.0
