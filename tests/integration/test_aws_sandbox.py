"""The AWS stand-in: moto behind a CodeDeploy ECS blue/green deployment simulator.

The operator's stages 4 and 5 (wait for ``Ready``, health-check green, continue
or stop with rollback) are only as trustworthy as this stand-in, so it is driven
here exactly as the operator drives AWS: plain boto3 clients pointed at the
sandbox's URL, against the resources a real rollout has -- a Fargate service
with the ``CODE_DEPLOY`` controller behind an ALB with two target groups, a
production and a test listener, and an ECS blue/green deployment group.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from controller.sandbox.aws import LIFECYCLE_EVENTS, AwsSandbox, HookExecution, Timings
from tests.aws_contract import ContractCheck

REGION = 'ap-northeast-2'
CONTAINER, PORT = 'web', 80
#: Fast enough to keep the module well under a minute, slow enough to observe every state.
TIMINGS = Timings(step_seconds=0.1, minute_seconds=0.3, auto_hook_seconds=0.2)

pytestmark = pytest.mark.timeout(60)
#: Every CodeDeploy and ECS request and answer of the module, checked against botocore's model.
CONTRACT = ContractCheck()


_serial = itertools.count(1)


@dataclasses.dataclass(frozen=True)
class Names:
    """Names unique to one test: moto's state is shared by every sandbox (and moto server) in the process."""

    suffix: str

    @classmethod
    def fresh(cls) -> Names:
        return cls(f'{next(_serial)}x{os.getpid() % 10000}x{int(time.time() * 1000) % 100000}')

    app = property(lambda self: f'app-{self.suffix}')
    group = property(lambda self: f'dg-{self.suffix}')
    quick_group = property(lambda self: f'dg-quick-{self.suffix}')
    cluster = property(lambda self: f'cluster-{self.suffix}')
    service = property(lambda self: f'web-{self.suffix}')
    family = property(lambda self: f'web-{self.suffix}')
    blue = property(lambda self: f'blue-{self.suffix}')
    green = property(lambda self: f'green-{self.suffix}')


@dataclasses.dataclass
class World:
    """The AWS resources of one blue/green service, and clients to look at them."""

    url: str
    names: Names
    codedeploy: Any
    ecs: Any
    elbv2: Any
    blue_tg: str
    green_tg: str
    prod_listener: str
    test_listener: str
    task_definition: str
    green_calls: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    cleanup_calls: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)

    def register(self, image: str) -> str:
        """A new task definition revision running ``image``."""
        return register_task_definition(self.ecs, family=self.names.family, image=image)

    def deploy(self, task_definition: str, *, hooks: dict[str, str] | None = None, group: str | None = None,
               fmt: str = 'json', **kwargs: Any) -> str:
        """CreateDeployment with AppSpec content for ``task_definition``."""
        revision = {'revisionType': 'AppSpecContent',
                    'appSpecContent': {'content': appspec(task_definition, hooks=hooks, fmt=fmt)}}
        return self.codedeploy.create_deployment(applicationName=self.names.app,
                                                 deploymentGroupName=group or self.names.group,
                                                 revision=revision, **kwargs)['deploymentId']

    def info(self, deployment_id: str) -> dict[str, Any]:
        return self.codedeploy.get_deployment(deploymentId=deployment_id)['deploymentInfo']

    def target(self, deployment_id: str) -> dict[str, Any]:
        target_id = f'{self.names.cluster}:{self.names.service}'
        return self.codedeploy.get_deployment_target(deploymentId=deployment_id,
                                                     targetId=target_id)['deploymentTarget']['ecsTarget']

    def events(self, deployment_id: str) -> dict[str, str]:
        return {e['lifecycleEventName']: e['status'] for e in self.target(deployment_id)['lifecycleEvents']}

    def forwards(self, listener_arn: str) -> str:
        """The target group a listener forwards (all or most of) its traffic to."""
        action = self.elbv2.describe_listeners(ListenerArns=[listener_arn])['Listeners'][0]['DefaultActions'][0]
        if action.get('TargetGroupArn'):
            return str(action['TargetGroupArn'])
        groups = action['ForwardConfig']['TargetGroups']
        return str(max(groups, key=lambda g: g['Weight'])['TargetGroupArn'])

    def task_sets(self) -> list[dict[str, Any]]:
        return self.ecs.describe_task_sets(cluster=self.names.cluster, service=self.names.service)['taskSets']

    def wait_status(self, deployment_id: str, *statuses: str, timeout: float = 15) -> dict[str, Any]:
        """Poll GetDeployment until its status is one of ``statuses``."""
        def probe() -> dict[str, Any] | None:
            info = self.info(deployment_id)
            return info if info['status'] in statuses else None

        return wait_for(probe, timeout=timeout, what=f'deployment {deployment_id} to be {"/".join(statuses)}')


