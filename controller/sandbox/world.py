"""`panda-deploy sandbox world --dir DIR --service NAME`: one service's AWS world in a running sandbox, and its spec.

Why: with `sandbox up` running, a user's own repository needs what a platform
team would have made in AWS before adopting the operator. This creates it in
the sandbox AWS that `DIR/env` names (`controller.sandbox.stack.world`'s
`create_aws_world`: ECS cluster, ALB, listeners :80 production and :8080
test, a blue and a green target group, a role), then for the ECS strategies
the production and test listener rules forwarding to both target groups and
the role ECS uses to change them, or for `CodeDeploy` the application (the
operator creates the deployment group once the service exists); it tags the load balancer
(`worlds.tag_world`) so the running stand-in routes its URLs, makes sure the
credentials Secret exists in `--namespace`, and prints a PandaDeploy whose
spec is complete but for `source` and `healthCheck` (field names: DESIGN.md,
"Interfaces added in the second round").
"""
from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import botocore.exceptions
import kubernetes
import yaml

from controller.models import API_VERSION, KIND
from controller.sandbox.stack.envfile import SECRET_NAME, NoSandbox, ensure_secret, read_env
from controller.sandbox.stack.world import REGION, AwsWorld, create_aws_world, sandbox_clients
from controller.sandbox.stack.worlds import tag_world

PROG = 'panda-deploy sandbox world'
STRATEGIES = ('BlueGreen', 'Canary', 'Linear', 'CodeDeploy')
# Sandbox defaults: short, so that a canary or linear rollout is watched in minutes (the sandbox's minute is real).
STEPS = {'Canary': ('canary', {'percent': 10, 'bakeMinutes': 1}),
         'Linear': ('linear', {'stepPercent': 25, 'stepBakeMinutes': 1})}
INFRASTRUCTURE_POLICY = 'arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers'
MAX_SERVICE = 26  # target group names (`NAME-green`) hold 32 characters


class WorldFailed(Exception):
    """The world cannot be made; the message says why."""


def listener_rule(clients: Callable[[str], Any], listener_arn: str, world: AwsWorld) -> str:
    """A rule forwarding every path to blue (weight 100) and green (0), as ECS blue/green wants: ECS moves the weights."""
    rule = clients('elbv2').create_rule(
        ListenerArn=listener_arn, Priority=1,
        Conditions=[{'Field': 'path-pattern', 'PathPatternConfig': {'Values': ['/*']}}],
        Actions=[{'Type': 'forward', 'ForwardConfig': {'TargetGroups': [
            {'TargetGroupArn': world.blue_target_group_arn, 'Weight': 100},
            {'TargetGroupArn': world.green_target_group_arn, 'Weight': 0}]}}])
    return str(rule['Rules'][0]['RuleArn'])


def infrastructure_role(clients: Callable[[str], Any], service: str) -> str:
    """The role ECS assumes to move the listener rules (AWS's managed policy for load balancers attached)."""
    iam = clients('iam')
    trust = {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 'sts:AssumeRole',
                                                     'Principal': {'Service': 'ecs.amazonaws.com'}}]}
    role = iam.create_role(RoleName=f'{service}-ecs-infrastructure', AssumeRolePolicyDocument=json.dumps(trust))
    with contextlib.suppress(botocore.exceptions.ClientError):  # a sandbox without AWS's managed policies
        iam.attach_role_policy(RoleName=f'{service}-ecs-infrastructure', PolicyArn=INFRASTRUCTURE_POLICY)
    return str(role['Role']['Arn'])


def ecs_rollout(clients: Callable[[str], Any], world: AwsWorld, strategy: str) -> dict[str, Any]:
    """`spec.rollout` for an ECS strategy, its rules and role created."""
    rollout: dict[str, Any] = {'strategy': strategy, 'loadBalancer': {
        'targetGroupArn': world.blue_target_group_arn,
        'alternateTargetGroupArn': world.green_target_group_arn,
        'productionListenerRuleArn': listener_rule(clients, world.production_listener_arn, world),
        'testListenerRuleArn': listener_rule(clients, world.test_listener_arn, world),
        'roleArn': infrastructure_role(clients, world.service)}, 'bakeTimeMinutes': 0}
    if strategy in STEPS:
        key, steps = STEPS[strategy]
        rollout[key] = dict(steps)
    rollout['promotion'] = 'auto'
    return rollout


