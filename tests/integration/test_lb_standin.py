"""The load-balancer stand-in with real containers: listener rules, weighted target groups, an ECS native canary.

The AWS sandbox (moto's ELBv2 and ECS, the ECS service-deployment simulator)
holds the load balancer; `LoadBalancerStandIn` routes requests for its DNS
name through the listener rules to containers that `TaskRunner` starts on the
Docker engine from two tiny images built FROM the local base image, one
answering `blue`, the other `green`. The simulator is given no task callbacks:
the stand-in alone starts each revision's container when a request first
needs it, and stops it once the revision has no tasks.
"""
from __future__ import annotations

import collections
import contextlib
import io
import itertools
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest

from controller.sandbox.aws import AwsSandbox, Timings
from controller.sandbox.stack.loadbalancer import LoadBalancerStandIn
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.tasks import TaskRunner
from controller.sandbox.stack.world import AwsWorld, create_aws_world, sandbox_clients
from tests.integration.test_ecs_deployments_sandbox import DONE, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]
TIMINGS = Timings(step_seconds=0.05, minute_seconds=0.2, tick_seconds=0.02)
_serial = itertools.count(1)


@pytest.fixture(scope='module')
def images(docker_client: docker.DockerClient, base_image: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """colour -> a local image whose httpd answers the colour on / and on /only/ (no registry needed)."""
    built = {}
    for colour in ('blue', 'green'):
        context = tmp_path_factory.mktemp(f'lb-{colour}')
        for page in ('index.html', 'only/index.html'):
            (context / 'www' / page).parent.mkdir(parents=True, exist_ok=True)
            (context / 'www' / page).write_text(colour)
        (context / 'Dockerfile').write_text(f'FROM {base_image}\nCOPY www /www\n'
                                            'CMD ["sh", "-c", "exec busybox httpd -f -p \\"$PORT\\" -h /www"]\n')
        tag = f'panda-lb-{colour}:{os.getpid()}'
        docker_client.images.build(path=str(context), tag=tag, rm=True)
        built[colour] = tag
    yield built
    for tag in built.values():
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(tag, force=True)


@pytest.fixture(scope='module')
def aws() -> Iterator[AwsSandbox]:
    with AwsSandbox(timings=TIMINGS) as box:  # no task callbacks: the stand-in starts and stops containers
        yield box


class Stand:
    """One test's AWS world, the stand-in in front of it, and its containers."""

    def __init__(self, aws: AwsSandbox, client: docker.DockerClient) -> None:
        self.clients = sandbox_clients(aws.url)
        self.world: AwsWorld = create_aws_world(self.clients, cluster=f'lb-{next(_serial)}-{os.getpid()}',
                                                service=f'web{next(_serial)}x{int(time.time() * 1000) % 100000}')
        self.tasks = TaskRunner(client=client, registry='unused:0', printer=ProgressPrinter(out=io.StringIO()))
        self.balancer = LoadBalancerStandIn(world=self.world, clients=self.clients, tasks=self.tasks,
                                            printer=ProgressPrinter(out=io.StringIO()), sweep_seconds=0.2).start()
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': self.balancer.url}))
        self.ecs, self.elbv2 = self.clients('ecs'), self.clients('elbv2')

    def close(self) -> None:
        self.balancer.stop()
        self.tasks.stop_all()

    def get(self, path: str = '/', port: int = 80) -> tuple[int, str, dict[str, str]]:
        """(status, body, headers) of a GET of the load balancer's URL through the stand-in."""
        url = f'http://{self.world.dns_name}{"" if port == 80 else f":{port}"}{path}'
        try:
            with self.opener.open(url, timeout=30) as answer:
                return answer.status, answer.read().decode(), dict(answer.headers.items())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers.items())

    def served(self, n: int, path: str = '/') -> collections.Counter[tuple[str, str, str]]:
        """(colour header, body, task definition) of n answers, counted."""
        seen: collections.Counter[tuple[str, str, str]] = collections.Counter()
        for _ in range(n):
            status, body, headers = self.get(path)
            assert status == 200, (status, body)
            seen[headers['X-Panda-Demo-Target'], body, headers['X-Panda-Demo-Task-Definition']] += 1
        return seen

    def register(self, family: str, image: str) -> str:
        return str(self.ecs.register_task_definition(
            family=f'{self.world.service}-{family}', requiresCompatibilities=['FARGATE'], networkMode='awsvpc',
            cpu='256', memory='512', containerDefinitions=[{'name': 'web', 'image': image, 'memory': 512, 'portMappings': [
                {'containerPort': 8080, 'protocol': 'tcp'}]}])['taskDefinition']['taskDefinitionArn'])

    def rule(self, priority: int, conditions: list[dict[str, Any]], weights: dict[str, int]) -> str:
        action = {'Type': 'forward', 'ForwardConfig': {'TargetGroups': [
            {'TargetGroupArn': group, 'Weight': weight} for group, weight in weights.items()]}}
        return str(self.elbv2.create_rule(ListenerArn=self.world.production_listener_arn, Priority=priority,
                                          Conditions=conditions, Actions=[action])['Rules'][0]['RuleArn'])

    def plain_service(self, name: str, target_group: str, task_definition: str) -> None:
        """A service (ECS's rolling controller) whose tasks are in one target group."""
        self.ecs.create_service(cluster=self.world.cluster, serviceName=name, taskDefinition=task_definition,
                                desiredCount=1, launchType='FARGATE', loadBalancers=[
                                    {'targetGroupArn': target_group, 'containerName': 'web', 'containerPort': 8080}])

    def deployment(self, arn: str) -> dict[str, Any]:
        return dict(self.ecs.describe_service_deployments(serviceDeploymentArns=[arn])['serviceDeployments'][0])

    def paused(self, arn: str) -> str:
        """Wait until the deployment waits at a PAUSE hook: the hook's id."""
        def hook() -> str | None:
            d = self.deployment(arn)
            assert d['status'] not in DONE, d
            return next((h['hookId'] for h in d.get('lifecycleHookDetails', []) if h['status'] == 'AWAITING_ACTION'),
                        None)
        return str(wait_for(hook, what=f'{arn} to pause'))

    def go_on(self, arn: str) -> None:
        self.ecs.continue_service_deployment(serviceDeploymentArn=arn, hookId=self.paused(arn), action='CONTINUE')

    def run_through(self, arn: str) -> str:
        while (d := self.deployment(arn))['status'] not in DONE:
            if any(h['status'] == 'AWAITING_ACTION' for h in d.get('lifecycleHookDetails', [])):
                self.go_on(arn)
            time.sleep(0.02)
        return str(d['status'])