def wait_for(probe: Callable[[], Any], *, timeout: float = 15, what: str = 'condition') -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := probe()) is not None and value is not False:
            return value
        time.sleep(0.03)
    raise AssertionError(f'timed out waiting for {what}')


def appspec(task_definition: str, *, hooks: dict[str, str] | None = None, fmt: str = 'json') -> str:
    """ECS AppSpec content, as JSON or YAML."""
    if fmt == 'yaml':
        hook_lines = ''.join(f'  - {event}: "{fn}"\n' for event, fn in (hooks or {}).items())
        return (f'version: 0.0\nResources:\n  - TargetService:\n      Type: AWS::ECS::Service\n'
                f'      Properties:\n        TaskDefinition: "{task_definition}"\n        LoadBalancerInfo:\n'
                f'          ContainerName: "{CONTAINER}"\n          ContainerPort: {PORT}\n'
                + (f'Hooks:\n{hook_lines}' if hook_lines else ''))
    return json.dumps({
        'version': 0.0,
        'Resources': [{'TargetService': {'Type': 'AWS::ECS::Service', 'Properties': {
            'TaskDefinition': task_definition,
            'LoadBalancerInfo': {'ContainerName': CONTAINER, 'ContainerPort': PORT}}}}],
        'Hooks': [{event: fn} for event, fn in (hooks or {}).items()],
    })


@functools.cache
def clients(url: str) -> dict[str, Any]:
    session = boto3.session.Session(aws_access_key_id='sandbox', aws_secret_access_key='sandbox',
                                    region_name=REGION)
    made = {name: session.client(name, endpoint_url=url) for name in ('codedeploy', 'ecs', 'elbv2', 'ec2', 'ecr',
                                                                      'sts')}
    CONTRACT.watch(made['codedeploy'])
    CONTRACT.watch(made['ecs'])
    return made


def register_task_definition(ecs: Any, *, family: str, image: str) -> str:
    return str(ecs.register_task_definition(
        family=family, requiresCompatibilities=['FARGATE'], networkMode='awsvpc', cpu='256', memory='512',
        containerDefinitions=[{'name': CONTAINER, 'image': image, 'memory': 512,
                               'portMappings': [{'containerPort': PORT, 'protocol': 'tcp'}]}],
    )['taskDefinition']['taskDefinitionArn'])


