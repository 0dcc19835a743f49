"""The AWS sandbox's ECS service deployments (BLUE_GREEN, CANARY, LINEAR), driven with boto3 as the operator will.

Each test builds the resources AWS documents for an ECS-native blue/green
service -- an ALB whose production (80) and test (8080) listeners each have a
rule forwarding to both target groups (weights 100 and 0) -- creates the
service with a native strategy, and updates it to a new task definition. PAUSE
hooks hold a deployment at a stage so that what it has done so far (listener
rule weights through ELBv2 ``DescribeRules``, revisions' tasks and traffic
through ``DescribeServiceDeployments``) is looked at deterministically, not
raced. Every request and answer of the ECS client is checked against
botocore's model (tests/aws_contract.py).
"""
from __future__ import annotations

import dataclasses
import datetime
import itertools
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from controller.sandbox.aws import AwsSandbox, Timings
from controller.sandbox.aws.ecs_hooks import LambdaInvocation
from tests.aws_contract import ContractCheck

REGION = 'eu-west-1'
CONTAINER, PORT = 'web', 80
ROLE = 'arn:aws:iam::123456789012:role/ecsInfrastructureRoleForLoadBalancers'
LAMBDA_ROLE = 'arn:aws:iam::123456789012:role/ecsLambdaHookRole'
#: One step a twentieth of a second, one minute of bake time a fifth.
TIMINGS = Timings(step_seconds=0.05, minute_seconds=0.2, auto_hook_seconds=0.05)
DONE = ('SUCCESSFUL', 'STOPPED', 'ROLLBACK_SUCCESSFUL', 'ROLLBACK_FAILED')
EVERY_PAUSE_STAGE = ['PRE_SCALE_UP', 'POST_SCALE_UP', 'POST_TEST_TRAFFIC_SHIFT', 'PRE_PRODUCTION_TRAFFIC_SHIFT',
                     'POST_PRODUCTION_TRAFFIC_SHIFT']

pytestmark = pytest.mark.timeout(60)
_serial = itertools.count(1)


@dataclasses.dataclass
class Sandbox:
    """The module's sandbox, what its callbacks saw, and the Lambda functions it plays."""

    box: AwsSandbox
    contract: ContractCheck
    started: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    stopped: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    functions: dict[str, Callable[[LambdaInvocation], Mapping[str, Any]]] = dataclasses.field(default_factory=dict)
    invocations: list[LambdaInvocation] = dataclasses.field(default_factory=list)
    clients: dict[str, Any] = dataclasses.field(default_factory=dict)

    def client(self, name: str) -> Any:
        """One boto3 client per service for the module; ECS's checked against the model."""
        if name not in self.clients:
            session = boto3.session.Session(aws_access_key_id='sandbox', aws_secret_access_key='sandbox',
                                            region_name=REGION)
            self.clients[name] = session.client(name, endpoint_url=self.box.url)
            if name == 'ecs':
                self.contract.watch(self.clients[name])
        return self.clients[name]

    def start_tasks(self, task_definition: str, image: str, port: int) -> None:
        if 'broken' in image:
            raise RuntimeError(f'CannotPullContainerError: pull image manifest has been retried: {image}')
        self.started.append((task_definition, image, port))

    def invoke(self, invocation: LambdaInvocation) -> Mapping[str, Any]:
        self.invocations.append(invocation)
        return self.functions[invocation.function_arn](invocation)


@pytest.fixture(scope='module')
def sandbox() -> Iterator[Sandbox]:
    holder: list[Sandbox] = []
    with AwsSandbox(timings=TIMINGS, on_green_task_set=lambda *a: holder[0].start_tasks(*a),
                    on_cleanup=lambda *a: holder[0].stopped.append(a),
                    on_lambda_hook=lambda invocation: holder[0].invoke(invocation)) as box:
        holder.append(Sandbox(box=box, contract=ContractCheck()))
        yield holder[0]


@pytest.fixture
def world(sandbox: Sandbox) -> Iterator[World]:
    """A fresh ALB, target groups, rules and cluster (moto's state is shared by the module); the contract checked."""
    sandbox.box.ecs_simulator.reset()
    for seen in (sandbox.started, sandbox.stopped, sandbox.invocations):
        seen.clear()
    sandbox.functions.clear()
    yield build_world(sandbox)
    sandbox.contract.assert_clean()


