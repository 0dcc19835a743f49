"""ELBv2 through boto3: which colour serves production, and a URL for each colour.

Colours are names for the two target groups of the CodeDeploy deployment
group's pair, not for task sets: "blue" is the pair's first target group
(`targetGroupPairInfoList[0].targetGroups[0]`), "green" the second (see
`controller.adapters.traffic_layout.TrafficLayout`). CodeDeploy puts each new
revision in the target group that is not serving production and then points
the production listener at it, so the active colour alternates from one
rollout to the next: the production listener's forward target group is the
truth, read on every call.

URLs come from the load balancer's DNS name and the listeners' protocol and
port: the active colour is reached through the production listener, the
other colour through the test listener (None when the group has none).
"""
from __future__ import annotations

from typing import Any

from controller.adapters import Traffic
from controller.adapters.aws import AwsAdapter
from controller.adapters.traffic_layout import TrafficLayout, missing_layout_text, target_group_name, traffic_layout
from controller.errors import Reason, StageFailed
from controller.models import PandaDeploySpec

_DEFAULT_PORTS = {'http': 80, 'https': 443}


def forward_target_group(listener: dict[str, Any]) -> str | None:
    """The target group ARN a listener's default forward action sends (most of) the traffic to."""
    return forwarded_to(listener.get('DefaultActions') or [])


def listener_of_rule(rule_arn: str) -> str:
    """The listener ARN of a listener rule ARN (`…:listener-rule/app/lb/id/listener-id/rule-id`)."""
    prefix, _, resource = rule_arn.partition(':listener-rule/')
    return f'{prefix}:listener/{resource.rsplit("/", 1)[0]}'


def forwarded_to(actions: list[dict[str, Any]]) -> str | None:
    """The target group ARN a list of actions forwards (most of) the traffic to."""
    for action in sorted(actions, key=lambda a: a.get('Order') or 0):
        if action.get('Type') != 'forward':
            continue
        groups = (action.get('ForwardConfig') or {}).get('TargetGroups') or []
        if groups:
            # Weighted forward (CodeDeploy's linear and canary configs): the heavier group serves production.
            best = max(groups, key=lambda g: g.get('Weight', 1))
            return str(best['TargetGroupArn'])
        if action.get('TargetGroupArn'):
            return str(action['TargetGroupArn'])
    return None


def listener_url(*, dns_name: str, protocol: str, port: int) -> str:
    """`scheme://dns[:port]`: https for HTTPS and TLS listeners, http otherwise; default ports left out."""
    scheme = 'https' if protocol.upper() in ('HTTPS', 'TLS') else 'http'
    suffix = '' if _DEFAULT_PORTS.get(scheme) == port else f':{port}'
    return f'{scheme}://{dns_name}{suffix}'