def build_world(url: str) -> World:
    """An ALB with blue/green target groups, prod (80) and test (8080) listeners, a CODE_DEPLOY service and group."""
    n = Names.fresh()
    c = clients(url)
    ec2, elbv2, ecs, codedeploy = c['ec2'], c['elbv2'], c['ecs'], c['codedeploy']
    vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f'10.0.{i}.0/24',
                                 AvailabilityZone=f'{REGION}{zone}')['Subnet']['SubnetId']
               for i, zone in ((1, 'a'), (2, 'b'))]
    group = ec2.create_security_group(GroupName=n.service, Description='web', VpcId=vpc)['GroupId']
    lb = elbv2.create_load_balancer(Name=n.service, Subnets=subnets, SecurityGroups=[group], Type='application',
                                    Scheme='internet-facing')['LoadBalancers'][0]['LoadBalancerArn']
    tgs = [elbv2.create_target_group(Name=name, Protocol='HTTP', Port=PORT, VpcId=vpc, TargetType='ip',
                                     HealthCheckPath='/')['TargetGroups'][0]['TargetGroupArn']
           for name in (n.blue, n.green)]
    prod = elbv2.create_listener(LoadBalancerArn=lb, Protocol='HTTP', Port=80,
                                 DefaultActions=[{'Type': 'forward', 'TargetGroupArn': tgs[0]}])
    test = elbv2.create_listener(LoadBalancerArn=lb, Protocol='HTTP', Port=8080,
                                 DefaultActions=[{'Type': 'forward', 'TargetGroupArn': tgs[0]}])
    ecs.create_cluster(clusterName=n.cluster)
    task_definition = register_task_definition(ecs, family=n.family, image='registry.local/web:v1')
    ecs.create_service(
        cluster=n.cluster, serviceName=n.service, taskDefinition=task_definition, desiredCount=2, launchType='FARGATE',
        deploymentController={'type': 'CODE_DEPLOY'},
        loadBalancers=[{'targetGroupArn': tgs[0], 'containerName': CONTAINER, 'containerPort': PORT}],
        networkConfiguration={'awsvpcConfiguration': {'subnets': subnets, 'securityGroups': [group],
                                                      'assignPublicIp': 'ENABLED'}})
    codedeploy.create_application(applicationName=n.app, computePlatform='ECS')
    prod_arn, test_arn = prod['Listeners'][0]['ListenerArn'], test['Listeners'][0]['ListenerArn']
    for name, wait_minutes in ((n.group, 120), (n.quick_group, 2)):
        codedeploy.create_deployment_group(**deployment_group_request(
            n, name=name, wait_minutes=wait_minutes, prod=prod_arn, test=test_arn))
    return World(url=url, names=n, codedeploy=codedeploy, ecs=ecs, elbv2=elbv2, blue_tg=tgs[0], green_tg=tgs[1],
                 prod_listener=prod_arn, test_listener=test_arn, task_definition=task_definition)


def deployment_group_request(n: Names, *, name: str, wait_minutes: int, prod: str, test: str) -> dict[str, Any]:
    return dict(
        applicationName=n.app, deploymentGroupName=name,
        serviceRoleArn='arn:aws:iam::123456789012:role/ecsCodeDeployRole',
        deploymentStyle={'deploymentType': 'BLUE_GREEN', 'deploymentOption': 'WITH_TRAFFIC_CONTROL'},
        blueGreenDeploymentConfiguration={
            'deploymentReadyOption': {'actionOnTimeout': 'STOP_DEPLOYMENT', 'waitTimeInMinutes': wait_minutes},
            'terminateBlueInstancesOnDeploymentSuccess': {'action': 'TERMINATE', 'terminationWaitTimeInMinutes': 0},
        },
        loadBalancerInfo={'targetGroupPairInfoList': [{
            'targetGroups': [{'name': n.blue}, {'name': n.green}],
            'prodTrafficRoute': {'listenerArns': [prod]},
            'testTrafficRoute': {'listenerArns': [test]},
        }]},
        ecsServices=[{'serviceName': n.service, 'clusterName': n.cluster}],
        autoRollbackConfiguration={'enabled': True, 'events': ['DEPLOYMENT_FAILURE', 'DEPLOYMENT_STOP_ON_REQUEST']},
    )


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response['Error']['Code'])


@dataclasses.dataclass
class Callbacks:
    """What the sandbox's ``on_green_task_set`` and ``on_cleanup`` were called with."""

    green: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    cleanup: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)


def serve(*, auto_hooks: bool = False) -> Iterator[tuple[AwsSandbox, Callbacks]]:
    """A started sandbox, and the record of its callbacks."""
    calls = Callbacks()
    with AwsSandbox(port=0, timings=TIMINGS, auto_hooks=auto_hooks,
                    on_green_task_set=lambda *a: calls.green.append(a),
                    on_cleanup=lambda *a: calls.cleanup.append(a)) as box:
        yield box, calls


def world_in(box: AwsSandbox, calls: Callbacks) -> World:
    w = build_world(box.url)
    w.green_calls, w.cleanup_calls = calls.green, calls.cleanup
    return w


@pytest.fixture(scope='module')
def served() -> Iterator[tuple[AwsSandbox, Callbacks]]:
    yield from serve()


@pytest.fixture
def sandbox(served: tuple[AwsSandbox, Callbacks]) -> Iterator[AwsSandbox]:
    """The module's sandbox with no deployments or recorded callbacks (moto is left alone: other modules share it);
    what it was asked and answered checked against botocore's model afterwards."""
    box, calls = served
    box.simulator.reset()
    calls.green.clear()
    calls.cleanup.clear()
    yield box
    CONTRACT.assert_clean()