@dataclasses.dataclass
class World:
    """One service's resources, and boto3 clients to drive and look at them."""

    sandbox: Sandbox
    ecs: Any
    elbv2: Any
    suffix: str
    blue_tg: str
    green_tg: str
    prod_rule: str
    test_rule: str
    subnets: list[str]

    cluster = property(lambda self: f'cluster-{self.suffix}')
    service = property(lambda self: f'web-{self.suffix}')

    def register(self, image: str) -> str:
        return str(self.ecs.register_task_definition(
            family=f'web-{self.suffix}', requiresCompatibilities=['FARGATE'], networkMode='awsvpc', cpu='256',
            memory='512', containerDefinitions=[{'name': CONTAINER, 'image': image, 'memory': 512,
                                                 'portMappings': [{'containerPort': PORT, 'protocol': 'tcp'}]}],
        )['taskDefinition']['taskDefinitionArn'])

    def balancers(self, *, test: bool = True) -> list[dict[str, Any]]:
        advanced = {'alternateTargetGroupArn': self.green_tg, 'productionListenerRule': self.prod_rule,
                    'roleArn': ROLE, **({'testListenerRule': self.test_rule} if test else {})}
        return [{'targetGroupArn': self.blue_tg, 'containerName': CONTAINER, 'containerPort': PORT,
                 'advancedConfiguration': advanced}]

    def create(self, config: dict[str, Any], *, image: str = 'registry.local/web:v1', **extra: Any) -> dict[str, Any]:
        """CreateService with this deploymentConfiguration; the service as ECS answers it."""
        request = dict(cluster=self.cluster, serviceName=self.service, taskDefinition=self.register(image),
                       desiredCount=2, launchType='FARGATE', deploymentConfiguration=config,
                       loadBalancers=self.balancers())
        return dict(self.ecs.create_service(**{**request, **extra})['service'])

    def update(self, image: str, **extra: Any) -> str:
        """UpdateService to a new task definition running ``image``: the service deployment it started."""
        service = self.ecs.update_service(cluster=self.cluster, service=self.service,
                                          taskDefinition=self.register(image), **extra)['service']
        return str(service['currentServiceDeployment'])

    def deployment(self, arn: str) -> dict[str, Any]:
        return dict(self.ecs.describe_service_deployments(serviceDeploymentArns=[arn])['serviceDeployments'][0])

    def wait(self, arn: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        return wait_for(lambda: (d := self.deployment(arn))['status'] in (statuses or DONE) and d,
                        timeout=timeout, what=f'{arn} to be {statuses or DONE}')

    def paused(self, arn: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Wait until the deployment waits at a PAUSE hook: (the deployment, the hook)."""
        def probe() -> tuple[dict[str, Any], dict[str, Any]] | None:
            d = self.deployment(arn)
            assert d['status'] not in DONE, d
            hook = next((h for h in d.get('lifecycleHookDetails', []) if h['status'] == 'AWAITING_ACTION'), None)
            return (d, hook) if hook else None
        return wait_for(probe, what=f'{arn} to pause at a hook')

    def go_on(self, arn: str, action: str = 'CONTINUE') -> tuple[dict[str, Any], dict[str, Any]]:
        """Continue (or roll back) at the next PAUSE hook; (the deployment, the hook) as they were."""
        d, hook = self.paused(arn)
        answer = self.ecs.continue_service_deployment(serviceDeploymentArn=arn, hookId=hook['hookId'], action=action)
        assert answer['serviceDeploymentArn'] == arn
        return d, hook

    def run_through(self, arn: str) -> dict[str, Any]:
        """Continue at every PAUSE hook until the deployment ends."""
        while (d := self.deployment(arn))['status'] not in DONE:
            if any(h['status'] == 'AWAITING_ACTION' for h in d.get('lifecycleHookDetails', [])):
                self.go_on(arn)
            time.sleep(0.01)
        return d

    def green_share(self, rule: str) -> float:
        """The share of a listener rule's traffic (percent) that goes to the alternate (green) target group."""
        groups = self.elbv2.describe_rules(RuleArns=[rule])['Rules'][0]['Actions'][0]['ForwardConfig']['TargetGroups']
        weights = {g['TargetGroupArn']: g['Weight'] for g in groups}
        return 100.0 * weights.get(self.green_tg, 0) / sum(weights.values())

    def weights(self, rule: str) -> dict[str, int]:
        groups = self.elbv2.describe_rules(RuleArns=[rule])['Rules'][0]['Actions'][0]['ForwardConfig']['TargetGroups']
        return {g['TargetGroupArn']: g['Weight'] for g in groups}

    def described(self) -> dict[str, Any]:
        return dict(self.ecs.describe_services(cluster=self.cluster, services=[self.service])['services'][0])


def wait_for(probe: Callable[[], Any], *, timeout: float = 20, what: str = 'condition') -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := probe()) is not None and value is not False:
            return value
        time.sleep(0.01)
    raise AssertionError(f'timed out waiting for {what}')


def build_world(sandbox: Sandbox) -> World:
    suffix = f'{next(_serial)}x{os.getpid() % 10000}x{int(time.time() * 1000) % 100000}'
    ec2, elbv2, ecs = (sandbox.client(name) for name in ('ec2', 'elbv2', 'ecs'))
    vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f'10.0.{i}.0/24', AvailabilityZone=f'{REGION}{zone}')[
        'Subnet']['SubnetId'] for i, zone in ((1, 'a'), (2, 'b'))]
    lb = elbv2.create_load_balancer(Name=f'web-{suffix}', Subnets=subnets, Type='application')[
        'LoadBalancers'][0]['LoadBalancerArn']
    blue, green = (elbv2.create_target_group(Name=f'{colour}-{suffix}', Protocol='HTTP', Port=PORT, VpcId=vpc,
                                             TargetType='ip')['TargetGroups'][0]['TargetGroupArn']
                   for colour in ('blue', 'green'))
    forward = {'Type': 'forward', 'ForwardConfig': {'TargetGroups': [
        {'TargetGroupArn': blue, 'Weight': 100}, {'TargetGroupArn': green, 'Weight': 0}]}}
    rules = []
    for port in (80, 8080):
        listener = elbv2.create_listener(LoadBalancerArn=lb, Protocol='HTTP', Port=port, DefaultActions=[
            {'Type': 'fixed-response', 'FixedResponseConfig': {'StatusCode': '404'}}])['Listeners'][0]['ListenerArn']
        rules.append(elbv2.create_rule(ListenerArn=listener, Priority=1, Actions=[forward], Conditions=[
            {'Field': 'path-pattern', 'Values': ['/*']}])['Rules'][0]['RuleArn'])
    world = World(sandbox=sandbox, ecs=ecs, elbv2=elbv2, suffix=suffix, blue_tg=blue, green_tg=green,
                  prod_rule=rules[0], test_rule=rules[1], subnets=subnets)
    ecs.create_cluster(clusterName=world.cluster)
    return world