def code_deploy(clients: Callable[[str], Any], world: AwsWorld) -> dict[str, Any]:
    """`spec.blueGreen`, its CodeDeploy application made now.

    Not its deployment group: CodeDeploy refuses one for an ECS service that does
    not exist yet, so the operator creates it (from `loadBalancer` and
    `serviceRoleArn`) on the first rollout, once stage 3 has made the service."""
    clients('codedeploy').create_application(applicationName=world.service, computePlatform='ECS')
    return {'codeDeploy': {'application': world.service, 'deploymentGroup': f'{world.service}-dg',
                           'deploymentConfig': 'CodeDeployDefault.ECSAllAtOnce', 'serviceRoleArn': world.role_arn},
            'loadBalancer': {'productionListenerArn': world.production_listener_arn,
                             'testListenerArn': world.test_listener_arn,
                             'blueTargetGroupArn': world.blue_target_group_arn,
                             'greenTargetGroupArn': world.green_target_group_arn},
            'promotion': 'auto'}


def make_world(clients: Callable[[str], Any], *, service: str, cluster: str, region: str,
               strategy: str, namespace: str) -> tuple[dict[str, Any], AwsWorld]:
    """Create the world in the sandbox; the PandaDeploy for it, but for spec.source and spec.healthCheck."""
    elb = clients('elbv2')
    with contextlib.suppress(botocore.exceptions.ClientError):
        if elb.describe_load_balancers(Names=[f'{service}-alb'])['LoadBalancers']:
            raise WorldFailed(f'service {service} already has a world in this sandbox ({region}); '
                              f'choose another --service')
    world = create_aws_world(clients, cluster=cluster, service=service, region=region)
    load_balancer = elb.describe_load_balancers(Names=[f'{service}-alb'])['LoadBalancers'][0]['LoadBalancerArn']
    spec: dict[str, Any] = {
        'aws': {'region': region, 'credentialsSecretRef': {'name': SECRET_NAME}},
        'image': {'repository': service.lower()},
        'ecs': {'cluster': cluster, 'service': service, 'containerName': 'app', 'containerPort': 8080,
                'cpu': '256', 'memory': '512', 'desiredCount': 1}}
    if strategy == 'CodeDeploy':
        spec['blueGreen'] = code_deploy(clients, world)
    else:
        spec['rollout'] = ecs_rollout(clients, world, strategy)
    tag_world(clients, load_balancer, world)
    return {'apiVersion': API_VERSION, 'kind': KIND, 'metadata': {'name': service.lower(), 'namespace': namespace},
            'spec': spec}, world


def render(resource: dict[str, Any], world: AwsWorld) -> str:
    head = [f'# {PROG}: service {world.service} in cluster {world.cluster} ({resource["spec"]["aws"]["region"]}); '
            f'production http://{world.dns_name}/ (listener :80), test :8080.',
            '# Add spec.source (url: file:///path/to/your/repo or https://..., branch: main) and, if you like,',
            '# spec.healthCheck (path, checks); then: kubectl apply -f THIS_FILE']
    return '\n'.join(head) + '\n' + yaml.safe_dump(resource, sort_keys=False)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('--dir', required=True, type=pathlib.Path, help='the directory `sandbox up` writes')
    parser.add_argument('--service', required=True, help=f'the ECS service (and resource) name, {MAX_SERVICE} '
                                                         f'characters at most: letters, digits and -')
    parser.add_argument('--strategy', choices=STRATEGIES, default='BlueGreen', help='spec.rollout.strategy')
    parser.add_argument('--region', default=REGION, help=f'the AWS region (default {REGION})')
    parser.add_argument('--namespace', default='default', help='where the resource goes; the credentials '
                                                               'Secret is made there when missing')
    parser.add_argument('--cluster', help='the ECS cluster (default: SERVICE-cluster)')
    args = parser.parse_args(argv)
    if not (0 < len(args.service) <= MAX_SERVICE and args.service.replace('-', '').isalnum()
            and args.service.isascii() and not args.service.startswith('-')):
        parser.error(f'--service: {MAX_SERVICE} characters at most, letters, digits and - (not first)')
    return args


def main(argv: list[str] | None = None) -> int:
    """0 with the manifest on stdout; 1 when the world cannot be made; 2 without a running sandbox."""
    args = parse(argv)
    try:
        env = read_env(args.dir.resolve())
        clients = sandbox_clients(env['AWS_ENDPOINT_URL'], region=args.region)
        resource, world = make_world(clients, service=args.service, cluster=args.cluster or f'{args.service}-cluster',
                              region=args.region, strategy=args.strategy, namespace=args.namespace)
        with kubernetes.config.new_client_from_config(config_file=env['KUBECONFIG']) as api:
            ensure_secret(api, args.namespace)
    except NoSandbox as exc:
        print(f'{PROG}: {exc}', file=sys.stderr)
        return 2
    except (botocore.exceptions.EndpointConnectionError, kubernetes.client.ApiException, OSError) as exc:
        print(f'{PROG}: the sandbox in {args.dir} does not answer ({exc}); is `panda-deploy sandbox up` running?',
              file=sys.stderr)
        return 2
    except (WorldFailed, botocore.exceptions.ClientError) as exc:
        print(f'{PROG}: {exc}', file=sys.stderr)
        return 1
    sys.stdout.write(render(resource, world))
    return 0
