"""The ECS wire layer (AWS JSON 1.1) for service deployments: requests in, simulator calls, documents out.

moto answers CreateService, UpdateService and DeleteService (:class:`Forward`);
for a service with a ``BLUE_GREEN``, ``CANARY`` or ``LINEAR`` strategy the
request is checked first as ECS checks it, and once moto has stored the
service a service deployment starts and moto's answer gains what it lacks
(``deploymentConfiguration``, which moto's CreateService drops,
``currentServiceDeployment``, ``currentServiceRevisions``, ``deployments``).
DescribeServiceDeployments, ListServiceDeployments, StopServiceDeployment,
ContinueServiceDeployment and DescribeServiceRevisions are the simulator's.
"""
from __future__ import annotations

import base64
import copy
import re
from collections.abc import Mapping
from typing import Any

from controller.sandbox.aws import ecs_documents as documents
from controller.sandbox.aws.backends import MotoBackends
from controller.sandbox.aws.ecs_config import Route, Strategy, invalid, routes_of, strategy_of
from controller.sandbox.aws.ecs_simulator import EcsDeploymentSimulator
from controller.sandbox.aws.exceptions import EcsError
from controller.sandbox.aws.responses import Answer, Forward

#: ECS operations answered (or completed) here; the rest go to moto unchanged.
ECS_OPERATIONS = frozenset({
    'CreateService', 'UpdateService', 'DeleteService', 'DescribeServiceDeployments', 'ListServiceDeployments',
    'StopServiceDeployment', 'ContinueServiceDeployment', 'DescribeServiceRevisions',
})
#: UpdateService fields whose change starts a new deployment (desiredCount, deploymentConfiguration... do not).
_DEPLOYING_FIELDS = ('loadBalancers', 'networkConfiguration', 'platformVersion', 'capacityProviderStrategy',
                     'launchType', 'serviceRegistries')