@pytest.fixture
def world(sandbox: AwsSandbox, served: tuple[AwsSandbox, Callbacks]) -> World:
    return world_in(*served)


@pytest.fixture
def auto_world(sandbox: AwsSandbox) -> Iterator[World]:
    """A second sandbox, with auto_hooks (``sandbox`` first quiets the module's one: they share moto)."""
    for box, calls in serve(auto_hooks=True):
        yield world_in(box, calls)


def hook_for(sandbox: AwsSandbox, deployment_id: str, event: str) -> HookExecution:
    return wait_for(lambda: next((h for h in sandbox.pending_hooks()
                                  if h.deployment_id == deployment_id and h.lifecycle_event == event), None),
                    what=f'the {event} hook of {deployment_id}')


# ------------------------------------------------------------------------------------------------


def test_deployment_goes_created_inprogress_ready_with_events_in_order(world: World) -> None:
    v2 = world.register('registry.local/web:v2')
    deployment_id = world.deploy(v2)
    assert deployment_id.startswith('d-') and len(deployment_id) == 11
    seen = [world.info(deployment_id)['status']]
    while seen[-1] != 'Ready':
        status = world.info(deployment_id)['status']
        if status != seen[-1]:
            seen.append(status)
        assert status in ('Created', 'InProgress', 'Ready'), seen
        time.sleep(0.02)
    assert seen == ['Created', 'InProgress', 'Ready']

    info = world.info(deployment_id)
    assert info['computePlatform'] == 'ECS' and info['creator'] == 'user'
    assert info['deploymentConfigName'] == 'CodeDeployDefault.ECSAllAtOnce'
    assert info['deploymentOverview']['Ready'] == 1
    assert info['createTime'] <= info['startTime']
    assert world.codedeploy.list_deployment_targets(deploymentId=deployment_id)['targetIds'] == [
        f'{world.names.cluster}:{world.names.service}']
    target = world.target(deployment_id)
    assert target['status'] == 'Ready'
    assert target['targetArn'].endswith(f':service/{world.names.cluster}/{world.names.service}')
    events = target['lifecycleEvents']
    assert [e['lifecycleEventName'] for e in events] == list(LIFECYCLE_EVENTS)
    assert [e['status'] for e in events] == ['Succeeded'] * 5 + ['Pending'] * 3
    starts = [e['startTime'] for e in events[:5]]
    assert starts == sorted(starts) and all(e['endTime'] >= e['startTime'] for e in events[:5])

    # Test traffic on green, production still on blue; two task sets, blue primary.
    assert world.forwards(world.test_listener) == world.green_tg
    assert world.forwards(world.prod_listener) == world.blue_tg
    by_label = {ts['taskSetLabel']: ts for ts in target['taskSetsInfo']}
    assert by_label['Blue']['targetGroup']['name'] == world.names.blue and by_label['Blue']['trafficWeight'] == 100
    assert by_label['Green']['targetGroup']['name'] == world.names.green
    assert by_label['Green']['trafficWeight'] == 0
    task_sets = {ts['status']: ts for ts in world.task_sets()}
    assert task_sets['PRIMARY']['taskDefinition'] == world.task_definition
    assert task_sets['ACTIVE']['taskDefinition'] == v2
    assert task_sets['ACTIVE']['loadBalancers'][0]['targetGroupArn'] == world.green_tg
    assert world.green_calls == [(v2, 'registry.local/web:v2', PORT)]

    # Still the group's one active deployment: a second one is refused until this one ends.
    with pytest.raises(ClientError) as exc:
        world.deploy(v2)
    assert error_code(exc) == 'DeploymentLimitExceededException'
    assert world.codedeploy.list_deployments(applicationName=world.names.app, deploymentGroupName=world.names.group,
                                             includeOnlyStatuses=['Ready'])['deployments'] == [deployment_id]
    batch = world.codedeploy.batch_get_deployments(deploymentIds=[deployment_id, 'd-UNKNOWN00'])['deploymentsInfo']
    assert [d['deploymentId'] for d in batch] == [deployment_id]


