"""What a service deployment shows on the service in moto: its revisions, ``deployments``, events.

moto's ECS backend keeps services but no service deployments: it drops a
CreateService request's ``deploymentConfiguration``, and an UpdateService to
a new task definition changes nothing but the field. moto serialises any
attribute of its ``Service`` whose name is a member of the API's ``Service``
shape, so setting ``current_service_deployment``, ``current_service_revisions``,
``deployments`` and ``events`` here makes DescribeServices answer them.
"""
from __future__ import annotations

import uuid
from typing import Any

from controller.sandbox.aws.backends import MotoBackends
from controller.sandbox.aws.ecs_models import EcsState, ServiceDeployment, ServiceRevision

MAX_EVENTS = 100


def new_revision(service: Any, *, moto: MotoBackends, task_definition: str, created_at: float,
                 state: EcsState) -> ServiceRevision:
    """A service revision of this moto service running ``task_definition`` (what it would launch now)."""
    balancer: dict[str, Any] = next((lb for lb in service.load_balancers or [] if lb.get('containerName')), {})
    container = str(balancer.get('containerName') or '')
    port = int(balancer.get('containerPort') or 0)
    if not container or not port:
        container, port = _first_container(moto, task_definition)
    region, account = service.arn.split(':')[3:5]
    revision = ServiceRevision(
        arn=(f'arn:aws:ecs:{region}:{account}:service-revision/{service.cluster_name}/'
             f'{service.name}/{state.new_revision_id()}'),
        service_arn=service.arn, cluster_arn=service.cluster_arn, task_definition=task_definition,
        created_at=created_at, launch_type=service.launch_type, platform_version=service.platform_version,
        load_balancers=[dict(lb) for lb in service.load_balancers or []],
        network_configuration=dict(service.network_configuration or {}),
        container_name=container, image=moto.image(task_definition, container), container_port=port)
    state.revisions[revision.arn] = revision
    return revision


def _first_container(moto: MotoBackends, task_definition: str) -> tuple[str, int]:
    try:
        definition = moto.ecs.describe_task_definition(task_definition)
    except Exception:  # noqa: BLE001 -- checked by moto when the service was created or updated
        return '', 0
    container = (definition.container_definitions or [{}])[0]
    ports = container.get('portMappings') or [{}]
    return str(container.get('name') or ''), int(ports[0].get('containerPort') or 0)


def show_start(d: ServiceDeployment, *, moto: MotoBackends) -> None:
    """The service's current deployment is this one: green PRIMARY and in progress, the sources ACTIVE."""
    service = moto.service(cluster=d.cluster, service=d.service)
    if service is None:
        return
    service.current_service_deployment = d.arn
    service.task_definition = d.target.task_definition
    service.deployments = [_entry(d, d.target, 'PRIMARY', 'IN_PROGRESS', f'ECS deployment {d.arn} in progress.'),
                           *(_entry(d, s, 'ACTIVE', 'COMPLETED', None) for s in d.sources)]
    show_revisions(d, moto=moto)
    add_event(service, d.clock, f'(service {d.service}) has started a {d.strategy.name} service deployment '
                                f'{d.arn.rsplit("/", 1)[-1]} to {_short(d.target.task_definition)}.')


def show_revisions(d: ServiceDeployment, *, moto: MotoBackends) -> None:
    """``currentServiceRevisions``: the revisions that have tasks, and how many."""
    service = moto.service(cluster=d.cluster, service=d.service)
    if service is None:
        return
    live = [r for r in (*d.sources, d.target) if r.requested or r.running]
    service.current_service_revisions = [
        {'arn': r.arn, 'requestedTaskCount': r.requested, 'runningTaskCount': r.running, 'pendingTaskCount': 0}
        for r in live]
    service.running_count = sum(r.running for r in live)
    service.pending_count = 0


def show_end(d: ServiceDeployment, *, moto: MotoBackends, serving: ServiceRevision, message: str) -> None:
    """The deployment ended with ``serving`` the revision in production (green, or blue after a rollback)."""
    service = moto.service(cluster=d.cluster, service=d.service)
    if service is None:
        return
    service.task_definition = serving.task_definition
    state = 'COMPLETED' if serving is d.target and d.status == 'SUCCESSFUL' else 'FAILED'
    entries = [_entry(d, serving, 'PRIMARY', 'COMPLETED', f'ECS deployment {d.arn} completed.'
                      if serving is d.target else d.status_reason)]
    if serving is not d.target and d.target.running:
        entries.append(_entry(d, d.target, 'ACTIVE', state, d.status_reason))
    service.deployments = entries
    show_revisions(d, moto=moto)
    add_event(service, d.clock, message)


def add_event(service: Any, when: float, message: str) -> None:
    """A service event, newest first, as DescribeServices lists them."""
    events = list(getattr(service, 'events', None) or [])
    service.events = [{'id': str(uuid.uuid4()), 'createdAt': when, 'message': message}, *events][:MAX_EVENTS]


def _entry(d: ServiceDeployment, revision: ServiceRevision, status: str, rollout: str,
           reason: str | None) -> dict[str, Any]:
    """One of DescribeServices' ``deployments`` (the API's ``Deployment`` shape)."""
    entry: dict[str, Any] = {
        'id': f'ecs-svc/{int(revision.arn.rsplit("/", 1)[-1]) % 10**19}', 'status': status,
        'taskDefinition': revision.task_definition, 'desiredCount': revision.requested,
        'pendingCount': 0, 'runningCount': revision.running, 'failedTasks': d.failure_count if status == 'PRIMARY'
        else 0, 'createdAt': revision.created_at, 'updatedAt': d.clock, 'rolloutState': rollout,
    }
    for key, value in (('launchType', revision.launch_type), ('platformVersion', revision.platform_version),
                       ('networkConfiguration', revision.network_configuration or None),
                       ('rolloutStateReason', reason)):
        if value is not None:
            entry[key] = value
    return entry


def _short(task_definition: str) -> str:
    return task_definition.rsplit('/', 1)[-1]