class EcsResponses:
    """The wire layer: JSON requests in, simulator calls, JSON documents out (or a :class:`Forward` to moto)."""

    def __init__(self, *, simulator: EcsDeploymentSimulator) -> None:
        self.simulator = simulator

    def dispatch(self, operation: str, request: dict[str, Any], *, account: str, region: str) -> Answer | Forward:
        """Answer one operation; raises :class:`EcsError`."""
        method = getattr(self, re.sub(r'(?<!^)(?=[A-Z])', '_', operation).lower())
        answer: Answer | Forward = method(request, account=account, region=region)
        return answer

    # -- services (moto's, completed) --

    def create_service(self, request: dict[str, Any], *, account: str, region: str) -> Answer | Forward:
        config = request.get('deploymentConfiguration')
        moto = MotoBackends(account=account, region=region)
        strategy, routes = self._native(request, config=config, controller=request.get('deploymentController'),
                                        load_balancers=request.get('loadBalancers') or [], moto=moto)
        cluster, name = request.get('cluster') or 'default', str(request.get('serviceName') or '')

        def merge(answer: dict[str, Any]) -> dict[str, Any]:
            service = moto.service(cluster=cluster, service=name)
            if service is None:
                return answer
            service.deployment_configuration = copy.deepcopy(config)  # moto's CreateService drops it
            if strategy is None or not service.task_definition:
                return answer
            return self._started(answer, service, account=account, region=region, strategy=strategy,
                                 routes=routes, previous=None)

        return Forward(merge=merge) if config is not None else Forward()

    def update_service(self, request: dict[str, Any], *, account: str, region: str) -> Answer | Forward:
        moto = MotoBackends(account=account, region=region)
        cluster, name = request.get('cluster') or 'default', str(request.get('service') or '')
        service = moto.service(cluster=cluster, service=name)
        if service is None:
            return Forward()  # moto answers ServiceNotFoundException / ClusterNotFoundException
        config = request.get('deploymentConfiguration', getattr(service, 'deployment_configuration', None))
        strategy, routes = self._native(request, config=config, moto=moto,
                                        controller=request.get('deploymentController', service.deployment_controller),
                                        load_balancers=request.get('loadBalancers', service.load_balancers) or [])
        if strategy is None:
            return Forward()
        before = {'taskDefinition': service.task_definition, 'loadBalancers': copy.deepcopy(service.load_balancers),
                  'networkConfiguration': copy.deepcopy(service.network_configuration),
                  'platformVersion': service.platform_version}

        def merge(answer: dict[str, Any]) -> dict[str, Any]:
            updated = moto.service(cluster=cluster, service=name)
            if updated is None:
                return answer
            updated.task_definition = moto.ecs.describe_task_definition(updated.task_definition).arn
            changed = [field for field in _DEPLOYING_FIELDS if field in request and request[field] != before.get(field)]
            if updated.task_definition == before['taskDefinition'] and not changed \
                    and not request.get('forceNewDeployment'):
                return {**answer, 'service': {**answer['service'], 'taskDefinition': updated.task_definition}}
            return self._started(answer, updated, account=account, region=region, strategy=strategy, routes=routes,
                                 previous=before['taskDefinition'])

        return Forward(merge=merge)

    def delete_service(self, request: dict[str, Any], *, account: str, region: str) -> Forward:
        key = f'{str(request.get("cluster") or "default").split("/")[-1]}:{str(request.get("service")).split("/")[-1]}'

        def merge(answer: dict[str, Any]) -> dict[str, Any]:
            self.simulator.forget_service(account=account, region=region, key=key)
            return answer

        return Forward(merge=merge)

    def _native(self, request: Mapping[str, Any], *, config: Mapping[str, Any] | None, controller: Any,
                load_balancers: list[dict[str, Any]], moto: MotoBackends) -> tuple[Strategy | None, list[Route]]:
        """The native strategy the service asks for and its routes, checked as ECS checks them; (None, [])."""
        strategy = strategy_of(config)
        if strategy is None:
            return None, []
        if (controller or {}).get('type', 'ECS') != 'ECS':
            raise invalid(f'The {strategy.name} deployment strategy needs the ECS deployment controller, not '
                          f'{controller["type"]}.')
        routes = routes_of(load_balancers, strategy=strategy.name)
        for route in routes:
            for group in (route.target_group, route.alternate_target_group):
                if group not in moto.elbv2.target_groups:
                    raise invalid(f'The target group {group} does not exist.')
            for rule in (route.production_rule, route.test_rule):
                try:
                    if rule is not None and moto.forward_weights(rule) is None:
                        raise invalid(f'The listener rule {rule} does not exist.')
                except ValueError as exc:
                    raise invalid(f'The listener rule cannot be used for a {strategy.name} deployment: '
                                  f'{exc}.') from None
        return strategy, routes

    def _started(self, answer: dict[str, Any], service: Any, *, account: str, region: str, strategy: Strategy,
                 routes: list[Route], previous: str | None) -> dict[str, Any]:
        config = copy.deepcopy(getattr(service, 'deployment_configuration', None) or {})
        with self.simulator.lock:
            d = self.simulator.start_deployment(account=account, region=region, service=service, strategy=strategy,
                                                routes=routes, config=config, previous_task_definition=previous)
            return {**answer, 'service': {**answer.get('service', {}), **documents.service_fields(d, service)}}

    # -- service deployments (the simulator's) --

    def describe_service_deployments(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        arns = list(request.get('serviceDeploymentArns') or [])
        if not arns or len(arns) > 20:
            raise invalid('serviceDeploymentArns must name from 1 to 20 service deployments.')
        with self.simulator.lock:
            found, failures = self.simulator.describe(account=account, region=region, arns=arns)
            return {'serviceDeployments': [documents.service_deployment(d) for d in found], 'failures': failures}

    def list_service_deployments(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        moto = MotoBackends(account=account, region=region)
        cluster = str(request.get('cluster') or 'default').split('/')[-1]
        if cluster not in moto.ecs.clusters:
            raise EcsError('ClusterNotFoundException', 'Cluster not found.')
        service = moto.service(cluster=cluster, service=str(request.get('service') or ''))
        if service is None or service.status != 'ACTIVE':
            raise EcsError('ServiceNotFoundException', 'Service not found.')
        limit = int(request.get('maxResults') or 20)
        if not 1 <= limit <= 100:
            raise invalid('maxResults must be from 1 to 100.')
        created = request.get('createdAt') or {}
        with self.simulator.lock:
            found = self.simulator.list_deployments(account=account, region=region, key=f'{cluster}:{service.name}',
                                        statuses=request.get('status') or (), created_after=_epoch(created.get('after')),
                                        created_before=_epoch(created.get('before')))
            start = _offset(request.get('nextToken'))
            page = found[start:start + limit]
            answer: Answer = {'serviceDeployments': [documents.brief(d) for d in page]}
        if start + limit < len(found):
            answer['nextToken'] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
        return answer

    def stop_service_deployment(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        arn = self.simulator.stop_deployment(account=account, region=region,
                                             arn=str(request.get('serviceDeploymentArn') or ''),
                                             stop_type=request.get('stopType'))
        return {'serviceDeploymentArn': arn}

    def continue_service_deployment(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        arn = self.simulator.continue_deployment(account=account, region=region,
                                                 arn=str(request.get('serviceDeploymentArn') or ''),
                                                 hook_id=str(request.get('hookId') or ''),
                                                 action=request.get('action'))
        return {'serviceDeploymentArn': arn}

    def describe_service_revisions(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        arns = list(request.get('serviceRevisionArns') or [])
        if not arns or len(arns) > 20:
            raise invalid('serviceRevisionArns must name from 1 to 20 service revisions.')
        with self.simulator.lock:
            found, failures = self.simulator.revisions(account=account, region=region, arns=arns)
            return {'serviceRevisions': [documents.service_revision(r) for r in found], 'failures': failures}


def _epoch(value: Any) -> float | None:
    return None if value is None else float(value)


def _offset(token: Any) -> int:
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(str(token).encode()).decode())
    except ValueError:
        raise invalid('The nextToken is not valid.') from None
