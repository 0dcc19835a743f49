"""The ECS native half of test_crash_resume.py: a second service in the same sandbox, deployed by ECS itself.

Why a module of its own: test_crash_resume.py holds the harness (kill points, rollouts, the checks of one
run finishing once); this holds what differs for `spec.rollout` BlueGreen: the service's world (made as
`panda-deploy sandbox world` makes it: listener rules forwarding to both target groups, the role ECS uses),
its PandaDeploy, the sandbox hook that kills the operator as the ECS deployment simulator moves production
weights, whether the run's deployment waits at the hook, and which service deployments deployed which task
definition.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from controller.sandbox.aws import ecs_traffic
from controller.sandbox.aws.ecs_simulator import EcsDeploymentSimulator
from controller.sandbox.stack.sandbox import Sandbox
from controller.sandbox.stack.world import REGION
from controller.sandbox.world import make_world

SERVICE = 'ecs-app'  # the PandaDeploy's name and the ECS service's


def ecs_resource(sandbox: Sandbox, *, source: dict[str, Any], health_check: dict[str, Any],
                 credentials_secret: str) -> dict[str, Any]:
    """The PandaDeploy of a BlueGreen (ECS native) service whose world is made now, beside the demo's."""
    resource, _ = make_world(sandbox.clients, service=SERVICE, cluster=f'{SERVICE}-cluster', region=REGION,
                             strategy='BlueGreen', namespace='default')
    spec = resource['spec']
    spec['aws']['credentialsSecretRef'] = {'name': credentials_secret}
    spec.update(source=source, healthCheck=health_check, timeouts={'stageSeconds': '2m', 'totalSeconds': '5m'})
    return dict(resource)


@contextlib.contextmanager
def shifting_production(kill: Callable[[], None]) -> Iterator[None]:
    """The deployment's production weights move (after CONTINUE): the operator is killed as they do."""
    original = ecs_traffic.shift

    def shift(d: Any, *, moto: Any, production: float | None = None, test: float | None = None) -> None:
        if production is not None:
            kill()
        original(d, moto=moto, production=production, test=test)

    ecs_traffic.shift = shift  # type: ignore[assignment]
    try:
        yield
    finally:
        ecs_traffic.shift = original  # type: ignore[assignment]


def awaiting_hook(sandbox: Sandbox, arn: str | None) -> bool:
    """The service deployment `arn` waits at a PAUSE hook (read from the simulator: no request, no delay)."""
    simulator: EcsDeploymentSimulator = sandbox.aws.ecs_simulator
    with simulator.lock:
        found = simulator.state.deployments.get(arn or '')
        return found is not None and any(run.awaiting for run in found.hooks)


def deployments_by_task_definition(clients: Callable[[str], Any], *, cluster: str,
                                   service: str) -> dict[str, list[tuple[str, str]]]:
    """Task definition ARN -> the (ARN, status) of each service deployment of the service that deployed it."""
    ecs = clients('ecs')
    try:
        briefs = ecs.list_service_deployments(cluster=cluster, service=service,
                                              maxResults=100)['serviceDeployments']
    except ecs.exceptions.ServiceNotFoundException:
        return {}
    found: dict[str, list[tuple[str, str]]] = {}
    for brief in sorted(briefs, key=lambda b: b['createdAt']):
        revision = ecs.describe_service_revisions(serviceRevisionArns=[brief['targetServiceRevisionArn']])
        definition = revision['serviceRevisions'][0]['taskDefinition']
        found.setdefault(definition, []).append((brief['serviceDeploymentArn'], brief['status']))
    return found
