"""An AWS world in the sandbox for the adapter and rollout tests.

The sandbox (`controller.sandbox.aws.AwsSandbox`: moto plus the CodeDeploy ECS
deployment simulator) is reached exactly as the operator reaches AWS: a boto3
session and `AWS_ENDPOINT_URL`. `world()` builds, under names unique to the
call (moto's state is process-global, so tests share one server), an ECS
cluster, a VPC, an ALB with a blue and a green target group, a production
(80) and a test (8080) listener, and optionally the CODE_DEPLOY service on
blue with the CodeDeploy application and deployment group that pair the two
target groups (blue first, deploymentReadyOption STOP_DEPLOYMENT).

Test modules import the fixtures (`aws_url`, `session`) from here; a module
may define its own `aws_url` (other timings) and `session` then uses it.
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator
from typing import Any

import boto3
import boto3.session
import pytest

from controller.models import PandaDeploySpec
from controller.pipeline.service import task_definition
from controller.sandbox.aws import AwsSandbox, Timings

REGION = 'us-east-1'
ACCOUNT = '123456789012'
ROLE = f'arn:aws:iam::{ACCOUNT}:role/codedeploy-ecs'
# Hooks report Succeeded on their own (auto_hooks) and simulated time runs fast.
FAST = Timings(step_seconds=0.05, auto_hook_seconds=0.05, tick_seconds=0.01)

_names = itertools.count(1)


@pytest.fixture(scope='module')
def aws_url() -> Iterator[str]:
    """The sandbox's moto server with the CodeDeploy simulator (hooks report Succeeded; time runs fast)."""
    with AwsSandbox(port=0, auto_hooks=True, timings=FAST) as sandbox:
        yield sandbox.url


@pytest.fixture
def session(aws_url: str, monkeypatch: pytest.MonkeyPatch) -> boto3.session.Session:
    """A session whose clients reach the stand-in through AWS_ENDPOINT_URL, as the operator's do."""
    monkeypatch.setenv('AWS_ENDPOINT_URL', aws_url)
    for name in ('AWS_PROFILE', 'AWS_ENDPOINT_URL_ECS', 'AWS_ENDPOINT_URL_CODEDEPLOY',
                 'AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2'):
        monkeypatch.delenv(name, raising=False)
    return boto3.session.Session(aws_access_key_id='testing', aws_secret_access_key='testing', region_name=REGION)


@dataclasses.dataclass
class World:
    """One test's AWS resources: a cluster, a load balancer with two target groups and listeners, a deployment group."""
    spec: PandaDeploySpec
    blue_arn: str
    green_arn: str
    production_listener_arn: str
    test_listener_arn: str
    dns_name: str

    def colour_of(self, target_group_arn: str | None) -> str | None:
        return {self.blue_arn: 'blue', self.green_arn: 'green'}.get(target_group_arn or '')


def spec(suffix: str, **overrides: Any) -> PandaDeploySpec:
    """A spec naming cluster, service, CodeDeploy application and group with `suffix`; `overrides`
    merge into the top-level keys (one level deep)."""
    document: dict[str, Any] = {
        'source': {'repo': 'panda/app'},
        'aws': {'region': REGION},
        'ecs': {'cluster': f'cluster-{suffix}', 'service': f'svc-{suffix}', 'containerName': 'web',
                'containerPort': 8080},
        'blueGreen': {'codeDeploy': {'application': f'app-{suffix}', 'deploymentGroup': f'dg-{suffix}'},
                      'hooks': {'beforeAllowTraffic': 'check-before', 'afterAllowTraffic': 'check-after'}},
    }
    for key, value in overrides.items():
        document[key] = {**document.get(key, {}), **value}
    return PandaDeploySpec.model_validate(document)