def pause_at(*stages: str, timeout_minutes: int = 1440, action: str = 'ROLLBACK') -> dict[str, Any]:
    return {'targetType': 'PAUSE', 'lifecycleStages': list(stages),
            'timeoutConfiguration': {'timeoutInMinutes': timeout_minutes, 'action': action}}


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response['Error']['Code'])


# -- blue/green --------------------------------------------------------------------------------


def test_a_new_service_is_deployed_at_once_and_keeps_its_strategy(world: World) -> None:
    service = world.create({'strategy': 'BLUE_GREEN', 'bakeTimeInMinutes': 0})
    arn = service['currentServiceDeployment']
    assert arn.startswith(f'arn:aws:ecs:{REGION}:123456789012:service-deployment/{world.cluster}/{world.service}/')
    assert service['deploymentConfiguration']['strategy'] == 'BLUE_GREEN'  # moto alone drops it
    d = world.wait(arn)
    assert d['status'] == 'SUCCESSFUL' and d['lifecycleStage'] == 'CLEAN_UP'
    assert d['sourceServiceRevisions'] == []  # nothing ran before: no blue to protect
    assert d['targetServiceRevision']['runningTaskCount'] == 2
    assert d['createdAt'] < d['startedAt'] <= d['finishedAt']
    assert world.green_share(world.prod_rule) == 0  # production served by the first target group
    described = world.described()
    assert described['currentServiceDeployment'] == arn
    assert described['deploymentConfiguration'] == {'strategy': 'BLUE_GREEN', 'bakeTimeInMinutes': 0}
    assert [(e['status'], e['rolloutState']) for e in described['deployments']] == [('PRIMARY', 'COMPLETED')]
    assert described['events'][0]['message'].endswith('has reached a steady state.')
    assert world.sandbox.started == [(described['taskDefinition'], 'registry.local/web:v1', PORT)]


def test_blue_green_goes_through_the_lifecycle_stages_in_order(world: World) -> None:
    world.run_through(world.create({'strategy': 'BLUE_GREEN', 'bakeTimeInMinutes': 1,
                                    'lifecycleHooks': [pause_at(*EVERY_PAUSE_STAGE)]})['currentServiceDeployment'])
    v1 = world.described()['taskDefinition']
    arn = world.update('registry.local/web:v2')
    seen = []
    while (d := world.deployment(arn))['status'] not in DONE:
        hook = next((h for h in d.get('lifecycleHookDetails', []) if h['status'] == 'AWAITING_ACTION'), None)
        if hook is not None:
            green = d['targetServiceRevision']
            seen.append((d['lifecycleStage'], green['runningTaskCount'], world.green_share(world.test_rule),
                         world.green_share(world.prod_rule)))
            assert hook['targetType'] == 'PAUSE' and hook['timeoutAction'] == 'ROLLBACK'
            assert hook['hookId'].startswith('ecs-pause-') and hook['expiresAt'] > d['updatedAt']
            world.ecs.continue_service_deployment(serviceDeploymentArn=arn, hookId=hook['hookId'])
        time.sleep(0.01)
    # (lifecycle stage, green's running tasks, green's test share, green's production share) at each pause
    assert seen == [('PRE_SCALE_UP', 0, 0, 0), ('POST_SCALE_UP', 2, 0, 0), ('POST_TEST_TRAFFIC_SHIFT', 2, 100, 0),
                    ('PRODUCTION_TRAFFIC_SHIFT', 2, 100, 0),  # the PRE_PRODUCTION_TRAFFIC_SHIFT hook's stage
                    ('POST_PRODUCTION_TRAFFIC_SHIFT', 2, 100, 100)]
    assert d['status'] == 'SUCCESSFUL' and d['lifecycleStage'] == 'CLEAN_UP' and 'statusReason' not in d
    [blue] = d['sourceServiceRevisions']
    assert blue['runningTaskCount'] == 0 and blue['requestedProductionTrafficWeight'] == 0
    assert d['targetServiceRevision']['requestedProductionTrafficWeight'] == 100
    assert world.sandbox.stopped == [(v1, 'registry.local/web:v1', PORT)]  # blue's tasks stopped at CLEAN_UP

    revisions = world.ecs.describe_service_revisions(
        serviceRevisionArns=[blue['arn'], d['targetServiceRevision']['arn'], blue['arn'] + '0'])
    resolved = {r['taskDefinition']: r['resolvedConfiguration']['loadBalancers'] for r in revisions['serviceRevisions']}
    assert resolved == {v1: [{'targetGroupArn': world.blue_tg, 'productionListenerRule': world.prod_rule}],
                        world.described()['taskDefinition']: [{'targetGroupArn': world.green_tg,
                                                               'productionListenerRule': world.prod_rule}]}
    assert revisions['failures'] == [{'arn': blue['arn'] + '0', 'reason': 'MISSING'}]

    third = world.update('registry.local/web:v3')  # yesterday's green is today's blue
    world.run_through(third)
    assert world.green_share(world.prod_rule) == 0 and world.green_share(world.test_rule) == 0


