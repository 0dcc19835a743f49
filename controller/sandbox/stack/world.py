"""The AWS world in the sandbox before the operator acts, and the stack's own clients of it.

It is what a platform team would have before adopting the operator: an ECS
cluster, an ALB with a blue and a green target group, a production listener
(port 80) and a test listener (port 8080). The operator creates the rest, as
it would in AWS: the ECS service on the first rollout, the CodeDeploy
application and deployment group (from `spec.blueGreen.loadBalancer` and
`codeDeploy.serviceRoleArn`) on the first rollout that needs one.
"""
from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from typing import Any

import boto3.session

REGION = 'ap-northeast-2'  # examples/pandadeploy.yaml's


@dataclasses.dataclass(frozen=True)
class AwsWorld:
    """What exists in the sandbox before the operator acts."""
    cluster: str
    service: str
    dns_name: str
    production_listener_arn: str
    test_listener_arn: str
    blue_target_group_arn: str
    green_target_group_arn: str
    role_arn: str

    def colour_of(self, target_group_arn: str) -> str:
        return {self.blue_target_group_arn: 'blue', self.green_target_group_arn: 'green'}.get(
            target_group_arn, target_group_arn.rsplit('/', 2)[-2])


def create_aws_world(clients: Callable[[str], Any], *, cluster: str, service: str, region: str = REGION) -> AwsWorld:
    """ECS cluster, VPC, ALB, blue and green target groups, production (80) and test (8080) listeners,
    and the role CodeDeploy would assume; no service and no CodeDeploy group (the operator makes those)."""
    clients('ecs').create_cluster(clusterName=cluster)
    ec2, elb, iam = clients('ec2'), clients('elbv2'), clients('iam')
    vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f'10.0.{i}.0/24', AvailabilityZone=f'{region}{zone}')
               ['Subnet']['SubnetId'] for i, zone in enumerate('ac')]
    lb = elb.create_load_balancer(Name=f'{service}-alb', Subnets=subnets, Type='application')['LoadBalancers'][0]
    blue, green = (elb.create_target_group(Name=f'{service}-{colour}', Protocol='HTTP', Port=8080, VpcId=vpc,
                                           TargetType='ip', HealthCheckPath='/health')
                   ['TargetGroups'][0]['TargetGroupArn'] for colour in ('blue', 'green'))
    production, test = (elb.create_listener(LoadBalancerArn=lb['LoadBalancerArn'], Protocol='HTTP', Port=port,
                                            DefaultActions=[{'Type': 'forward', 'TargetGroupArn': blue}])
                        ['Listeners'][0]['ListenerArn'] for port in (80, 8080))
    trust = {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 'sts:AssumeRole',
                                                     'Principal': {'Service': 'codedeploy.amazonaws.com'}}]}
    role = iam.create_role(RoleName=f'{service}-codedeploy', AssumeRolePolicyDocument=json.dumps(trust))
    return AwsWorld(cluster=cluster, service=service, dns_name=lb['DNSName'], production_listener_arn=production,
                    test_listener_arn=test, blue_target_group_arn=blue, green_target_group_arn=green,
                    role_arn=role['Role']['Arn'])


def sandbox_clients(aws_url: str, *, region: str = REGION) -> Callable[[str], Any]:
    """boto3 clients of the sandbox for the stack's own calls, one per service, made on first use."""
    session = boto3.session.Session(aws_access_key_id='demo', aws_secret_access_key='demo', region_name=region)
    made: dict[str, Any] = {}
    lock = threading.Lock()

    def client(service: str) -> Any:
        with lock:
            if service not in made:
                made[service] = session.client(service, endpoint_url=aws_url)
            return made[service]
    return client