@pytest.fixture
def stand(aws: AwsSandbox, docker_client: docker.DockerClient) -> Iterator[Stand]:
    found = Stand(aws, docker_client)
    yield found
    found.close()


def test_a_90_10_rule_splits_100_requests_90_10_and_a_path_rule_wins_over_the_default(
        stand: Stand, images: dict[str, str]) -> None:
    world = stand.world
    stand.plain_service('blue-svc', world.blue_target_group_arn, stand.register('blue', images['blue']))
    stand.plain_service('green-svc', world.green_target_group_arn, stand.register('green', images['green']))
    stand.rule(10, [{'Field': 'path-pattern', 'Values': ['/*']}],
               {world.blue_target_group_arn: 90, world.green_target_group_arn: 10})
    stand.rule(5, [{'Field': 'path-pattern', 'Values': ['/only/*']}], {world.green_target_group_arn: 1})

    seen = stand.served(100)
    assert {(colour, body) : n for (colour, body, _), n in seen.items()} == {('blue', 'blue'): 90, ('green', 'green'): 10}
    assert stand.served(3, '/only/') == {('green', 'green', f'{world.service}-green:1'): 3}  # priority 5 before 10
    status, body, headers = stand.get(port=8080)  # the test listener: no rule, its default action (blue)
    assert (status, body, headers['X-Panda-Demo-Target-Group']) == (200, 'blue', f'{world.service}-blue')
    status, body, _ = stand.get(port=9999)
    assert status == 503 and 'no listener on port 9999' in body


def test_an_ecs_native_canary_answers_from_both_versions_during_the_canary_step_then_only_the_new(
        stand: Stand, images: dict[str, str], docker_client: docker.DockerClient) -> None:
    world, ecs = stand.world, stand.ecs
    production_rule = stand.rule(10, [{'Field': 'path-pattern', 'Values': ['/*']}],
                                 {world.blue_target_group_arn: 100, world.green_target_group_arn: 0})
    v1, v2 = stand.register('app', images['blue']), stand.register('app', images['green'])
    pause = {'targetType': 'PAUSE', 'lifecycleStages': ['PRE_PRODUCTION_TRAFFIC_SHIFT'],
             'timeoutConfiguration': {'timeoutInMinutes': 1440, 'action': 'ROLLBACK'}}
    service = ecs.create_service(
        cluster=world.cluster, serviceName=world.service, taskDefinition=v1, desiredCount=1, launchType='FARGATE',
        deploymentConfiguration={'strategy': 'CANARY', 'bakeTimeInMinutes': 0, 'lifecycleHooks': [pause],
                                 'canaryConfiguration': {'canaryPercent': 10, 'canaryBakeTimeInMinutes': 0}},
        loadBalancers=[{'targetGroupArn': world.blue_target_group_arn, 'containerName': 'web', 'containerPort': 8080,
                        'advancedConfiguration': {'alternateTargetGroupArn': world.green_target_group_arn,
                                                  'productionListenerRule': production_rule,
                                                  'roleArn': world.role_arn}}])['service']
    assert stand.run_through(service['currentServiceDeployment']) == 'SUCCESSFUL'
    v1_name, v2_name = v1.rsplit('/', 1)[-1], v2.rsplit('/', 1)[-1]
    assert stand.served(10) == {('blue', 'blue', v1_name): 10}

    arn = ecs.update_service(cluster=world.cluster, service=world.service,
                             taskDefinition=v2)['service']['currentServiceDeployment']
    stand.go_on(arn)  # before the canary step: production all on v1
    stand.paused(arn)  # before the second step: the canary's 10 % on v2
    assert stand.served(100) == {('blue', 'blue', v1_name): 90, ('green', 'green', v2_name): 10}
    assert stand.tasks.port_of(v1) and stand.tasks.port_of(v2)

    stand.go_on(arn)
    assert stand.run_through(arn) == 'SUCCESSFUL'
    assert stand.served(20) == {('green', 'green', v2_name): 20}
    wait_for(lambda: stand.tasks.port_of(v1) is None, what='the v1 container to be stopped')
    names = [c.name for c in docker_client.containers.list(all=True)]
    assert not any(name.endswith(f'-{world.service}-app-1') for name in names), names
    assert any(name.endswith(f'-{world.service}-app-2') for name in names), names