def test_bake_time_keeps_both_revisions_running_before_clean_up(world: World) -> None:
    world.wait(world.create({'strategy': 'BLUE_GREEN', 'bakeTimeInMinutes': 5})['currentServiceDeployment'])
    arn = world.update('registry.local/web:v2')
    d = wait_for(lambda: (d := world.deployment(arn)).get('lifecycleStage') == 'BAKE_TIME' and d, what='BAKE_TIME')
    assert [r['runningTaskCount'] for r in (*d['sourceServiceRevisions'], d['targetServiceRevision'])] == [2, 2]
    assert world.green_share(world.prod_rule) == 100
    done = world.wait(arn)
    assert done['status'] == 'SUCCESSFUL'
    baked = (done['finishedAt'] - d['updatedAt']).total_seconds()  # from BAKE_TIME's start, on the simulator's clock
    assert baked >= 5 * TIMINGS.minute_seconds


# -- canary and linear -----------------------------------------------------------------------------


@pytest.mark.parametrize(('percent', 'weights'), [(10, (90, 10)), (2.5, (975, 25))])
def test_canary_sends_its_share_to_green_then_the_rest(world: World, percent: float, weights: tuple[int, int]) -> None:
    config = {'strategy': 'CANARY', 'bakeTimeInMinutes': 0, 'lifecycleHooks': [pause_at('PRE_PRODUCTION_TRAFFIC_SHIFT')],
              'canaryConfiguration': {'canaryPercent': percent, 'canaryBakeTimeInMinutes': 2}}
    world.run_through(world.create(config)['currentServiceDeployment'])
    arn = world.update('registry.local/web:v2')
    before, _ = world.go_on(arn)  # before the canary step: production all blue
    d, _ = world.paused(arn)  # before the second step: the canary's share on green for canaryBakeTimeInMinutes
    assert (d['updatedAt'] - before['updatedAt']).total_seconds() >= 2 * TIMINGS.minute_seconds
    assert world.weights(world.prod_rule) == {world.blue_tg: weights[0], world.green_tg: weights[1]}
    assert world.green_share(world.test_rule) == 100
    assert d['targetServiceRevision']['requestedProductionTrafficWeight'] == percent
    assert d['sourceServiceRevisions'][0]['requestedProductionTrafficWeight'] == 100 - percent
    world.go_on(arn)
    assert world.wait(arn)['status'] == 'SUCCESSFUL'
    assert world.weights(world.prod_rule) == {world.blue_tg: 0, world.green_tg: 100}


def test_linear_moves_production_in_equal_steps(world: World) -> None:
    config = {'strategy': 'LINEAR', 'bakeTimeInMinutes': 0, 'lifecycleHooks': [pause_at('PRE_PRODUCTION_TRAFFIC_SHIFT')],
              'linearConfiguration': {'stepPercent': 25, 'stepBakeTimeInMinutes': 1}}
    world.run_through(world.create(config)['currentServiceDeployment'])
    arn = world.update('registry.local/web:v2')
    shares = []
    for _ in range(4):  # before each step: 25 % more of production on green
        world.paused(arn)
        shares.append(world.green_share(world.prod_rule))
        world.go_on(arn)
    assert shares == [0, 25, 50, 75]
    assert world.wait(arn)['status'] == 'SUCCESSFUL' and world.green_share(world.prod_rule) == 100


# -- lifecycle hooks ------------------------------------------------------------------------------


