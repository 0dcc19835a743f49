"""The ECS, ELBv2 and CodeDeploy pieces of moto's backends that the simulator reads and acts on.

The simulator calls moto's backends directly, not its HTTP API, so that what a
deployment does shows in ``describe_listeners`` and ``describe_task_sets``
exactly as moto would answer them.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from moto.backends import get_backend


class MotoBackends:
    """moto's backends for one account and region."""

    def __init__(self, *, account: str, region: str) -> None:
        self.ecs: Any = get_backend('ecs')[account][region]
        self.elbv2: Any = get_backend('elbv2')[account][region]
        self.codedeploy: Any = get_backend('codedeploy')[account][region]

    # -- ELBv2 --

    def listener(self, arn: str) -> Any | None:
        for load_balancer in self.elbv2.load_balancers.values():
            if arn in load_balancer.listeners:
                return load_balancer.listeners[arn]
        return None

    def target_group_arn(self, name: str) -> str | None:
        return next((tg.arn for tg in self.elbv2.target_groups.values() if tg.name == name), None)

    def forwarded_target_group(self, listener_arn: str) -> str | None:
        """The target group a listener's default action forwards (most of) its traffic to."""
        listener = self.listener(listener_arn)
        if listener is None or not listener.default_actions:
            return None
        data = listener.default_actions[0].data
        if data.get('TargetGroupArn'):
            return str(data['TargetGroupArn'])
        groups = (data.get('ForwardConfig') or {}).get('TargetGroups') or []
        best = max(groups, key=lambda g: int(g.get('Weight', 1)), default=None)
        return str(best['TargetGroupArn']) if best else None

    def route(self, listener_arns: Iterable[str], *, weights: Mapping[str, int]) -> None:
        """Point listeners' default action at target groups by weight (one group: a plain forward)."""
        live = {arn: w for arn, w in weights.items() if w > 0}
        if len(live) == 1:
            action: dict[str, Any] = {'Type': 'forward', 'TargetGroupArn': next(iter(live))}
        else:
            action = {'Type': 'forward', 'ForwardConfig': {'TargetGroups': [
                {'TargetGroupArn': arn, 'Weight': w} for arn, w in weights.items()]}}
        for arn in listener_arns:
            self.elbv2.modify_listener(arn, certificates=[], actions=[json.loads(json.dumps(action))])

    def rule(self, arn: str) -> tuple[Any, Any] | None:
        """(listener, rule) for a listener rule's ARN, or None."""
        for load_balancer in self.elbv2.load_balancers.values():
            for listener in load_balancer.listeners.values():
                if arn in listener.rules:
                    return listener, listener.rules[arn]
        return None

    def forward_weights(self, arn: str) -> dict[str, int] | None:
        """The target groups a listener rule (ALB) or a listener (NLB) forwards to, by weight; None if it is unknown.

        Raises ValueError for a rule that also does something else than forward (ECS refuses those)."""
        found = self.rule(arn)
        actions = found[1].actions if found else getattr(self.listener(arn), 'default_actions', None)
        if actions is None:
            return None
        if any(action.type != 'forward' for action in actions):
            raise ValueError(f'{arn} has actions other than forward ({", ".join(a.type for a in actions)})')
        weights: dict[str, int] = {}
        for action in actions:
            if action.data.get('TargetGroupArn'):
                weights[str(action.data['TargetGroupArn'])] = 1
            for group in (action.data.get('ForwardConfig') or {}).get('TargetGroups') or []:
                weights[str(group['TargetGroupArn'])] = int(group.get('Weight', 1))
        return weights

    def forward(self, arn: str, *, weights: Mapping[str, int]) -> None:
        """Make a listener rule (or a listener) forward to these target groups by weight, as ModifyRule would."""
        action = {'Type': 'forward', 'ForwardConfig': {'TargetGroups': [
            {'TargetGroupArn': group, 'Weight': int(weight)} for group, weight in weights.items()]}}
        found = self.rule(arn)
        if found is not None and not found[1].is_default:
            self.elbv2.modify_rule(arn, conditions=[], actions=[action])
            return
        listener_arn = found[0].arn if found is not None else arn
        if self.listener(listener_arn) is None:
            raise LookupError(f'no listener rule or listener {arn}')
        self.elbv2.modify_listener(listener_arn, certificates=[], actions=[action])

    # -- ECS --

    def service(self, *, cluster: str, service: str) -> Any | None:
        return self.ecs.services.get(f'{cluster.split("/")[-1]}:{service.split("/")[-1]}')

    def image(self, task_definition: str, container_name: str) -> str:
        """The image of one container of a task definition ('' when either is unknown)."""
        try:
            definition = self.ecs.describe_task_definition(task_definition)
        except Exception:  # noqa: BLE001 -- a deregistered or unknown definition has no image to report
            return ''
        container = next((c for c in definition.container_definitions if c.get('name') == container_name), None)
        return str((container or {}).get('image') or '')

    @staticmethod
    def mark_running(task_set: Any, *, desired: int) -> None:
        """moto's task sets have no counts; report the desired tasks as running (moto runs none)."""
        task_set.scale = {'value': 100.0, 'unit': 'PERCENT'}
        task_set.computed_desired_count = desired
        task_set.running_count = desired
        task_set.pending_count = 0

    # -- CodeDeploy --

    def has_deployment(self, deployment_id: str) -> bool:
        """Whether moto keeps this deployment (an EC2/on-premises or Lambda one, which stays moto's)."""
        return deployment_id in self.codedeploy.deployments
