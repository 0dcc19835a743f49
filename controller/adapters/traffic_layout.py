"""The blue/green traffic layout: which target group is "blue", which "green", and their listeners.

CodeDeploy, ECS and ELBv2 must agree on the colours: the ECS service is
created on blue, CodeDeploy switches the listeners between the pair, and the
load-balancer adapter names the colour serving production. So the layout is
read in one place, here, by all three adapters: from the CodeDeploy
deployment group when it exists and names a target group pair (that is what
CodeDeploy actually switches), else from `spec.blueGreen.loadBalancer`
(which is what lets the operator create a missing deployment group).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from controller.adapters.aws import error_code
from controller.models import PandaDeploySpec

# GetDeploymentGroup's (and ListDeployments') answers when the application or the group is missing.
GROUP_MISSING_CODES = ('ApplicationDoesNotExistException', 'DeploymentGroupDoesNotExistException')


@dataclasses.dataclass(frozen=True)
class TrafficLayout:
    """The two target groups and the listeners that CodeDeploy switches between them.

    "Blue" is the first target group of the deployment group's pair
    (`loadBalancerInfo.targetGroupPairInfoList[0].targetGroups[0]`), "green"
    the second; the ECS service is created on blue. Target groups are named
    as CodeDeploy names them (by name); ARNs are known only when the spec
    gave them.
    """
    blue_target_group: str
    green_target_group: str
    production_listener_arns: tuple[str, ...]
    test_listener_arns: tuple[str, ...] = ()
    blue_target_group_arn: str | None = None
    green_target_group_arn: str | None = None
    source: str = 'deployment group'  # or 'spec'

    def color_of(self, target_group: str) -> str | None:
        """'blue' or 'green' for a target group name or ARN, None when it is neither."""
        name = target_group_name(target_group)
        if name == self.blue_target_group:
            return 'blue'
        if name == self.green_target_group:
            return 'green'
        return None


def target_group_name(name_or_arn: str) -> str:
    """The name in a target group ARN (`…:targetgroup/<name>/<id>`), or the argument when it is a name."""
    if name_or_arn.startswith('arn:'):
        resource = name_or_arn.split(':', 5)[-1]
        parts = resource.split('/')
        if len(parts) >= 2 and parts[0] == 'targetgroup':
            return parts[1]
    return name_or_arn


def layout_from_group(group: dict[str, Any]) -> TrafficLayout | None:
    """The layout a deployment group (GetDeploymentGroup's deploymentGroupInfo) defines, if it has a pair."""
    pairs = (group.get('loadBalancerInfo') or {}).get('targetGroupPairInfoList') or []
    if not pairs:
        return None
    pair = pairs[0]
    groups = [str(g.get('name') or '') for g in pair.get('targetGroups') or []]
    if len(groups) != 2 or not all(groups):
        return None
    production = tuple((pair.get('prodTrafficRoute') or {}).get('listenerArns') or ())
    test = tuple((pair.get('testTrafficRoute') or {}).get('listenerArns') or ())
    return TrafficLayout(blue_target_group=groups[0], green_target_group=groups[1],
                         production_listener_arns=production, test_listener_arns=test)


def layout_from_spec(spec: PandaDeploySpec) -> TrafficLayout | None:
    """The layout `spec.blueGreen.loadBalancer` names, or None when the spec names none."""
    found = spec.blue_green.load_balancer
    if found is None:
        return None
    blue, green, test = found.blue_target_group_arn, found.green_target_group_arn, found.test_listener_arn
    return TrafficLayout(blue_target_group=target_group_name(blue), green_target_group=target_group_name(green),
                         production_listener_arns=(found.production_listener_arn,),
                         test_listener_arns=(test,) if test else (),
                         blue_target_group_arn=blue, green_target_group_arn=green, source='spec')


def traffic_layout(*, spec: PandaDeploySpec, codedeploy: Any) -> TrafficLayout | None:
    """The deployment group's layout when the group exists and has one, else the spec's, else None.

    `codedeploy` is a boto3 CodeDeploy client. The group wins because it is
    what CodeDeploy actually switches. Errors other than a missing
    application or group propagate (botocore's), for the caller to map to
    its own reason.
    """
    code_deploy = spec.blue_green.code_deploy
    try:
        group = codedeploy.get_deployment_group(applicationName=code_deploy.application,
                                                deploymentGroupName=code_deploy.deployment_group)
    except Exception as exc:
        if error_code(exc) not in GROUP_MISSING_CODES:
            raise
    else:
        found = layout_from_group(group.get('deploymentGroupInfo') or {})
        if found is not None:
            return found
    return layout_from_spec(spec)


def missing_layout_text(spec: PandaDeploySpec) -> str:
    """Why no layout could be found, and what to set."""
    code_deploy = spec.blue_green.code_deploy
    return (f'CodeDeploy deployment group {code_deploy.application}/{code_deploy.deployment_group} '
            f'does not exist or names no target group pair, and spec.blueGreen.loadBalancer does not name '
            f'the listeners and target groups')