def test_lambda_hooks_are_invoked_until_they_answer(world: World) -> None:
    function = f'arn:aws:lambda:{REGION}:123456789012:function:check-{world.suffix}'

    def check(invocation: LambdaInvocation) -> Mapping[str, Any]:
        """Still checking on the first call at TEST_TRAFFIC_SHIFT (call again in 3 s); then done."""
        if invocation.lifecycle_stage == 'TEST_TRAFFIC_SHIFT' and invocation.payload['hookDetails'] == {'suite': 'a'}:
            return {'hookStatus': 'IN_PROGRESS', 'callBackDelay': 3, 'hookDetails': {'attempt': 1}}
        return {'hookStatus': 'SUCCEEDED'}

    world.sandbox.functions[function] = check
    hook = {'targetType': 'AWS_LAMBDA', 'hookTargetArn': function, 'roleArn': LAMBDA_ROLE,
            'lifecycleStages': ['TEST_TRAFFIC_SHIFT', 'PRODUCTION_TRAFFIC_SHIFT'], 'hookDetails': {'suite': 'a'}}
    world.wait(world.create({'strategy': 'BLUE_GREEN', 'lifecycleHooks': [hook]})['currentServiceDeployment'])
    world.sandbox.invocations.clear()
    arn = world.update('registry.local/web:v2')
    assert world.wait(arn)['status'] == 'SUCCESSFUL'
    calls = world.sandbox.invocations
    assert [(c.lifecycle_stage, c.payload.get('hookDetails')) for c in calls] == [
        ('TEST_TRAFFIC_SHIFT', {'suite': 'a'}), ('TEST_TRAFFIC_SHIFT', {'attempt': 1}),
        ('PRODUCTION_TRAFFIC_SHIFT', {'suite': 'a'})]
    assert calls[0].hook_id == calls[1].hook_id != calls[2].hook_id
    d = world.deployment(arn)
    target, blue = d['targetServiceRevision']['arn'], d['sourceServiceRevisions'][0]['arn']
    assert calls[0].payload['serviceArn'] == world.described()['serviceArn']
    assert calls[0].payload['targetServiceRevisionArn'] == target
    assert calls[0].payload['testTrafficWeights'] == {blue: 0.0, target: 100.0}  # the stage's shift came first
    assert calls[0].payload['productionTrafficWeights'] == {blue: 100.0, target: 0.0}
    assert calls[2].payload['productionTrafficWeights'] == {blue: 0.0, target: 100.0}


@pytest.mark.parametrize('answer', [{'hookStatus': 'FAILED'}, {'status': 'ok'}, 'raise'])
def test_a_failing_lambda_hook_rolls_back(world: World, answer: Any) -> None:
    function = f'arn:aws:lambda:{REGION}:123456789012:function:gate-{world.suffix}'

    def gate(invocation: LambdaInvocation) -> Mapping[str, Any]:
        if invocation.service_deployment_arn == first:
            return {'hookStatus': 'SUCCEEDED'}
        if answer == 'raise':
            raise RuntimeError('the function timed out')
        return dict(answer)

    first = ''
    world.sandbox.functions[function] = gate
    hook = {'targetType': 'AWS_LAMBDA', 'hookTargetArn': function, 'roleArn': LAMBDA_ROLE,
            'lifecycleStages': ['POST_PRODUCTION_TRAFFIC_SHIFT']}
    first = world.create({'strategy': 'BLUE_GREEN', 'lifecycleHooks': [hook]})['currentServiceDeployment']
    world.wait(first)
    v1 = world.described()['taskDefinition']
    arn = world.update('registry.local/web:v2')
    d = world.wait(arn)
    assert d['status'] == 'ROLLBACK_SUCCESSFUL', d
    assert 'POST_PRODUCTION_TRAFFIC_SHIFT' in d['statusReason'] and d['lifecycleStage'] == 'POST_PRODUCTION_TRAFFIC_SHIFT'
    assert [h['status'] for h in d['lifecycleHookDetails']] == ['FAILED']
    assert d['rollback']['serviceRevisionArn'] == d['sourceServiceRevisions'][0]['arn']
    assert world.green_share(world.prod_rule) == 0 and world.green_share(world.test_rule) == 0
    assert world.described()['taskDefinition'] == v1


def test_continue_with_rollback_at_a_pause_hook_rolls_back(world: World) -> None:
    world.run_through(world.create({'strategy': 'BLUE_GREEN', 'lifecycleHooks': [pause_at('POST_TEST_TRAFFIC_SHIFT')]})[
        'currentServiceDeployment'])
    v1 = world.described()['taskDefinition']
    arn = world.update('registry.local/web:v2')
    v2 = world.described()['taskDefinition']
    d, hook = world.paused(arn)
    assert d['lifecycleStage'] == 'POST_TEST_TRAFFIC_SHIFT' and world.green_share(world.test_rule) == 100
    with pytest.raises(ClientError) as exc:
        world.ecs.continue_service_deployment(serviceDeploymentArn=arn, hookId='ecs-pause-nosuchhook')
    assert error_code(exc) == 'InvalidParameterException'
    world.ecs.continue_service_deployment(serviceDeploymentArn=arn, hookId=hook['hookId'], action='ROLLBACK')
    d = world.wait(arn)
    assert d['status'] == 'ROLLBACK_SUCCESSFUL' and 'ContinueServiceDeployment' in d['statusReason']
    assert [(h['hookId'], h['status']) for h in d['lifecycleHookDetails']] == [(hook['hookId'], 'FAILED')]
    assert world.green_share(world.test_rule) == 0 and world.green_share(world.prod_rule) == 0
    assert world.described()['taskDefinition'] == v1
    wait_for(lambda: (v2, 'registry.local/web:v2', PORT) in world.sandbox.stopped, what="green's tasks to stop")
    with pytest.raises(ClientError) as exc:
        world.ecs.continue_service_deployment(serviceDeploymentArn=arn, hookId=hook['hookId'])
    assert error_code(exc) == 'InvalidParameterException'


