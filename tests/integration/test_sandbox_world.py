"""`panda-deploy sandbox world`: each strategy's AWS world made in a sandbox, and the PandaDeploy it prints.

The sandbox is what `sandbox up` would leave: the AWS sandbox and the
Kubernetes API emulator (in this process), named by a `DIR/env` written as
`sandbox up` writes it. No Docker engine is needed. The ECS strategies' specs
are checked for their structure and against the sandbox's ELBv2 and IAM (the
models learn `spec.rollout` in another change); the CodeDeploy one also
validates against `PandaDeploySpec`, with a source added.
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from controller.models import PandaDeploySpec
from controller.sandbox import world as world_command
from controller.sandbox.aws import AwsSandbox
from controller.sandbox.kube import ClusterServer
from controller.sandbox.stack.envfile import SECRET_NAME, ensure_secret, read_env, write_env
from controller.sandbox.stack.manifests import SANDBOX_KEYS
from controller.sandbox.stack.world import REGION, sandbox_clients
from controller.sandbox.stack.worlds import read_world, region_of

ROLLOUT_LOAD_BALANCER = {'targetGroupArn', 'alternateTargetGroupArn', 'productionListenerRuleArn',
                         'testListenerRuleArn', 'roleArn'}


@pytest.fixture(scope='module')
def sandbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    directory = tmp_path_factory.mktemp('sandbox')
    with AwsSandbox() as aws:
        aws.reset()  # moto's state is per process
        cluster = ClusterServer().start()
        try:
            kubeconfig = cluster.write_kubeconfig(directory / 'kubeconfig')
            write_env(directory, {'KUBECONFIG': str(kubeconfig), 'AWS_ENDPOINT_URL': aws.url},
                      comment='written by the test as `sandbox up` writes it')
            with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as api:
                assert ensure_secret(api, 'default')  # as `sandbox up` does
            yield directory
        finally:
            cluster.stop()


def world(directory: pathlib.Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = world_command.main(['--dir', str(directory), *args])
    out, err = capsys.readouterr()
    return code, out, err


def rule_weights(clients: Any, rule_arn: str) -> dict[str, int]:
    rule = clients('elbv2').describe_rules(RuleArns=[rule_arn])['Rules'][0]
    return {g['TargetGroupArn']: g['Weight'] for g in rule['Actions'][0]['ForwardConfig']['TargetGroups']}


@pytest.mark.parametrize('strategy', ['BlueGreen', 'Canary', 'Linear'])
def test_an_ecs_strategy_gets_its_rules_role_and_a_rollout_spec(
        sandbox_dir: pathlib.Path, capsys: pytest.CaptureFixture[str], strategy: str) -> None:
    service = f'web-{strategy.lower()}'
    code, out, err = world(sandbox_dir, capsys, '--service', service, '--strategy', strategy)
    assert code == 0, err
    resource = yaml.safe_load(out)
    assert out.startswith('# panda-deploy sandbox world: ')
    spec = resource['spec']
    assert set(spec) == {'aws', 'image', 'ecs', 'rollout'}  # all but source and healthCheck
    assert spec['aws'] == {'region': REGION, 'credentialsSecretRef': {'name': SECRET_NAME}}
    assert spec['ecs']['service'] == service and spec['ecs']['cluster'] == f'{service}-cluster'
    rollout = spec['rollout']
    assert rollout['strategy'] == strategy and rollout['promotion'] == 'auto' and rollout['bakeTimeMinutes'] == 0
    assert set(rollout['loadBalancer']) == ROLLOUT_LOAD_BALANCER
    steps = {'Canary': ('canary', {'percent', 'bakeMinutes'}), 'Linear': ('linear', {'stepPercent', 'stepBakeMinutes'})}
    assert set(rollout) - {'strategy', 'loadBalancer', 'bakeTimeMinutes', 'promotion'} == (
        {steps[strategy][0]} if strategy in steps else set())
    if strategy in steps:
        assert set(rollout[steps[strategy][0]]) == steps[strategy][1]

    clients = sandbox_clients(read_env(sandbox_dir)['AWS_ENDPOINT_URL'])
    lb = rollout['loadBalancer']
    for rule in (lb['productionListenerRuleArn'], lb['testListenerRuleArn']):  # ECS moves these weights
        assert rule_weights(clients, rule) == {lb['targetGroupArn']: 100, lb['alternateTargetGroupArn']: 0}
    role = clients('iam').get_role(RoleName=lb['roleArn'].rsplit('/', 1)[1])['Role']
    assert 'ecs.amazonaws.com' in str(role['AssumeRolePolicyDocument'])


def test_code_deploy_gets_its_application_and_a_spec_the_models_accept(
        sandbox_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = world(sandbox_dir, capsys, '--service', 'web', '--strategy', 'CodeDeploy')
    assert code == 0, err
    resource = yaml.safe_load(out)
    assert resource['kind'] == 'PandaDeploy' and resource['metadata'] == {'name': 'web', 'namespace': 'default'}
    assert set(resource['spec']) == {'aws', 'image', 'ecs', 'blueGreen'}
    spec = PandaDeploySpec.model_validate({**resource['spec'], 'source': {'url': 'file:///srv/git/web'}})
    assert spec.blue_green.load_balancer is not None and spec.blue_green.code_deploy.service_role_arn

    clients = sandbox_clients(read_env(sandbox_dir)['AWS_ENDPOINT_URL'])
    assert clients('codedeploy').get_application(applicationName='web')['application']['computePlatform'] == 'ECS'
    dns_name = clients('elbv2').describe_load_balancers(Names=['web-alb'])['LoadBalancers'][0]['DNSName']
    found = read_world(clients, dns_name)  # what the running stand-in routes by
    assert (found.cluster, found.service) == ('web-cluster', 'web') and region_of(dns_name) == REGION
    assert (found.blue_target_group_arn, found.production_listener_arn) == (
        spec.blue_green.load_balancer.blue_target_group_arn, spec.blue_green.load_balancer.production_listener_arn)


def test_another_namespace_and_region(sandbox_dir: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = world(sandbox_dir, capsys, '--service', 'api', '--namespace', 'team-a', '--region', 'us-east-1')
    assert code == 0, err
    resource = yaml.safe_load(out)
    assert resource['metadata']['namespace'] == 'team-a' and resource['spec']['aws']['region'] == 'us-east-1'
    assert resource['spec']['rollout']['strategy'] == 'BlueGreen'  # the default
    with kubernetes.config.new_client_from_config(config_file=read_env(sandbox_dir)['KUBECONFIG']) as api:
        secret = kubernetes.client.CoreV1Api(api).read_namespaced_secret(SECRET_NAME, 'team-a')
    assert secret.data['accessKeyId']  # the sandbox keys, made in the namespace the resource goes to
    assert SANDBOX_KEYS['secretAccessKey'] not in out
    clients = sandbox_clients(read_env(sandbox_dir)['AWS_ENDPOINT_URL'], region='us-east-1')
    assert clients('elbv2').describe_load_balancers(Names=['api-alb'])['LoadBalancers']


def test_a_service_twice_or_no_sandbox_is_refused(sandbox_dir: pathlib.Path, tmp_path: pathlib.Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert world(sandbox_dir, capsys, '--service', 'twice')[0] == 0
    code, out, err = world(sandbox_dir, capsys, '--service', 'twice')
    assert (code, out) == (1, '') and 'already has a world' in err
    code, out, err = world(tmp_path, capsys, '--service', 'web')
    assert (code, out) == (2, '') and 'panda-deploy sandbox up --dir' in err