def world(session: boto3.session.Session, *, cluster: bool = True, group: bool = True,
          ready_action: str = 'STOP_DEPLOYMENT') -> World:
    """Cluster, VPC, ALB, blue and green target groups, production (80) and test (8080) listeners; with
    `group`, also the ECS service on blue (first revision, image tag a…a) and the CodeDeploy application and
    deployment group that pair the target groups (blue first): AWS creates a group only for an existing service."""
    suffix = f'{next(_names)}{int(time.time() * 1000) % 100000}'
    found = spec(suffix)
    ec2, elb = session.client('ec2'), session.client('elbv2')
    if cluster:
        session.client('ecs').create_cluster(clusterName=found.ecs.cluster)
    vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f'10.0.{i}.0/24', AvailabilityZone=f'{REGION}{zone}')
               ['Subnet']['SubnetId'] for i, zone in enumerate('ab')]
    lb = elb.create_load_balancer(Name=f'lb-{suffix}', Subnets=subnets, Type='application')['LoadBalancers'][0]
    blue, green = (elb.create_target_group(Name=f'{colour}-{suffix}', Protocol='HTTP', Port=8080, VpcId=vpc,
                                           TargetType='ip')['TargetGroups'][0]['TargetGroupArn']
                   for colour in ('blue', 'green'))
    production, test = (elb.create_listener(LoadBalancerArn=lb['LoadBalancerArn'], Protocol='HTTP', Port=port,
                                            DefaultActions=[{'Type': 'forward', 'TargetGroupArn': blue}])
                        ['Listeners'][0]['ListenerArn'] for port in (80, 8080))
    if group:
        ecs = session.client('ecs')
        first = ecs.register_task_definition(**task_definition(found, image_uri=image_uri('a' * 40)))
        ecs.create_service(cluster=found.ecs.cluster, serviceName=found.ecs.service, desiredCount=1,
                           taskDefinition=first['taskDefinition']['taskDefinitionArn'], launchType='FARGATE',
                           deploymentController={'type': 'CODE_DEPLOY'},
                           loadBalancers=[{'targetGroupArn': blue, 'containerName': found.ecs.container_name,
                                           'containerPort': found.ecs.container_port}])
        cd = session.client('codedeploy')
        code_deploy = found.blue_green.code_deploy
        cd.create_application(applicationName=code_deploy.application, computePlatform='ECS')
        cd.create_deployment_group(
            applicationName=code_deploy.application, deploymentGroupName=code_deploy.deployment_group,
            serviceRoleArn=ROLE, deploymentConfigName='CodeDeployDefault.ECSAllAtOnce',
            deploymentStyle={'deploymentType': 'BLUE_GREEN', 'deploymentOption': 'WITH_TRAFFIC_CONTROL'},
            blueGreenDeploymentConfiguration={
                'deploymentReadyOption': {'actionOnTimeout': ready_action, 'waitTimeInMinutes': 30},
                'terminateBlueInstancesOnDeploymentSuccess': {'action': 'TERMINATE',
                                                              'terminationWaitTimeInMinutes': 0}},
            loadBalancerInfo={'targetGroupPairInfoList': [{
                'targetGroups': [{'name': f'blue-{suffix}'}, {'name': f'green-{suffix}'}],
                'prodTrafficRoute': {'listenerArns': [production]},
                'testTrafficRoute': {'listenerArns': [test]}}]},
            ecsServices=[{'serviceName': found.ecs.service, 'clusterName': found.ecs.cluster}],
            autoRollbackConfiguration={'enabled': True, 'events': ['DEPLOYMENT_FAILURE', 'DEPLOYMENT_STOP_ON_REQUEST']})
    return World(spec=found, blue_arn=blue, green_arn=green, production_listener_arn=production,
                 test_listener_arn=test, dns_name=lb['DNSName'])


def layout_document(found: World) -> dict[str, Any]:
    """`spec.blueGreen` naming the world's listeners and target groups and the CodeDeploy service role, so
    the operator can create the service before any deployment group exists, and then the group."""
    blue_green = found.spec.blue_green.dump()
    blue_green['codeDeploy']['serviceRoleArn'] = ROLE
    blue_green['loadBalancer'] = {
        'productionListenerArn': found.production_listener_arn, 'testListenerArn': found.test_listener_arn,
        'blueTargetGroupArn': found.blue_arn, 'greenTargetGroupArn': found.green_arn}
    return blue_green


def with_layout(found: World) -> PandaDeploySpec:
    """The world's spec with spec.blueGreen.loadBalancer and codeDeploy.serviceRoleArn set."""
    document = found.spec.dump()
    document['blueGreen'] = layout_document(found)
    return PandaDeploySpec.model_validate(document)


def production_target_group(session: boto3.session.Session, found: World) -> str | None:
    """The target group ARN the production listener forwards to (all of it: the sandbox shifts all at once)."""
    listener = session.client('elbv2').describe_listeners(
        ListenerArns=[found.production_listener_arn])['Listeners'][0]
    for action in listener['DefaultActions']:
        groups = (action.get('ForwardConfig') or {}).get('TargetGroups') or []
        if groups:
            return str(max(groups, key=lambda g: g.get('Weight', 1))['TargetGroupArn'])
        if action.get('TargetGroupArn'):
            return str(action['TargetGroupArn'])
    return None


def image_uri(tag: str, repository: str = 'panda-app') -> str:
    return f'{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}:{tag}'