def test_continue_reroutes_production_to_green_and_succeeds(world: World) -> None:
    v2 = world.register('registry.local/web:v2')
    deployment_id = world.deploy(v2, fmt='yaml')
    world.wait_status(deployment_id, 'Ready')
    with pytest.raises(ClientError) as exc:
        world.codedeploy.continue_deployment(deploymentId=deployment_id, deploymentWaitType='TERMINATION_WAIT')
    assert error_code(exc) == 'DeploymentIsNotInReadyStateException'

    world.codedeploy.continue_deployment(deploymentId=deployment_id, deploymentWaitType='READY_WAIT')
    info = world.wait_status(deployment_id, 'Succeeded', 'Failed', 'Stopped')
    assert info['status'] == 'Succeeded' and 'errorInformation' not in info
    assert info['completeTime'] >= info['startTime']
    assert set(world.events(deployment_id).values()) == {'Succeeded'}
    assert world.target(deployment_id)['status'] == 'Succeeded'

    assert world.forwards(world.prod_listener) == world.green_tg
    assert world.forwards(world.test_listener) == world.green_tg
    [task_set] = world.task_sets()  # blue terminated (terminationWaitTimeInMinutes 0)
    assert task_set['status'] == 'PRIMARY' and task_set['taskDefinition'] == v2
    service = world.ecs.describe_services(cluster=world.names.cluster, services=[world.names.service])['services'][0]
    assert service['taskDefinition'] == v2
    assert world.cleanup_calls == [(world.task_definition, 'registry.local/web:v1', PORT)]

    group = world.codedeploy.get_deployment_group(applicationName=world.names.app,
                                                  deploymentGroupName=world.names.group)
    group_info = group['deploymentGroupInfo']
    assert group_info['lastSuccessfulDeployment']['deploymentId'] == deployment_id
    assert group_info['deploymentConfigName'] == 'CodeDeployDefault.ECSAllAtOnce'
    with pytest.raises(ClientError) as exc:
        world.codedeploy.stop_deployment(deploymentId=deployment_id)
    assert error_code(exc) == 'DeploymentAlreadyCompletedException'


def test_stop_with_rollback_keeps_production_on_blue(world: World) -> None:
    v2 = world.register('registry.local/web:v2')
    deployment_id = world.deploy(v2)
    world.wait_status(deployment_id, 'Ready')
    answer = world.codedeploy.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=True)
    assert answer['status'] == 'Succeeded'

    info = world.info(deployment_id)
    assert info['status'] == 'Stopped'
    assert info['errorInformation']['code'] == 'MANUAL_STOP'
    assert world.forwards(world.prod_listener) == world.blue_tg
    assert world.forwards(world.test_listener) == world.blue_tg
    [task_set] = world.task_sets()
    assert task_set['status'] == 'PRIMARY' and task_set['taskDefinition'] == world.task_definition
    wait_for(lambda: world.cleanup_calls == [(v2, 'registry.local/web:v2', PORT)], what='on_cleanup for green')
    events = world.events(deployment_id)
    assert [events[e] for e in LIFECYCLE_EVENTS[5:]] == ['Skipped'] * 3

    rollback = world.info(info['rollbackInfo']['rollbackDeploymentId'])
    assert rollback['creator'] == 'codeDeployRollback' and rollback['status'] == 'Succeeded'
    assert rollback['rollbackInfo']['rollbackTriggeringDeploymentId'] == deployment_id
    with pytest.raises(ClientError) as exc:
        world.codedeploy.continue_deployment(deploymentId=deployment_id)
    assert error_code(exc) == 'DeploymentAlreadyCompletedException'


def test_ready_wait_times_out_into_stopped(world: World) -> None:
    deployment_id = world.deploy(world.register('registry.local/web:v2'), group=world.names.quick_group)
    world.wait_status(deployment_id, 'Ready')
    info = world.wait_status(deployment_id, 'Stopped', 'Failed', 'Succeeded', timeout=5)
    assert info['status'] == 'Stopped' and info['errorInformation']['code'] == 'TIMEOUT'
    assert world.forwards(world.prod_listener) == world.blue_tg
    assert world.forwards(world.test_listener) == world.blue_tg
    assert len(world.task_sets()) == 1


