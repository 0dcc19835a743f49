"""What a service's ``deploymentConfiguration`` and ``loadBalancers`` ask of a native ECS deployment, checked.

AWS's API reference (``DeploymentConfiguration``, ``CanaryConfiguration``,
``LinearConfiguration``, ``DeploymentLifecycleHook``,
``DeploymentLifecycleHookTimeoutConfiguration``, ``AdvancedConfiguration``)
gives the ranges and defaults used here; botocore validates types and required
members on the client, not enum values or ranges, so those are checked here and
refused with ``InvalidParameterException`` as ECS refuses them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from controller.sandbox.aws.exceptions import EcsError

#: DeploymentStrategy values the simulator deploys (ROLLING stays moto's, inert).
NATIVE_STRATEGIES = frozenset({'BLUE_GREEN', 'CANARY', 'LINEAR'})
#: DeploymentLifecycleHookStage, in the order a deployment reaches them.
HOOK_STAGES = ('RECONCILE_SERVICE', 'PRE_SCALE_UP', 'POST_SCALE_UP', 'TEST_TRAFFIC_SHIFT', 'POST_TEST_TRAFFIC_SHIFT',
               'PRE_PRODUCTION_TRAFFIC_SHIFT', 'PRODUCTION_TRAFFIC_SHIFT', 'POST_PRODUCTION_TRAFFIC_SHIFT')
#: "PAUSE hooks cannot be configured at TEST_TRAFFIC_SHIFT or PRODUCTION_TRAFFIC_SHIFT stages."
PAUSE_REFUSED_STAGES = frozenset({'TEST_TRAFFIC_SHIFT', 'PRODUCTION_TRAFFIC_SHIFT'})
DEFAULT_HOOK_TIMEOUT_MINUTES = 1440
MAX_BAKE_MINUTES = 1440


def invalid(message: str) -> EcsError:
    return EcsError('InvalidParameterException', message)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HookSpec:
    """One ``lifecycleHooks`` entry."""

    target_type: str  # AWS_LAMBDA | PAUSE
    target_arn: str | None
    stages: tuple[str, ...]
    hook_details: Any
    timeout_minutes: int
    timeout_action: str  # CONTINUE | ROLLBACK


@dataclasses.dataclass(frozen=True, kw_only=True)
class Strategy:
    """How a deployment moves production traffic: steps of (green percent, minutes to hold it), then bake."""

    name: str  # BLUE_GREEN | CANARY | LINEAR
    steps: tuple[tuple[float, float], ...]
    bake_minutes: float
    hooks: tuple[HookSpec, ...]
    circuit_breaker: Mapping[str, Any]
    alarms: Mapping[str, Any]

    def hooks_at(self, stage: str) -> list[HookSpec]:
        return [hook for hook in self.hooks if stage in hook.stages]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Route:
    """One load balancer of the service: its two target groups and the listener rules ECS moves."""

    target_group: str
    alternate_target_group: str
    production_rule: str
    test_rule: str | None
    role_arn: str
    container_name: str
    container_port: int


def strategy_of(config: Mapping[str, Any] | None) -> Strategy | None:
    """The native strategy a ``deploymentConfiguration`` asks for (None: ROLLING or none); refuses a bad one."""
    config = config or {}
    name = config.get('strategy') or 'ROLLING'
    if name not in NATIVE_STRATEGIES:
        if name != 'ROLLING':
            raise invalid(f'The deployment strategy {name} is not valid; use ROLLING, BLUE_GREEN, LINEAR or CANARY.')
        return None
    for key, owner in (('canaryConfiguration', 'CANARY'), ('linearConfiguration', 'LINEAR')):
        if config.get(key) is not None and name != owner:
            raise invalid(f'{key} is only valid with the {owner} deployment strategy, not {name}.')
    return Strategy(name=name, steps=_steps(name, config),
                    bake_minutes=_minutes(config.get('bakeTimeInMinutes'), 'bakeTimeInMinutes', default=0),
                    hooks=tuple(_hook(hook, index) for index, hook in enumerate(config.get('lifecycleHooks') or [])),
                    circuit_breaker=config.get('deploymentCircuitBreaker') or {}, alarms=config.get('alarms') or {})


def _steps(name: str, config: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    if name == 'CANARY':
        canary = config.get('canaryConfiguration') or {}
        percent = _percent(canary.get('canaryPercent'), 'canaryPercent', default=5.0, low=0.1)
        hold = _minutes(canary.get('canaryBakeTimeInMinutes'), 'canaryBakeTimeInMinutes', default=10)
        return ((percent, hold), (100.0, 0.0)) if percent < 100 else ((100.0, 0.0),)
    if name == 'LINEAR':
        linear = config.get('linearConfiguration') or {}
        step = _percent(linear.get('stepPercent'), 'stepPercent', default=10.0, low=3.0)
        hold = _minutes(linear.get('stepBakeTimeInMinutes'), 'stepBakeTimeInMinutes', default=6)
        weights = [round(step * k, 1) for k in range(1, int(100 // step) + 1) if round(step * k, 1) < 100]
        return (*((w, hold) for w in weights), (100.0, 0.0))  # "not applied after reaching 100 percent"
    return ((100.0, 0.0),)


def _percent(value: Any, field: str, *, default: float, low: float) -> float:
    percent = default if value is None else float(value)
    if not low <= percent <= 100 or abs(percent * 10 - round(percent * 10)) > 1e-6:
        raise invalid(f'{field} must be a multiple of 0.1 from {low:g} to 100.0, not {percent:g}.')
    return round(percent, 1)


def _minutes(value: Any, field: str, *, default: int) -> float:
    minutes = default if value is None else int(value)
    if not 0 <= minutes <= MAX_BAKE_MINUTES:
        raise invalid(f'{field} must be from 0 to {MAX_BAKE_MINUTES} minutes, not {minutes}.')
    return float(minutes)


def _hook(hook: Mapping[str, Any], index: int) -> HookSpec:
    where = f'lifecycleHooks[{index}]'
    target_type = hook.get('targetType') or 'AWS_LAMBDA'
    if target_type not in ('AWS_LAMBDA', 'PAUSE'):
        raise invalid(f'{where}.targetType {target_type} is not valid; use AWS_LAMBDA or PAUSE.')
    stages = tuple(hook.get('lifecycleStages') or ())
    if not stages:
        raise invalid(f'{where}.lifecycleStages must name at least one lifecycle stage.')
    if unknown := [stage for stage in stages if stage not in HOOK_STAGES]:
        raise invalid(f'{where}.lifecycleStages: {unknown[0]} is not a lifecycle stage a hook can run at.')
    if target_type == 'PAUSE' and (refused := PAUSE_REFUSED_STAGES.intersection(stages)):
        raise invalid(f'{where}: PAUSE hooks cannot be configured at the {sorted(refused)[0]} stage; '
                      f'TEST_TRAFFIC_SHIFT and PRODUCTION_TRAFFIC_SHIFT are only valid for AWS_LAMBDA hooks.')
    if target_type == 'AWS_LAMBDA' and not (hook.get('hookTargetArn') and hook.get('roleArn')):
        raise invalid(f'{where}: an AWS_LAMBDA hook needs hookTargetArn (the function) and roleArn.')
    timeout = hook.get('timeoutConfiguration') or {}
    minutes = int(timeout.get('timeoutInMinutes') or DEFAULT_HOOK_TIMEOUT_MINUTES)
    if not 1 <= minutes <= 20160:
        raise invalid(f'{where}.timeoutConfiguration.timeoutInMinutes must be from 1 to 20160, not {minutes}.')
    action = timeout.get('action') or 'ROLLBACK'
    if action not in ('CONTINUE', 'ROLLBACK'):
        raise invalid(f'{where}.timeoutConfiguration.action {action} is not valid; use CONTINUE or ROLLBACK.')
    return HookSpec(target_type=target_type, target_arn=hook.get('hookTargetArn') if target_type == 'AWS_LAMBDA'
                    else None, stages=stages, hook_details=hook.get('hookDetails'), timeout_minutes=minutes,
                    timeout_action=action)


def routes_of(load_balancers: Sequence[Mapping[str, Any]], *, strategy: str) -> list[Route]:
    """The service's load balancers as routes; each needs its ``advancedConfiguration`` for a native strategy."""
    routes = []
    for index, balancer in enumerate(load_balancers):
        where = f'loadBalancers[{index}]'
        advanced = balancer.get('advancedConfiguration') or {}
        missing = [key for key in ('alternateTargetGroupArn', 'productionListenerRule', 'roleArn')
                   if not advanced.get(key)]
        if not balancer.get('targetGroupArn') or missing:
            raise invalid(f'{where}: the {strategy} deployment strategy needs targetGroupArn and an '
                          f'advancedConfiguration with alternateTargetGroupArn, productionListenerRule and roleArn'
                          + (f' (missing: {", ".join(missing)}).' if missing else '.'))
        if advanced['alternateTargetGroupArn'] == balancer['targetGroupArn']:
            raise invalid(f'{where}: the alternate target group must differ from targetGroupArn.')
        routes.append(Route(target_group=balancer['targetGroupArn'],
                            alternate_target_group=advanced['alternateTargetGroupArn'],
                            production_rule=advanced['productionListenerRule'],
                            test_rule=advanced.get('testListenerRule') or None, role_arn=advanced['roleArn'],
                            container_name=str(balancer.get('containerName') or ''),
                            container_port=int(balancer.get('containerPort') or 0)))
    return routes
