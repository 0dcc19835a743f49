"""A service deployment's traffic: which target group is blue and which green, and the listener rules ECS moves.

AWS ("Application Load Balancer resources for blue/green, linear, and canary
deployments") has the production listener rule (and the optional test rule)
forward to both target groups of the pair; ECS changes their weights through
ELBv2. The simulator does the same on moto's ELBv2 backend, so
``DescribeRules`` shows each step (a canary's 10 % is weights 90 and 10) and
the load-balancer stand-in, which picks a target group by weight, sends that
share of requests to green.
"""
from __future__ import annotations

from controller.sandbox.aws.backends import MotoBackends
from controller.sandbox.aws.ecs_config import Route
from controller.sandbox.aws.ecs_models import ServiceDeployment, ServiceRevision
from controller.sandbox.aws.exceptions import DeploymentFailed


def elb_weights(green_percent: float) -> tuple[int, int]:
    """(blue, green) ELB weights for green's share: whole percents out of 100, a fraction in tenths out of 1000."""
    if float(green_percent).is_integer():
        return 100 - int(green_percent), int(green_percent)
    green = round(green_percent * 10)
    return 1000 - green, green


def other(route: Route, target_group: str) -> str:
    """The target group of the pair that is not ``target_group``."""
    return route.alternate_target_group if target_group == route.target_group else route.target_group


def serving(route: Route, *, moto: MotoBackends) -> str:
    """The target group of the pair that the production rule sends (most of) its traffic to now."""
    try:
        weights = moto.forward_weights(route.production_rule)
    except ValueError as exc:
        raise DeploymentFailed('InvalidParameterException', f'The production listener rule cannot be used for a '
                                                           f'blue/green deployment: {exc}.') from None
    if weights is None:
        raise DeploymentFailed('InvalidParameterException',
                               f'The production listener rule {route.production_rule} does not exist.')
    pair = (route.target_group, route.alternate_target_group)
    if not any(weights.get(group, 0) for group in pair):
        raise DeploymentFailed('InvalidParameterException',
                               f'The production listener rule {route.production_rule} forwards to neither '
                               f'{route.target_group} nor {route.alternate_target_group}.')
    return max(pair, key=lambda group: weights.get(group, 0))


def assign_target_groups(d: ServiceDeployment, *, moto: MotoBackends) -> None:
    """Green registers with the target group production does not serve (the first deployment: the one it does)."""
    blue = d.sources[0] if d.sources else None
    for route in d.routes:
        live = serving(route, moto=moto)
        if blue is not None:
            live = blue.target_groups.setdefault(route.production_rule, live)
        d.target.target_groups[route.production_rule] = other(route, live) if blue is not None else live


def shift(d: ServiceDeployment, *, moto: MotoBackends, production: float | None = None,
          test: float | None = None) -> None:
    """Give green this share of production and/or test traffic on every route; blue gets the rest."""
    for route in d.routes:
        green = d.target.target_groups[route.production_rule]
        for rule, share in ((route.production_rule, production), (route.test_rule, test)):
            if rule is None or share is None:
                continue
            blue_weight, green_weight = elb_weights(share)
            try:
                moto.forward(rule, weights={other(route, green): blue_weight, green: green_weight})
            except (LookupError, ValueError) as exc:
                raise DeploymentFailed('InvalidParameterException',
                                       f'The listener rule {rule} could not be modified: {exc}') from None
    has_test_rule = any(route.test_rule for route in d.routes)
    _record(d.target, d.sources[:1], production=production, test=test if has_test_rule else None)


def restore(d: ServiceDeployment, *, moto: MotoBackends) -> None:
    """Rollback: production and test traffic all on the blue revision again (``RollbackFailed`` if it cannot)."""
    _all_on(d.sources[0], d, others=[d.target], moto=moto, code='RollbackFailed')


def settle(d: ServiceDeployment, *, moto: MotoBackends) -> None:
    """RECONCILE_SERVICE: production and test traffic all on the production revision (the first source)."""
    _all_on(d.sources[0], d, others=d.sources[1:], moto=moto, code='InvalidParameterException')


def _all_on(revision: ServiceRevision, d: ServiceDeployment, *, others: list[ServiceRevision], moto: MotoBackends,
            code: str) -> None:
    for route in d.routes:
        target_group = revision.target_groups.get(route.production_rule) or serving(route, moto=moto)
        revision.target_groups[route.production_rule] = target_group
        for rule in (route.production_rule, route.test_rule):
            if rule is None:
                continue
            try:
                moto.forward(rule, weights={target_group: 100, other(route, target_group): 0})
            except (LookupError, ValueError) as exc:
                raise DeploymentFailed(code, f'The listener rule {rule} could not be pointed at {target_group}: '
                                             f'{exc}') from None
    _record(revision, others, production=100.0, test=100.0 if any(route.test_rule for route in d.routes) else None)


def _record(green: ServiceRevision, blues: list[ServiceRevision], *, production: float | None,
            test: float | None) -> None:
    for share, field in ((production, 'production_weight'), (test, 'test_weight')):
        if share is None:
            continue
        setattr(green, field, float(share))
        for blue in blues:
            setattr(blue, field, 100.0 - float(share))
