"""Which task definition's containers stand behind a target group, started when first needed.

Why this exists: moto registers no targets, so the load-balancer stand-in
must work out, from what ECS says, which tasks a target group would reach,
and run them (`TaskRunner`). Two ways a service puts tasks in a target group:

- **CodeDeploy** (deployment controller ``CODE_DEPLOY``): each task set names
  its target group and task definition (``DescribeTaskSets``). A service with
  no task set yet (just created: moto runs no tasks and the CodeDeploy
  simulator only reports replacements) is served by its own task definition.
- **ECS native** blue/green, canary and linear (``deploymentConfiguration``
  ``strategy`` ``BLUE_GREEN``, ``CANARY``, ``LINEAR``): the service's
  current revisions (``DescribeServices``' ``currentServiceRevisions``, the
  revisions that have tasks) each name their task definition and, in
  ``resolvedConfiguration.loadBalancers``, the target group their tasks are
  registered with (``DescribeServiceRevisions``). During a canary step both
  revisions have tasks, one in each target group; after ``CLEAN_UP`` only the
  new one. Containers this module started for a revision that no longer has
  tasks are stopped (`sweep`), as ECS stops the old revision's tasks.

The service is found by its target groups (any cluster, any service), so the
stand-in serves whatever `sandbox world` or a test created, not only the
demo's service.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from controller.sandbox.stack.tasks import TaskRunner

NATIVE_STRATEGIES = frozenset({'BLUE_GREEN', 'CANARY', 'LINEAR'})


def is_native(service: dict[str, Any]) -> bool:
    """A service deployed by ECS itself with a blue/green, canary or linear strategy."""
    controller = (service.get('deploymentController') or {}).get('type', 'ECS')
    strategy = (service.get('deploymentConfiguration') or {}).get('strategy')
    return controller == 'ECS' and strategy in NATIVE_STRATEGIES


def service_target_groups(service: dict[str, Any]) -> set[str]:
    """The target groups a service names: each load balancer's and its alternate (ECS native)."""
    found = set()
    for balancer in service.get('loadBalancers') or []:
        found.add(balancer.get('targetGroupArn'))
        found.add((balancer.get('advancedConfiguration') or {}).get('alternateTargetGroupArn'))
    return {arn for arn in found if arn}


def revision_target_groups(revision: dict[str, Any]) -> set[str]:
    """The target groups a service revision's tasks are registered with."""
    resolved = (revision.get('resolvedConfiguration') or {}).get('loadBalancers') or []
    if resolved:
        return {str(lb['targetGroupArn']) for lb in resolved if lb.get('targetGroupArn')}
    # Not resolved yet: a plain load balancer (no alternate) is the only target group there is.
    return {str(lb['targetGroupArn']) for lb in revision.get('loadBalancers') or []
            if lb.get('targetGroupArn') and not lb.get('advancedConfiguration')}


def short_name(target_group_arn: str) -> str:
    """`arn:…:targetgroup/NAME/ID` -> NAME."""
    return target_group_arn.rsplit('/', 2)[-2] if target_group_arn.count('/') >= 2 else target_group_arn