def test_hooks_hold_the_deployment_until_their_status_is_put(sandbox: AwsSandbox, world: World) -> None:
    hooks = {'AfterAllowTestTraffic': 'check-green', 'BeforeAllowTraffic': 'pre-traffic'}
    deployment_id = world.deploy(world.register('registry.local/web:v2'), hooks=hooks)
    execution = hook_for(sandbox, deployment_id, 'AfterAllowTestTraffic')
    assert execution.function_name == 'check-green'
    time.sleep(5 * TIMINGS.step_seconds)  # long enough for the deployment to have gone on, had it not waited
    assert world.info(deployment_id)['status'] == 'InProgress'
    assert world.events(deployment_id)['AfterAllowTestTraffic'] == 'InProgress'
    with urllib.request.urlopen(f'{sandbox.url}/_sandbox/codedeploy/hooks') as response:
        published = json.load(response)['hookExecutions']
    assert [h['lifecycleEventHookExecutionId'] for h in published] == [execution.execution_id]

    cd = world.codedeploy
    with pytest.raises(ClientError) as exc:
        cd.put_lifecycle_event_hook_execution_status(deploymentId=deployment_id,
                                                     lifecycleEventHookExecutionId='not-an-id', status='Succeeded')
    assert error_code(exc) == 'InvalidLifecycleEventHookExecutionIdException'
    answer = cd.put_lifecycle_event_hook_execution_status(
        deploymentId=deployment_id, lifecycleEventHookExecutionId=execution.execution_id, status='Succeeded')
    assert answer['lifecycleEventHookExecutionId'] == execution.execution_id
    with pytest.raises(ClientError) as exc:
        cd.put_lifecycle_event_hook_execution_status(
            deploymentId=deployment_id, lifecycleEventHookExecutionId=execution.execution_id, status='Succeeded')
    assert error_code(exc) == 'LifecycleEventAlreadyCompletedException'
    world.wait_status(deployment_id, 'Ready')

    cd.continue_deployment(deploymentId=deployment_id)
    before = hook_for(sandbox, deployment_id, 'BeforeAllowTraffic')
    time.sleep(5 * TIMINGS.step_seconds)
    assert world.events(deployment_id)['BeforeAllowTraffic'] == 'InProgress'
    assert world.forwards(world.prod_listener) == world.blue_tg  # no traffic moves before the hook passes
    cd.put_lifecycle_event_hook_execution_status(
        deploymentId=deployment_id, lifecycleEventHookExecutionId=before.execution_id, status='Succeeded')
    assert world.wait_status(deployment_id, 'Succeeded', 'Failed', 'Stopped')['status'] == 'Succeeded'
    assert world.forwards(world.prod_listener) == world.green_tg


def test_failed_hook_fails_the_deployment_and_rolls_back(sandbox: AwsSandbox, world: World) -> None:
    v2 = world.register('registry.local/web:v2')
    deployment_id = world.deploy(v2, hooks={'AfterAllowTraffic': 'post-traffic'})
    world.wait_status(deployment_id, 'Ready')
    world.codedeploy.continue_deployment(deploymentId=deployment_id)
    execution = hook_for(sandbox, deployment_id, 'AfterAllowTraffic')
    assert world.forwards(world.prod_listener) == world.green_tg  # traffic moved; the hook checks it
    world.codedeploy.put_lifecycle_event_hook_execution_status(
        deploymentId=deployment_id, lifecycleEventHookExecutionId=execution.execution_id, status='Failed')

    info = world.wait_status(deployment_id, 'Failed', 'Succeeded', 'Stopped')
    assert info['status'] == 'Failed'
    assert info['errorInformation']['code'] == 'HOOK_EXECUTION_FAILURE'
    assert 'post-traffic' in info['errorInformation']['message']
    assert world.events(deployment_id)['AfterAllowTraffic'] == 'Failed'
    assert world.target(deployment_id)['status'] == 'Failed'
    assert world.forwards(world.prod_listener) == world.blue_tg  # back on blue
    assert world.forwards(world.test_listener) == world.blue_tg
    [task_set] = world.task_sets()
    assert task_set['status'] == 'PRIMARY' and task_set['taskDefinition'] == world.task_definition
    assert info['rollbackInfo']['rollbackDeploymentId']