class ListenerTraffic(AwsAdapter):
    """The `LoadBalancer` adapter: the production listener decides the active colour."""

    failure_reason = Reason.BLUE_GREEN_FAILED

    def traffic(self, *, spec: PandaDeploySpec) -> Traffic:
        """The active colour (production listener's target group) and both colours' URLs."""
        if spec.ecs_native:
            return self._rule_traffic(spec)
        layout = self._layout(spec)
        listener_arns = [*layout.production_listener_arns[:1], *layout.test_listener_arns[:1]]
        try:
            listeners = {str(found['ListenerArn']): found for found in
                         self._client('elbv2').describe_listeners(ListenerArns=listener_arns)['Listeners']}
        except Exception as exc:
            raise self._error(exc, f'ELBv2 DescribeListeners {", ".join(listener_arns)}') from exc
        production = listeners.get(layout.production_listener_arns[0])
        if production is None:
            raise StageFailed(f'Production listener {layout.production_listener_arns[0]} not found',
                              reason=Reason.BLUE_GREEN_FAILED)
        active_group = forward_target_group(production)
        active = layout.color_of(active_group) if active_group else None
        if active is None:
            raise StageFailed(f'Production listener {production["ListenerArn"]} forwards to '
                              f'{target_group_name(active_group) if active_group else "no target group"}, '
                              f'which is neither blue ({layout.blue_target_group}) nor green '
                              f'({layout.green_target_group})', reason=Reason.BLUE_GREEN_FAILED)
        test = listeners.get(layout.test_listener_arns[0]) if layout.test_listener_arns else None
        dns = self._dns_names({str(found['LoadBalancerArn']) for found in (production, test) if found})
        production_url = self._url(production, dns)
        test_url = self._url(test, dns) if test is not None else None
        if active == 'blue':
            return Traffic(active_color='blue', blue_url=production_url, green_url=test_url)
        return Traffic(active_color='green', blue_url=test_url, green_url=production_url)

    # -- inside ------------------------------------------------------------------------

    def _rule_traffic(self, spec: PandaDeploySpec) -> Traffic:
        """ECS's own deployments: the production listener rule's heavier target group is the active colour
        (blue: spec.rollout.loadBalancer.targetGroupArn, green: the alternate); the production rule's listener
        reaches it, the test rule's listener the other colour."""
        assert spec.rollout is not None and spec.rollout.load_balancer is not None
        wiring = spec.rollout.load_balancer
        rule_arns = [wiring.production_listener_rule_arn, *filter(None, [wiring.test_listener_rule_arn])]
        elbv2 = self._client('elbv2')
        try:
            rules = {str(r['RuleArn']): r for r in elbv2.describe_rules(RuleArns=rule_arns)['Rules']}
            listeners = elbv2.describe_listeners(ListenerArns=[listener_of_rule(a) for a in rule_arns])['Listeners']
        except Exception as exc:
            raise self._error(exc, f'ELBv2 DescribeRules {", ".join(rule_arns)}') from exc
        production = rules.get(wiring.production_listener_rule_arn)
        active_group = forwarded_to(production.get('Actions') or []) if production else None
        colours = {wiring.target_group_arn: 'blue', wiring.alternate_target_group_arn: 'green'}
        if active_group not in colours:
            raise StageFailed(f'Production listener rule {wiring.production_listener_rule_arn} forwards to '
                              f'{target_group_name(active_group) if active_group else "no target group"}, which is '
                              f'neither blue ({target_group_name(wiring.target_group_arn)}) nor green '
                              f'({target_group_name(wiring.alternate_target_group_arn)})',
                              reason=Reason.BLUE_GREEN_FAILED)
        dns = self._dns_names({str(found['LoadBalancerArn']) for found in listeners})
        by_arn = {str(found['ListenerArn']): found for found in listeners}
        urls = [self._url(by_arn[listener_of_rule(a)], dns) if listener_of_rule(a) in by_arn else None
                for a in rule_arns]
        production_url, test_url = urls[0], (urls[1] if len(urls) > 1 else None)
        if colours[str(active_group)] == 'blue':
            return Traffic(active_color='blue', blue_url=production_url, green_url=test_url)
        return Traffic(active_color='green', blue_url=test_url, green_url=production_url)

    def _layout(self, spec: PandaDeploySpec) -> TrafficLayout:
        code_deploy = spec.blue_green.code_deploy
        try:
            layout = traffic_layout(spec=spec, codedeploy=self._client('codedeploy'))
        except Exception as exc:
            raise self._error(exc, f'CodeDeploy GetDeploymentGroup {code_deploy.application}/'
                                   f'{code_deploy.deployment_group}') from exc
        if layout is None or not layout.production_listener_arns:
            raise StageFailed(f'Cannot tell blue from green: {missing_layout_text(spec)}',
                              reason=Reason.BLUE_GREEN_FAILED)
        return layout

    def _dns_names(self, load_balancer_arns: set[str]) -> dict[str, str]:
        try:
            found = self._client('elbv2').describe_load_balancers(
                LoadBalancerArns=sorted(load_balancer_arns))['LoadBalancers']
        except Exception as exc:
            raise self._error(exc, 'ELBv2 DescribeLoadBalancers') from exc
        return {str(lb['LoadBalancerArn']): str(lb['DNSName']) for lb in found}

    @staticmethod
    def _url(listener: dict[str, Any], dns: dict[str, str]) -> str | None:
        name = dns.get(str(listener.get('LoadBalancerArn')))
        if not name:
            return None
        return listener_url(dns_name=name, protocol=str(listener.get('Protocol') or 'HTTP'),
                            port=int(listener.get('Port') or 80))
