"""The load-balancer stand-in's routing decision: listener rules as an ALB applies them, weights split exactly."""
from __future__ import annotations

import collections
import itertools
from typing import Any

import pytest

from controller.sandbox.stack.routing import (
    FixedResponse,
    Forward,
    Request,
    WeightedSplit,
    decide,
    matching_rule,
)

BLUE, GREEN = 'arn:tg/blue/1', 'arn:tg/green/2'


def forward(*weights: tuple[str, int]) -> list[dict[str, Any]]:
    return [{'Type': 'forward', 'ForwardConfig': {'TargetGroups': [
        {'TargetGroupArn': group, 'Weight': weight} for group, weight in weights]}}]


def rule(arn: str, priority: int | str, *conditions: dict[str, Any]) -> dict[str, Any]:
    return {'RuleArn': arn, 'Priority': str(priority), 'Conditions': list(conditions), 'IsDefault': priority == 'default',
            'Actions': forward((BLUE, 1))}


def path(*values: str) -> dict[str, Any]:
    return {'Field': 'path-pattern', 'Values': list(values)}


def host(*values: str) -> dict[str, Any]:
    return {'Field': 'host-header', 'HostHeaderConfig': {'Values': list(values)}}


def get(path_: str = '/', host_: str = 'web-alb.example.com', **more: Any) -> Request:
    return Request(method=more.pop('method', 'GET'), host=host_, path=path_, **more)


def picks(split: WeightedSplit, rule_arn: str, weights: list[tuple[str, int]], n: int) -> list[str]:
    return [split.pick(rule_arn, weights) for _ in range(n)]


# -- weights ----------------------------------------------------------------------------------------


def test_a_90_10_rule_sends_exactly_90_and_10_of_100_requests_interleaved() -> None:
    chosen = picks(WeightedSplit(), 'rule', [(BLUE, 90), (GREEN, 10)], 100)
    assert collections.Counter(chosen) == {BLUE: 90, GREEN: 10}
    gaps = [i for i, group in enumerate(chosen) if group == GREEN]
    assert max(b - a for a, b in itertools.pairwise(gaps)) <= 10  # spread out, not ten in a row


@pytest.mark.parametrize(('weights', 'n'), [((975, 25), 1000), ((80, 20), 100), ((1, 1), 2), ((3, 7), 10)])
def test_every_run_of_sum_of_weights_requests_is_exact(weights: tuple[int, int], n: int) -> None:
    split = WeightedSplit()
    pairs = [(BLUE, weights[0]), (GREEN, weights[1])]
    picks(split, 'rule', pairs, 7)  # wherever the split stands, the next n are exact too
    assert collections.Counter(picks(split, 'rule', pairs, n)) == {BLUE: weights[0], GREEN: weights[1]}


def test_a_weight_of_zero_gets_nothing_and_new_weights_start_afresh() -> None:
    split = WeightedSplit()
    assert set(picks(split, 'rule', [(BLUE, 100), (GREEN, 0)], 50)) == {BLUE}
    assert collections.Counter(picks(split, 'rule', [(BLUE, 50), (GREEN, 50)], 10)) == {BLUE: 5, GREEN: 5}
    assert set(picks(split, 'rule', [(BLUE, 0), (GREEN, 100)], 5)) == {GREEN}
    with pytest.raises(LookupError, match='no target group with a weight above 0'):
        split.pick('rule', [(BLUE, 0), (GREEN, 0)])


def test_rules_keep_their_own_split() -> None:
    split = WeightedSplit()
    weights = [(BLUE, 1), (GREEN, 1)]
    assert [split.pick('a', weights), split.pick('b', weights), split.pick('a', weights)] == [BLUE, BLUE, GREEN]


# -- rules ------------------------------------------------------------------------------------------


def test_a_path_pattern_rule_wins_over_the_default_action() -> None:
    rules = [rule('default', 'default'), rule('api', 5, path('/api/*'))]
    assert matching_rule(rules, get('/api/orders'))['RuleArn'] == 'api'  # type: ignore[index]
    assert matching_rule(rules, get('/')) is None  # the default action
    assert matching_rule(rules, get('/API/orders')) is None  # paths are case-sensitive
    assert matching_rule(rules, get('/apiary')) is None


def test_the_lowest_priority_number_that_matches_wins() -> None:
    rules = [rule('catch-all', 50, path('*')), rule('health', 2, path('/health', '/ready')), rule('v?', 9, path('/v?/*'))]
    assert matching_rule(rules, get('/health'))['RuleArn'] == 'health'  # type: ignore[index]
    assert matching_rule(rules, get('/ready'))['RuleArn'] == 'health'  # type: ignore[index]
    assert matching_rule(rules, get('/v2/x'))['RuleArn'] == 'v?'  # type: ignore[index]
    assert matching_rule(rules, get('/v10/x'))['RuleArn'] == 'catch-all'  # type: ignore[index]


def test_host_header_is_case_insensitive_with_wildcards_and_all_conditions_must_match() -> None:
    rules = [rule('shop', 1, host('*.Example.com'), path('/shop*')), rule('any-host', 3, host('api.example.*'))]
    assert matching_rule(rules, get('/shop/cart', 'WWW.example.COM'))['RuleArn'] == 'shop'  # type: ignore[index]
    assert matching_rule(rules, get('/', 'www.example.com')) is None  # the host matches, the path does not
    assert matching_rule(rules, get('/', 'api.example.org'))['RuleArn'] == 'any-host'  # type: ignore[index]


def test_method_header_and_query_conditions() -> None:
    rules = [rule('head', 1, {'Field': 'http-request-method', 'HttpRequestMethodConfig': {'Values': ['HEAD']}}),
             rule('beta', 2, {'Field': 'http-header', 'HttpHeaderConfig': {'HttpHeaderName': 'X-Beta',
                                                                            'Values': ['y*']}}),
             rule('q', 3, {'Field': 'query-string', 'QueryStringConfig': {'Values': [{'Key': 'v', 'Value': '2'}]}}),
             rule('ip', 4, {'Field': 'source-ip', 'SourceIpConfig': {'Values': ['0.0.0.0/0']}})]
    assert matching_rule(rules, get(method='HEAD'))['RuleArn'] == 'head'  # type: ignore[index]
    assert matching_rule(rules, get(headers={'x-beta': 'Yes'}))['RuleArn'] == 'beta'  # type: ignore[index]
    assert matching_rule(rules, get(query='a=1&v=2'))['RuleArn'] == 'q'  # type: ignore[index]
    assert matching_rule(rules, get(query='v=3')) is None  # and source-ip is never played


# -- actions ----------------------------------------------------------------------------------------


def test_actions_forward_by_weight_or_answer_fixed_responses() -> None:
    split = WeightedSplit()
    assert decide([{'Type': 'forward', 'TargetGroupArn': BLUE}], rule='r', split=split) == Forward(
        target_group_arn=BLUE, rule='r')
    assert decide(forward((BLUE, 0), (GREEN, 100)), rule='r', split=split).target_group_arn == GREEN  # type: ignore[union-attr]
    fixed = decide([{'Type': 'fixed-response', 'FixedResponseConfig': {'StatusCode': '404', 'MessageBody': 'none'}}],
                   rule='r', split=split)
    assert fixed == FixedResponse(status=404, content_type='text/plain', body='none', rule='r')
    with pytest.raises(LookupError, match='plays no other'):
        decide([{'Type': 'redirect', 'RedirectConfig': {'StatusCode': 'HTTP_301'}}], rule='r', split=split)