def test_second_deployment_swaps_the_colours(world: World) -> None:
    first = world.deploy(world.register('registry.local/web:v2'))
    world.wait_status(first, 'Ready')
    world.codedeploy.continue_deployment(deploymentId=first)
    world.wait_status(first, 'Succeeded')
    assert world.forwards(world.prod_listener) == world.green_tg

    v3 = world.register('registry.local/web:v3')
    second = world.deploy(v3)
    world.wait_status(second, 'Ready')
    assert world.info(second)['previousRevision'] == world.info(first)['revision']
    by_label = {ts['taskSetLabel']: ts for ts in world.target(second)['taskSetsInfo']}
    assert by_label['Blue']['targetGroup']['name'] == world.names.green  # yesterday's green is today's blue
    assert by_label['Green']['targetGroup']['name'] == world.names.blue
    assert world.forwards(world.test_listener) == world.blue_tg
    assert world.forwards(world.prod_listener) == world.green_tg
    world.codedeploy.continue_deployment(deploymentId=second)
    world.wait_status(second, 'Succeeded')
    assert world.forwards(world.prod_listener) == world.blue_tg
    [task_set] = world.task_sets()
    assert task_set['taskDefinition'] == v3
    listed = world.codedeploy.list_deployments(applicationName=world.names.app,
                                               deploymentGroupName=world.names.group)['deployments']
    assert listed == [second, first]


def test_canary_config_shifts_traffic_in_two_steps(world: World) -> None:
    deployment_id = world.deploy(world.register('registry.local/web:v2'),
                                 deploymentConfigName='CodeDeployDefault.ECSCanary10Percent5Minutes')
    world.wait_status(deployment_id, 'Ready')
    world.codedeploy.continue_deployment(deploymentId=deployment_id)

    def weights() -> dict[str, int] | None:
        action = world.elbv2.describe_listeners(ListenerArns=[world.prod_listener])['Listeners'][0][
            'DefaultActions'][0]
        groups = (action.get('ForwardConfig') or {}).get('TargetGroups')
        return {g['TargetGroupArn']: g['Weight'] for g in groups} if groups and len(groups) == 2 else None

    canary = wait_for(weights, what='the canary split')
    assert canary == {world.blue_tg: 90, world.green_tg: 10}
    assert world.info(deployment_id)['status'] == 'InProgress'
    world.wait_status(deployment_id, 'Succeeded', timeout=15)
    assert world.forwards(world.prod_listener) == world.green_tg


def test_unknown_deployment_is_refused_in_aws_shape(world: World) -> None:
    cd = world.codedeploy
    for call in (lambda: cd.get_deployment(deploymentId='d-NOSUCH123'),
                 lambda: cd.continue_deployment(deploymentId='d-NOSUCH123'),
                 lambda: cd.stop_deployment(deploymentId='d-NOSUCH123'),
                 lambda: cd.list_deployment_targets(deploymentId='d-NOSUCH123')):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == 'DeploymentDoesNotExistException'
        assert exc.value.response['ResponseMetadata']['HTTPStatusCode'] == 400
        assert 'd-NOSUCH123' in exc.value.response['Error']['Message']


@pytest.mark.parametrize('content, fragment', [
    ('{not: [json', 'neither JSON nor YAML'),
    ('version: 0.0\nResources: []\n', 'AWS::ECS::Service'),
    (json.dumps({'version': 0.0, 'Resources': [{'T': {'Type': 'AWS::ECS::Service', 'Properties': {
        'LoadBalancerInfo': {'ContainerName': 'web', 'ContainerPort': 80}}}}]}), 'TaskDefinition'),
    (json.dumps({'version': 0.0, 'Resources': [{'T': {'Type': 'AWS::ECS::Service', 'Properties': {
        'TaskDefinition': 'web:1', 'LoadBalancerInfo': {'ContainerName': 'web', 'ContainerPort': 80}}}}],
        'Hooks': [{'AllowTraffic': 'fn'}]}), 'AllowTraffic is not a lifecycle event'),
])
def test_bad_appspec_is_refused(world: World, content: str, fragment: str) -> None:
    with pytest.raises(ClientError) as exc:
        world.codedeploy.create_deployment(
            applicationName=world.names.app, deploymentGroupName=world.names.group,
            revision={'revisionType': 'AppSpecContent', 'appSpecContent': {'content': content}})
    assert error_code(exc) == 'InvalidRevisionException'
    assert fragment in exc.value.response['Error']['Message']