@pytest.mark.parametrize(('action', 'outcome'), [('ROLLBACK', 'ROLLBACK_SUCCESSFUL'), ('CONTINUE', 'SUCCESSFUL')])
def test_a_pause_hook_that_times_out_takes_its_timeout_action(world: World, action: str, outcome: str) -> None:
    world.run_through(world.create({'strategy': 'BLUE_GREEN', 'lifecycleHooks': [
        pause_at('POST_TEST_TRAFFIC_SHIFT', timeout_minutes=1, action=action)]})['currentServiceDeployment'])
    arn = world.update('registry.local/web:v2')
    d, hook = world.paused(arn)
    assert hook['timeoutAction'] == action
    assert abs(hook['expiresAt'].timestamp() - d['updatedAt'].timestamp() - TIMINGS.minute_seconds) < 0.05
    d = world.wait(arn)
    assert d['status'] == outcome
    if action == 'ROLLBACK':
        assert [h['status'] for h in d['lifecycleHookDetails']] == ['TIMED_OUT'] and 'timed out' in d['statusReason']
        assert world.green_share(world.prod_rule) == 0
    else:
        assert world.green_share(world.prod_rule) == 100


# -- stopping --------------------------------------------------------------------------------------


def test_stop_rolls_production_back_to_blue(world: World) -> None:
    world.wait(world.create({'strategy': 'BLUE_GREEN', 'bakeTimeInMinutes': 0})['currentServiceDeployment'])
    v1 = world.described()['taskDefinition']
    arn = world.update('registry.local/web:v2', deploymentConfiguration={'strategy': 'BLUE_GREEN',
                                                                         'bakeTimeInMinutes': 60})
    v2 = world.described()['taskDefinition']
    wait_for(lambda: world.deployment(arn).get('lifecycleStage') == 'BAKE_TIME', what='BAKE_TIME')
    assert world.green_share(world.prod_rule) == 100

    assert world.ecs.stop_service_deployment(serviceDeploymentArn=arn)['serviceDeploymentArn'] == arn
    statuses = [world.deployment(arn)['status']]
    while statuses[-1] not in DONE:
        if (status := world.deployment(arn)['status']) != statuses[-1]:
            statuses.append(status)
    assert statuses[0] == 'ROLLBACK_REQUESTED' and statuses[-1] == 'ROLLBACK_SUCCESSFUL'
    assert set(statuses) <= {'ROLLBACK_REQUESTED', 'ROLLBACK_IN_PROGRESS', 'ROLLBACK_SUCCESSFUL'}
    d = world.deployment(arn)
    assert d['statusReason'] == 'Service deployment rolled back because of a StopServiceDeployment request.'
    assert d['rollback']['reason'] == d['statusReason']
    assert d['rollback']['serviceRevisionArn'] == d['sourceServiceRevisions'][0]['arn']
    assert d['finishedAt'] >= d['rollback']['startedAt'] and 'stoppedAt' not in d
    assert world.weights(world.prod_rule) == {world.blue_tg: 100, world.green_tg: 0}
    assert world.green_share(world.test_rule) == 0
    wait_for(lambda: (v2, 'registry.local/web:v2', PORT) in world.sandbox.stopped, what="green's tasks to stop")
    service = world.described()
    assert service['taskDefinition'] == v1
    assert [(e['status'], e['taskDefinition']) for e in service['deployments']][0] == ('PRIMARY', v1)
    assert 'rolled back' in service['events'][0]['message']
    with pytest.raises(ClientError) as exc:
        world.ecs.stop_service_deployment(serviceDeploymentArn=arn)
    assert error_code(exc) == 'ConflictException'
    assert exc.value.response.get('resourceIds') == [arn]


def test_abort_leaves_traffic_where_it_was_and_the_next_deployment_reconciles(world: World) -> None:
    config = {'strategy': 'CANARY', 'bakeTimeInMinutes': 0,
              'canaryConfiguration': {'canaryPercent': 20, 'canaryBakeTimeInMinutes': 0},
              'lifecycleHooks': [pause_at('RECONCILE_SERVICE', 'POST_PRODUCTION_TRAFFIC_SHIFT'),
                                 pause_at('PRE_PRODUCTION_TRAFFIC_SHIFT')]}
    world.run_through(world.create(config)['currentServiceDeployment'])
    v1 = world.described()['taskDefinition']
    arn = world.update('registry.local/web:v2')
    v2 = world.described()['taskDefinition']
    world.go_on(arn)
    world.paused(arn)  # the canary: 20 % of production on green
    world.ecs.stop_service_deployment(serviceDeploymentArn=arn, stopType='ABORT')
    assert world.deployment(arn)['status'] == 'STOP_REQUESTED'
    d = world.wait(arn)
    assert d['status'] == 'STOPPED' and d['stoppedAt'] == d['finishedAt']
    assert 'ABORT' in d['statusReason']
    assert world.green_share(world.prod_rule) == 20 and world.sandbox.stopped == []  # nothing undone

    third = world.update('registry.local/web:v3')
    d, _ = world.paused(third)
    assert d['lifecycleStage'] == 'RECONCILE_SERVICE'  # two revisions ACTIVE: reconcile first
    assert {r['arn'] for r in d['sourceServiceRevisions']} == {world.deployment(arn)['targetServiceRevision']['arn'],
                                                               world.deployment(arn)['sourceServiceRevisions'][0]['arn']}
    world.go_on(third)
    d = world.run_through(third)
    assert d['status'] == 'SUCCESSFUL'
    assert [r['arn'] for r in d['sourceServiceRevisions']] == [world.deployment(arn)['sourceServiceRevisions'][0]['arn']]
    assert (v2, 'registry.local/web:v2', PORT) in world.sandbox.stopped  # the aborted canary, drained
    assert (v1, 'registry.local/web:v1', PORT) in world.sandbox.stopped  # blue, at CLEAN_UP
    assert world.green_share(world.prod_rule) == 100  # v3 on the alternate target group, as v2 was


