"""The ALB's routing decision for one request: which listener rule, which action, which target group.

Why this exists: ECS native deployments (and many real load balancers) route
through listener *rules*, not the listener's default action, and a canary or
linear step is a forward action with two weighted target groups. The
load-balancer stand-in must follow both, as an ALB does, so the operator's
checks and the demo's requests meet the version the rules send them to.

What an ALB does (Elastic Load Balancing, "Listener rules for your
Application Load Balancer"), and what is played here:

- Rules are evaluated in priority order, lowest number first; the first whose
  conditions all match wins, and the default action applies when none does.
  Conditions: ``path-pattern`` (case-sensitive, the path without the query),
  ``host-header`` (case-insensitive, without the port), ``http-request-method``,
  ``http-header`` and ``query-string``; ``*`` and ``?`` are the wildcards. A
  condition of another kind (``source-ip``) never matches here.
- Actions: ``forward`` (one target group, or several by weight) and
  ``fixed-response``; the first of them in ``Order`` applies. Other actions
  (``redirect``, ``authenticate-*``) are not played: the request is refused.
- Weights: an ALB picks a target group at random in proportion to its weight.
  The stand-in is deterministic instead: smooth weighted round-robin (as
  nginx's upstreams do) per rule and weights, so any run of ``sum(weights)``
  requests meets each target group exactly ``weight`` times (100 requests to
  a 90/10 rule: 90 and 10, interleaved, never bunched).
"""
from __future__ import annotations

import dataclasses
import re
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class Request:
    """What the rules can look at: the method, the host (no port), the path and query, the headers."""

    method: str
    host: str
    path: str
    query: str = ''
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Forward:
    """Send the request to this target group (``rule``: the ARN of the rule that chose it, or the listener's)."""

    target_group_arn: str
    rule: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class FixedResponse:
    """Answer the request here: a ``fixed-response`` action."""

    status: int
    content_type: str
    body: str
    rule: str


def wildcard(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """An ALB condition value as a regular expression: ``*`` any characters, ``?`` one; the rest literal."""
    body = ''.join('.*' if c == '*' else '.' if c == '?' else re.escape(c) for c in pattern)
    return re.compile(body, (re.IGNORECASE | re.DOTALL) if ignore_case else re.DOTALL)


def _values(condition: Mapping[str, Any], config: str) -> list[Any]:
    return list((condition.get(config) or {}).get('Values') or condition.get('Values') or [])


def _any_matches(patterns: Sequence[str], value: str, *, ignore_case: bool = False) -> bool:
    return any(wildcard(p, ignore_case=ignore_case).fullmatch(value) for p in patterns)


def condition_matches(condition: Mapping[str, Any], request: Request) -> bool:
    """One rule condition: any of its values matches (the rule needs all its conditions to match)."""
    field = condition.get('Field')
    if field == 'path-pattern':
        return _any_matches(_values(condition, 'PathPatternConfig'), request.path or '/')
    if field == 'host-header':
        return _any_matches(_values(condition, 'HostHeaderConfig'), request.host, ignore_case=True)
    if field == 'http-request-method':
        return request.method in _values(condition, 'HttpRequestMethodConfig')
    if field == 'http-header':
        config = condition.get('HttpHeaderConfig') or {}
        name = str(config.get('HttpHeaderName') or '').lower()
        value = next((v for k, v in request.headers.items() if k.lower() == name), None)
        return value is not None and _any_matches(config.get('Values') or [], value, ignore_case=True)
    if field == 'query-string':
        pairs = urllib.parse.parse_qsl(request.query, keep_blank_values=True)
        return any(any(_any_matches([kv['Value']], v, ignore_case=True) and
                       (kv.get('Key') is None or _any_matches([kv['Key']], k, ignore_case=True))
                       for k, v in pairs)
                   for kv in _values(condition, 'QueryStringConfig'))
    return False  # source-ip and anything newer: not played


def matching_rule(rules: Sequence[Mapping[str, Any]], request: Request) -> Mapping[str, Any] | None:
    """The rule an ALB applies: the lowest priority number whose conditions all match; None: the default action."""
    ordered = sorted((r for r in rules if not r.get('IsDefault') and r.get('Priority') != 'default'),
                     key=lambda r: int(r['Priority']))
    return next((r for r in ordered if all(condition_matches(c, request) for c in r.get('Conditions') or [])), None)


class WeightedSplit:
    """Smooth weighted round-robin per (rule, weights): deterministic, exact over every ``sum(weights)`` picks.

    Each pick adds every target group's weight to its credit, takes the group with
    the most credit (the first listed on a tie) and takes the total off it.
    A change of a rule's weights (the next canary step) starts that rule afresh.
    """

    def __init__(self) -> None:
        self._credit: dict[tuple[str, tuple[tuple[str, int], ...]], dict[str, int]] = {}
        self._lock = threading.Lock()

    def pick(self, rule: str, weights: Sequence[tuple[str, int]]) -> str:
        live = tuple((group, weight) for group, weight in weights if weight > 0)
        if not live:
            raise LookupError(f'{rule} forwards to no target group with a weight above 0')
        if len(live) == 1:
            return live[0][0]
        total = sum(weight for _, weight in live)
        with self._lock:
            credit = self._credit.setdefault((rule, live), dict.fromkeys((g for g, _ in live), 0))
            for group, weight in live:
                credit[group] += weight
            chosen = max(credit, key=lambda g: credit[g])
            credit[chosen] -= total
        return chosen


def decide(actions: Sequence[Mapping[str, Any]], *, rule: str, split: WeightedSplit) -> Forward | FixedResponse:
    """What the first forward or fixed-response action (in ``Order``) does; LookupError if there is none."""
    ordered = sorted(actions, key=lambda a: int(a.get('Order') or 0))
    for action in ordered:
        kind = action.get('Type')
        if kind == 'forward':
            groups = (action.get('ForwardConfig') or {}).get('TargetGroups') or []
            if groups:
                weights = [(str(g['TargetGroupArn']), int(g.get('Weight', 1))) for g in groups]
                return Forward(target_group_arn=split.pick(rule, weights), rule=rule)
            if action.get('TargetGroupArn'):
                return Forward(target_group_arn=str(action['TargetGroupArn']), rule=rule)
        if kind == 'fixed-response':
            config = action.get('FixedResponseConfig') or {}
            return FixedResponse(status=int(config.get('StatusCode') or 200), rule=rule,
                                 content_type=str(config.get('ContentType') or 'text/plain'),
                                 body=str(config.get('MessageBody') or ''))
    kinds = ', '.join(str(a.get('Type')) for a in ordered) or 'none'
    raise LookupError(f'{rule} has no forward or fixed-response action (actions: {kinds}); the stand-in plays no other')