def test_bad_requests_are_refused(world: World) -> None:
    cd, v2 = world.codedeploy, world.register('registry.local/web:v2')
    with pytest.raises(ClientError) as exc:
        world.deploy(v2, deploymentConfigName='CodeDeployDefault.ECSNoSuchThing')
    assert error_code(exc) == 'DeploymentConfigDoesNotExistException'
    with pytest.raises(ClientError) as exc:
        world.deploy(v2, group='no-such-group')
    assert error_code(exc) == 'DeploymentGroupDoesNotExistException'
    with pytest.raises(ClientError) as exc:
        cd.create_deployment(applicationName=world.names.app, deploymentGroupName=world.names.group, revision={
            'revisionType': 'AppSpecContent', 'appSpecContent': {'content': appspec(v2), 'sha256': '0' * 64}})
    assert error_code(exc) == 'InvalidRevisionException'
    # A deployment group for a service that CodeDeploy cannot control is refused, as AWS refuses it.
    world.ecs.create_service(cluster=world.names.cluster, serviceName='rolling', taskDefinition=v2, desiredCount=1,
                             launchType='FARGATE')
    request = deployment_group_request(world.names, name='rolling-dg', wait_minutes=5, prod=world.prod_listener,
                                       test=world.test_listener)
    request['ecsServices'] = [{'serviceName': 'rolling', 'clusterName': world.names.cluster}]
    with pytest.raises(ClientError) as exc:
        cd.create_deployment_group(**request)
    assert error_code(exc) == 'InvalidECSServiceException'


def test_missing_task_definition_fails_at_install(world: World) -> None:
    missing = world.task_definition.rsplit(':', 1)[0] + ':99'
    deployment_id = world.deploy(missing)
    info = world.wait_status(deployment_id, 'Failed', 'Succeeded', 'Stopped', 'Ready')
    assert info['status'] == 'Failed' and info['errorInformation']['code'] == 'ECS_UPDATE_ERROR'
    assert world.events(deployment_id)['Install'] == 'Failed'
    assert 'rollbackInfo' not in info  # nothing had changed
    assert world.forwards(world.prod_listener) == world.blue_tg


def test_auto_hooks_report_success_on_their_own(auto_world: World) -> None:
    world = auto_world
    hooks = {event: f'fn-{event}' for event in ('BeforeInstall', 'AfterInstall', 'AfterAllowTestTraffic',
                                                'BeforeAllowTraffic', 'AfterAllowTraffic')}
    deployment_id = world.deploy(world.register('registry.local/web:v2'), hooks=hooks)
    world.wait_status(deployment_id, 'Ready')
    world.codedeploy.continue_deployment(deploymentId=deployment_id)
    assert world.wait_status(deployment_id, 'Succeeded', 'Failed', 'Stopped')['status'] == 'Succeeded'


def test_plain_moto_services_pass_through(sandbox: AwsSandbox) -> None:
    c = clients(sandbox.url)
    name = Names.fresh().service
    repository = c['ecr'].create_repository(repositoryName=name)['repository']
    assert repository['repositoryUri'].endswith(f'/{name}')
    assert c['sts'].get_caller_identity()['Account'] == '123456789012'
    c['codedeploy'].create_application(applicationName=name, computePlatform='ECS')
    assert c['codedeploy'].get_application(applicationName=name)['application']['computePlatform'] == 'ECS'
    config = c['codedeploy'].get_deployment_config(
        deploymentConfigName='CodeDeployDefault.ECSLinear10PercentEvery1Minutes')
    assert config['deploymentConfigInfo']['trafficRoutingConfig']['timeBasedLinear'] == {
        'linearPercentage': 10, 'linearInterval': 1}


def test_cli_serves_with_auto_hooks_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, '-m', 'controller.sandbox.aws', '--port', '0', '--auto-hooks', '--step-seconds', '0.1'],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith('listening on http://127.0.0.1:'), line
        world = build_world(line.removeprefix('listening on '))
        deployment_id = world.deploy(world.register('registry.local/web:v2'),
                                     hooks={'AfterAllowTestTraffic': 'check', 'AfterAllowTraffic': 'post'})
        world.wait_status(deployment_id, 'Ready')
        world.codedeploy.continue_deployment(deploymentId=deployment_id)
        assert world.wait_status(deployment_id, 'Succeeded', 'Failed', 'Stopped')['status'] == 'Succeeded'
        assert world.forwards(world.prod_listener) == world.green_tg
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