def test_an_update_midway_supersedes_the_deployment(world: World) -> None:
    world.run_through(world.create({'strategy': 'BLUE_GREEN', 'lifecycleHooks': [pause_at('POST_TEST_TRAFFIC_SHIFT')]})[
        'currentServiceDeployment'])
    arn = world.update('registry.local/web:v2')
    world.paused(arn)
    newer = world.update('registry.local/web:v3')
    old = world.deployment(arn)
    assert old['status'] == 'STOPPED' and old['statusReason'] == f'The service deployment was superseded by {newer}.'
    d = world.run_through(newer)
    assert d['status'] == 'SUCCESSFUL' and len(d['sourceServiceRevisions']) == 1
    listed = world.ecs.list_service_deployments(cluster=world.cluster, service=world.service)['serviceDeployments']
    assert [(b['serviceDeploymentArn'], b['status']) for b in listed[:2]] == [(newer, 'SUCCESSFUL'), (arn, 'STOPPED')]


# -- failures of the new revision -----------------------------------------------------------------


@pytest.mark.parametrize(('rollback', 'outcome'), [(True, 'ROLLBACK_SUCCESSFUL'), (False, 'STOPPED')])
def test_tasks_that_cannot_start_trip_the_circuit_breaker(world: World, rollback: bool, outcome: str) -> None:
    breaker = {'enable': True, 'rollback': rollback}
    world.wait(world.create({'strategy': 'BLUE_GREEN', 'deploymentCircuitBreaker': breaker})['currentServiceDeployment'])
    arn = world.update('registry.local/web:broken')
    d = world.wait(arn)
    assert d['status'] == outcome and d['lifecycleStage'] == 'SCALE_UP'
    assert d['deploymentCircuitBreaker'] == {'status': 'TRIGGERED', 'failureCount': 3, 'threshold': 3}
    assert 'circuit breaker' in d['statusReason'] and 'CannotPullContainerError' in d['statusReason']
    assert world.green_share(world.prod_rule) == 0 and world.green_share(world.test_rule) == 0
    events = [e['message'] for e in world.described()['events']]
    assert sum('failed to launch a task with (error CannotPullContainerError' in e for e in events) == 3


def test_a_rolling_service_moves_to_blue_green(world: World) -> None:
    v1 = world.register('registry.local/web:v1')
    world.ecs.create_service(cluster=world.cluster, serviceName=world.service, taskDefinition=v1, desiredCount=2,
                             launchType='FARGATE', loadBalancers=[{'targetGroupArn': world.blue_tg,
                                                                   'containerName': CONTAINER, 'containerPort': PORT}])
    assert 'currentServiceDeployment' not in world.described()  # ROLLING stays moto's
    arn = world.update('registry.local/web:v2', loadBalancers=world.balancers(test=False),
                       deploymentConfiguration={'strategy': 'BLUE_GREEN', 'bakeTimeInMinutes': 0})
    d = world.wait(arn)
    assert d['status'] == 'SUCCESSFUL'
    [blue] = d['sourceServiceRevisions']
    revision = world.ecs.describe_service_revisions(serviceRevisionArns=[blue['arn']])['serviceRevisions'][0]
    assert revision['taskDefinition'] == v1
    assert world.sandbox.stopped == [(v1, 'registry.local/web:v1', PORT)]
    assert world.green_share(world.prod_rule) == 100 and world.green_share(world.test_rule) == 0  # no test rule


# -- the API around them --------------------------------------------------------------------------


def test_list_service_deployments_filters_and_pages(world: World) -> None:
    arns = [world.create({'strategy': 'BLUE_GREEN'})['currentServiceDeployment']]
    world.wait(arns[0])
    for image in ('v2', 'v3'):
        arns.append(world.update(f'registry.local/web:{image}'))
        world.wait(arns[-1])
    ecs = world.ecs
    listed = ecs.list_service_deployments(cluster=world.cluster, service=world.service)['serviceDeployments']
    assert [b['serviceDeploymentArn'] for b in listed] == arns[::-1]
    assert {b['status'] for b in listed} == {'SUCCESSFUL'}
    pages, token = [], None
    while True:
        answer = ecs.list_service_deployments(cluster=world.cluster, service=world.service, maxResults=2,
                                              **({'nextToken': token} if token else {}))
        pages.append([b['serviceDeploymentArn'] for b in answer['serviceDeployments']])
        if not (token := answer.get('nextToken')):
            break
    assert pages == [arns[:0:-1], arns[:1]]
    assert ecs.list_service_deployments(cluster=world.cluster, service=world.service,
                                        status=['ROLLBACK_SUCCESSFUL'])['serviceDeployments'] == []
    created = world.deployment(arns[0])['createdAt']  # the API sends whole seconds
    for window, expected in (({'after': created - datetime.timedelta(seconds=1)}, arns[::-1]),
                             ({'after': created + datetime.timedelta(hours=1)}, []),
                             ({'before': created - datetime.timedelta(seconds=1)}, [])):
        answer = ecs.list_service_deployments(cluster=world.cluster, service=world.service, createdAt=window)
        assert [b['serviceDeploymentArn'] for b in answer['serviceDeployments']] == expected
    missing = arns[0][:-3] + 'xyz'
    found = ecs.describe_service_deployments(serviceDeploymentArns=[arns[0], missing])
    assert found['failures'] == [{'arn': missing, 'reason': 'MISSING'}]
    ecs.update_service(cluster=world.cluster, service=world.service, desiredCount=0)
    ecs.delete_service(cluster=world.cluster, service=world.service)
    assert ecs.describe_service_deployments(serviceDeploymentArns=arns)['serviceDeployments'] == []


