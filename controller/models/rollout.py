"""`spec.rollout`: how a new task definition reaches production (`kubectl explain pd.spec.rollout`).

Since July 2025 Amazon ECS deploys blue/green, canary and linear itself (the
service's `deploymentConfiguration.strategy`), without CodeDeploy. The three
ECS strategies share one shape: the load balancer wiring ECS moves (a target
group pair and the production and test listener rules), a bake time, and the
operator's promotion. `CodeDeploy` is the path from before, configured by
`spec.blueGreen`; a manifest without `spec.rollout` means it, unchanged.
"""
from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field

from controller.models.base import _ARN_LENGTH, _ROLE_ARN, Model


class Strategy(str, enum.Enum):
    blue_green = 'BlueGreen'
    canary = 'Canary'
    linear = 'Linear'
    code_deploy = 'CodeDeploy'

    @property
    def ecs_native(self) -> bool:
        """Deployed by ECS itself (a service deploymentConfiguration.strategy), not by CodeDeploy."""
        return self != Strategy.code_deploy

    @property
    def ecs_name(self) -> str:
        """The service's deploymentConfiguration.strategy: BLUE_GREEN, CANARY or LINEAR."""
        return {'BlueGreen': 'BLUE_GREEN', 'Canary': 'CANARY', 'Linear': 'LINEAR'}[self.value]


class Promotion(str, enum.Enum):
    auto = 'auto'
    manual = 'manual'


_TARGET_GROUP_ARN = r'^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup/.+$'
_LISTENER_RULE_ARN = r'^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:listener-rule/.+$'
_MAX_BAKE_MINUTES = 1440  # AWS's bound for bakeTimeInMinutes, canaryBakeTimeInMinutes, stepBakeTimeInMinutes


class RolloutLoadBalancer(Model):
    """The Application Load Balancer resources ECS moves traffic with (its advancedConfiguration)."""
    target_group_arn: Annotated[str, Field(pattern=_TARGET_GROUP_ARN, max_length=_ARN_LENGTH)]
    """Target group the service starts on ("blue"); the service's loadBalancers[0].targetGroupArn."""
    alternate_target_group_arn: Annotated[str, Field(pattern=_TARGET_GROUP_ARN, max_length=_ARN_LENGTH)]
    """Second target group of the pair ("green"): each new revision registers with the one not serving production."""
    production_listener_rule_arn: Annotated[str, Field(pattern=_LISTENER_RULE_ARN, max_length=_ARN_LENGTH)]
    """Listener rule forwarding production traffic to both target groups (weights 100/0); ECS changes its weights."""
    test_listener_rule_arn: Annotated[str | None, Field(pattern=_LISTENER_RULE_ARN, max_length=_ARN_LENGTH)] = None
    """Listener rule that reaches the new revision before production does: health checks use its listener."""
    role_arn: Annotated[str, Field(pattern=_ROLE_ARN, max_length=_ARN_LENGTH)]
    """Role ECS assumes to change the listener rules (trusts ecs.amazonaws.com; AmazonECSInfrastructureRolePolicyForLoadBalancers)."""


class CanarySteps(Model):
    """Canary: a share of production first, then the rest."""
    percent: Annotated[float, Field(ge=0.1, le=100, strict=True)] = 10
    """Share of production traffic (percent, a multiple of 0.1) the new revision gets first."""
    bake_minutes: Annotated[int, Field(ge=0, le=_MAX_BAKE_MINUTES, strict=True)] = 5
    """Minutes the canary share is held (and checked) before the rest moves."""


class LinearSteps(Model):
    """Linear: production traffic moved in equal steps."""
    step_percent: Annotated[float, Field(ge=3, le=100, strict=True)] = 20
    """Share of production traffic (percent, a multiple of 0.1) moved at each step."""
    step_bake_minutes: Annotated[int, Field(ge=0, le=_MAX_BAKE_MINUTES, strict=True)] = 2
    """Minutes each step is held (and checked) before the next."""


class Rollout(Model):
    """How a new revision reaches production: ECS's own BlueGreen, Canary or Linear deployment, or CodeDeploy."""
    strategy: Strategy = Strategy.blue_green
    """BlueGreen (default), Canary or Linear: deployed by ECS itself; CodeDeploy: through spec.blueGreen.codeDeploy."""
    load_balancer: RolloutLoadBalancer | None = None
    """Target groups, listener rules and role ECS uses; required for BlueGreen, Canary and Linear."""
    bake_time_minutes: Annotated[int, Field(ge=0, le=_MAX_BAKE_MINUTES, strict=True)] = 0
    """Minutes both revisions keep running after production moved (instant rollback meanwhile), then blue stops."""
    canary: CanarySteps | None = None
    """Canary steps; only with strategy Canary (default: 10 percent for 5 minutes)."""
    linear: LinearSteps | None = None
    """Linear steps; only with strategy Linear (default: 20 percent every 2 minutes)."""
    promotion: Promotion | None = None
    """auto (default): continue once the checks pass; manual: also wait for deploy.panda.dev/promote=<the run's deploymentId>."""