class TargetTasks:
    """Target group -> the container of the task definition behind it (started on first use).

    `clients(name)` gives a boto3 client of the sandbox; `home` is the (cluster, service)
    looked at first (the demo's), before every service of every cluster.
    """

    def __init__(self, *, clients: Callable[[str], Any], tasks: TaskRunner,
                 home: tuple[str, str] | None = None) -> None:
        self.clients, self.tasks, self.home = clients, tasks, home
        self._services: dict[str, tuple[str, str]] = {}  # target group -> (cluster ARN, service ARN)
        self._native_started: dict[tuple[str, str], set[str]] = {}  # native service -> its task definitions run
        self._lock = threading.Lock()

    def serve(self, target_group_arn: str) -> tuple[int, str]:
        """(host port of the container, task definition ARN) behind a target group; LookupError if none."""
        service = self._service_of(target_group_arn)
        if is_native(service):
            task_definition = self._native(service, target_group_arn)
        else:
            task_definition = self._code_deploy(service, target_group_arn)
        return self._started(task_definition, service), task_definition

    def sweep(self) -> None:
        """Stop the containers of ECS native revisions that no longer have tasks (deployment cleaned up)."""
        with self._lock:
            services = list(self._native_started)
        for cluster, service_arn in services:
            found = self._describe(cluster, service_arn)
            self._live_revisions(found or {'serviceArn': service_arn, 'clusterArn': cluster})

    # -- ECS native --

    def _native(self, service: dict[str, Any], target_group_arn: str) -> str:
        for revision in self._live_revisions(service):
            if target_group_arn in revision_target_groups(revision):
                with self._lock:
                    self._native_started.setdefault(_key(service), set()).add(str(revision['taskDefinition']))
                return str(revision['taskDefinition'])
        raise LookupError(f'no running revision of service {service["serviceName"]} is registered with '
                          f'{short_name(target_group_arn)}')

    def _live_revisions(self, service: dict[str, Any]) -> list[dict[str, Any]]:
        """The service's revisions that have tasks; the containers of those that stopped having any are removed."""
        arns = [r['arn'] for r in service.get('currentServiceRevisions') or []]
        revisions: list[dict[str, Any]] = []
        for start in range(0, len(arns), 20):  # DescribeServiceRevisions takes at most 20
            revisions += self.clients('ecs').describe_service_revisions(
                serviceRevisionArns=arns[start:start + 20])['serviceRevisions']
        live = {str(r['taskDefinition']) for r in revisions}
        with self._lock:
            started = self._native_started.get(_key(service), set())
            gone = started - live
            started -= gone
        for task_definition in sorted(gone):
            self.tasks.stop(task_definition)
        return revisions

    # -- CodeDeploy (and a service with neither task sets nor a native strategy) --

    def _code_deploy(self, service: dict[str, Any], target_group_arn: str) -> str:
        """A task set's task definition; a service without task sets is served by its own.

        On AWS the operator's first checks of a new service would meet tasks still starting
        (an ALB answers 503 then): stage 4 skips and Verify checks production at once, without
        waiting for the service to be stable (controller/pipeline/bluegreen.py, verify.py).
        """
        for task_set in self._task_sets(service):
            if any(lb.get('targetGroupArn') == target_group_arn for lb in task_set.get('loadBalancers') or []):
                return str(task_set['taskDefinition'])
        if target_group_arn in service_target_groups(service):
            return str(service['taskDefinition'])
        raise LookupError(f'no task is registered with {short_name(target_group_arn)}')

    def _task_sets(self, service: dict[str, Any]) -> list[dict[str, Any]]:
        found = self.clients('ecs').describe_task_sets(cluster=service['clusterArn'], service=service['serviceArn'])
        return list(found.get('taskSets') or [])

    # -- finding the service --

    def _service_of(self, target_group_arn: str) -> dict[str, Any]:
        """The service whose tasks a target group would reach (remembered; looked for again when it changed)."""
        with self._lock:
            cached = self._services.get(target_group_arn)
        if cached is not None and (found := self._describe(*cached)) and self._serves(found, target_group_arn):
            return found
        for found in self._candidates():
            if self._serves(found, target_group_arn):
                with self._lock:
                    self._services[target_group_arn] = (found['clusterArn'], found['serviceArn'])
                return found
        raise LookupError(f'no task is registered with {short_name(target_group_arn)}')

    def _serves(self, service: dict[str, Any], target_group_arn: str) -> bool:
        if target_group_arn in service_target_groups(service):
            return True
        if (service.get('deploymentController') or {}).get('type') != 'CODE_DEPLOY':
            return False
        return any(lb.get('targetGroupArn') == target_group_arn
                   for task_set in self._task_sets(service) for lb in task_set.get('loadBalancers') or [])

    def _describe(self, cluster: str, service: str) -> dict[str, Any] | None:
        found = self.clients('ecs').describe_services(cluster=cluster, services=[service])['services']
        return dict(found[0]) if found and found[0].get('status') == 'ACTIVE' else None

    def _candidates(self) -> Iterator[dict[str, Any]]:
        """The home service first, then every active service of every cluster."""
        ecs = self.clients('ecs')
        if self.home is not None and (home := self._describe(*self.home)) is not None:
            yield home
        for page in ecs.get_paginator('list_clusters').paginate():
            for cluster in page['clusterArns']:
                for services in ecs.get_paginator('list_services').paginate(cluster=cluster, maxResults=10):
                    if services['serviceArns']:
                        found = ecs.describe_services(cluster=cluster, services=services['serviceArns'])['services']
                        yield from (dict(s) for s in found if s.get('status') == 'ACTIVE')

    # -- the container --

    def _started(self, task_definition_arn: str, service: dict[str, Any]) -> int:
        """The port of the task definition's container: the load-balanced one, started if it is not running."""
        port = self.tasks.port_of(task_definition_arn)
        if port is not None:
            return port
        balancer: dict[str, Any] = next((lb for lb in service.get('loadBalancers') or [] if lb.get('containerName')),
                                        {})
        definition = self.clients('ecs').describe_task_definition(taskDefinition=task_definition_arn)
        containers = definition['taskDefinition']['containerDefinitions']
        container = next((c for c in containers if c['name'] == balancer.get('containerName')), containers[0])
        container_port = balancer.get('containerPort') or container['portMappings'][0]['containerPort']
        return self.tasks.start(task_definition_arn, container['image'], int(container_port))


def _key(service: dict[str, Any]) -> tuple[str, str]:
    return str(service['clusterArn']), str(service['serviceArn'])