BAD_CONFIGS = [
    ({'strategy': 'BLUE_GREEN', 'lifecycleHooks': [pause_at('TEST_TRAFFIC_SHIFT')]}, 'PAUSE hooks cannot'),
    ({'strategy': 'BLUE_GREEN', 'lifecycleHooks': [pause_at('SCALE_UP')]}, 'not a lifecycle stage'),
    ({'strategy': 'BLUE_GREEN', 'lifecycleHooks': [{'lifecycleStages': ['PRE_SCALE_UP']}]}, 'needs hookTargetArn'),
    ({'strategy': 'BLUE_GREEN', 'canaryConfiguration': {'canaryPercent': 10}}, 'only valid with the CANARY'),
    ({'strategy': 'LINEAR', 'linearConfiguration': {'stepPercent': 2}}, 'stepPercent must be'),
    ({'strategy': 'CANARY', 'canaryConfiguration': {'canaryPercent': 10.05}}, 'canaryPercent must be'),
    ({'strategy': 'BLUE_GREEN', 'bakeTimeInMinutes': 1441}, 'bakeTimeInMinutes must be'),
    ({'strategy': 'SWITCHEROO'}, 'not valid'),
]


@pytest.mark.parametrize(('config', 'fragment'), BAD_CONFIGS)
def test_a_bad_deployment_configuration_is_refused(world: World, config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ClientError) as exc, world.sandbox.contract.sending_invalid_requests():
        world.create(config)
    assert error_code(exc) == 'InvalidParameterException' and fragment in exc.value.response['Error']['Message']
    assert world.ecs.list_services(cluster=world.cluster)['serviceArns'] == []  # refused before moto kept it


def test_bad_load_balancers_and_controllers_are_refused(world: World) -> None:
    config = {'strategy': 'BLUE_GREEN'}
    for extra, fragment in ((dict(deploymentController={'type': 'CODE_DEPLOY'}), 'ECS deployment controller'),
                            (dict(loadBalancers=[{'targetGroupArn': world.blue_tg, 'containerName': CONTAINER,
                                                  'containerPort': PORT}]), 'advancedConfiguration'),
                            (dict(loadBalancers=[{**world.balancers()[0], 'advancedConfiguration': {
                                **world.balancers()[0]['advancedConfiguration'],
                                'productionListenerRule': world.prod_rule + '0'}}]), 'does not exist')):
        with pytest.raises(ClientError) as exc:
            world.create(config, **extra)
        assert error_code(exc) == 'InvalidParameterException' and fragment in exc.value.response['Error']['Message']


def test_unknown_deployments_and_services_are_refused_in_aws_shape(world: World) -> None:
    ecs, missing = world.ecs, f'arn:aws:ecs:{REGION}:123456789012:service-deployment/{world.cluster}/nope/abc'
    for call in (lambda: ecs.stop_service_deployment(serviceDeploymentArn=missing),
                 lambda: ecs.continue_service_deployment(serviceDeploymentArn=missing, hookId='ecs-pause-x')):
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == 'ServiceDeploymentNotFoundException' and missing in str(exc.value)
    with pytest.raises(ClientError) as exc:
        ecs.list_service_deployments(cluster=world.cluster, service='nope')
    assert error_code(exc) == 'ServiceNotFoundException'
    with pytest.raises(ClientError) as exc:
        ecs.list_service_deployments(cluster='no-such-cluster', service='nope')
    assert error_code(exc) == 'ClusterNotFoundException'
    assert ecs.describe_service_deployments(serviceDeploymentArns=[missing])['failures'] == [
        {'arn': missing, 'reason': 'MISSING'}]


def test_every_answer_of_the_simulator_was_checked_against_the_model(sandbox: Sandbox) -> None:
    simulated = {'CreateService', 'UpdateService', 'DescribeServices', 'DescribeServiceDeployments',
                 'ListServiceDeployments', 'StopServiceDeployment', 'ContinueServiceDeployment',
                 'DescribeServiceRevisions'}
    if len(sandbox.contract.answers) < 5:
        pytest.skip('run with the rest of the module: it checks what they were answered')
    assert simulated <= set(sandbox.contract.answers), simulated - set(sandbox.contract.answers)
    assert sandbox.contract.requests['DescribeServiceDeployments'] == sandbox.contract.answers[
        'DescribeServiceDeployments']
