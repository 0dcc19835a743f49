"""The demo's checks: its exit code is 0 only when every rollout ended as planned, so each check must refuse
a wrong outcome -- a broken commit that succeeded, production on the wrong colour or version, a canary split
that does not match its percent or that was counted after the step ended, a rollback ECS did not report.

The sandbox is a stand-in here (the resource, ELBv2's rule, ECS's deployment and production's answers are
given); the demo's real run is `tests/e2e/test_demo.py`.
"""
from __future__ import annotations

import collections
import types
from typing import Any

import pytest

from controller.sandbox import demo_plan
from controller.sandbox.demo_plan import PLAN, DemoFailed, Production
from controller.sandbox.stack.canary_split import Answerer
from controller.sandbox.stack.world import AwsWorld

BLUE, GREEN = 'arn:tg/sample-app-blue/1', 'arn:tg/sample-app-green/2'
WORLD = AwsWorld(cluster='c', service='sample-app', dns_name='lb.example', production_listener_arn='p',
                 test_listener_arn='t', blue_target_group_arn=BLUE, green_target_group_arn=GREEN, role_arn='r')
CANARY, BROKEN, GREEN_ROLLOUT = PLAN[2], PLAN[3], PLAN[1]


class Clients:
    """ELBv2's production rule (its weights, one answer per call) and ECS's one service deployment."""

    def __init__(self, *, rule_weights: list[dict[str, int]], deployment_status: str = 'ROLLBACK_SUCCESSFUL') -> None:
        self.rule_weights, self.deployment_status = rule_weights, deployment_status

    def __call__(self, service: str) -> Any:
        return self

    def describe_rules(self, *, RuleArns: list[str]) -> dict[str, Any]:
        found = self.rule_weights.pop(0) if len(self.rule_weights) > 1 else self.rule_weights[0]
        groups = [{'TargetGroupArn': arn, 'Weight': weight} for arn, weight in found.items()]
        return {'Rules': [{'Actions': [{'Type': 'forward', 'ForwardConfig': {'TargetGroups': groups}}]}]}

    def describe_service_deployments(self, *, serviceDeploymentArns: list[str]) -> dict[str, Any]:
        return {'serviceDeployments': [{'status': self.deployment_status, 'statusReason': 'the words'}]}


def sandbox(*, reason: str = 'HealthCheckFailed', clients: Clients | None = None) -> Any:
    resource = {'spec': {'rollout': {'loadBalancer': {'productionListenerRuleArn': 'arn:rule/prod'}}},
                'status': {'conditions': [{'type': 'Ready', 'status': 'False', 'reason': reason}]}}
    notes: list[str] = []
    return types.SimpleNamespace(
        world=WORLD, proxy_url='http://127.0.0.1:1', clients=clients or Clients(rule_weights=[{}]), notes=notes,
        custom=types.SimpleNamespace(get_namespaced_custom_object=lambda *_: resource),
        printer=types.SimpleNamespace(note=notes.append, wait_for_outcome=lambda *_, **__: None))


def test_a_broken_commit_must_fail_its_health_checks() -> None:
    demo_plan.check_outcome(sandbox(), BROKEN, {'phase': 'Failed', 'message': 'checks failed'})
    with pytest.raises(DemoFailed, match='should fail its health checks, but ended Succeeded'):
        demo_plan.check_outcome(sandbox(reason='Succeeded'), BROKEN, {'phase': 'Succeeded'})
    with pytest.raises(DemoFailed, match='ended Failed \\(BuildFailed\\)'):
        demo_plan.check_outcome(sandbox(reason='BuildFailed'), BROKEN, {'phase': 'Failed'})


def test_a_rollout_must_succeed_with_production_on_the_planned_colour() -> None:
    demo_plan.check_outcome(sandbox(), GREEN_ROLLOUT, {'phase': 'Succeeded', 'activeColor': 'green'})
    with pytest.raises(DemoFailed, match='left blue active, not green'):
        demo_plan.check_outcome(sandbox(), GREEN_ROLLOUT, {'phase': 'Succeeded', 'activeColor': 'blue'})
    with pytest.raises(DemoFailed, match='failed: no'):
        demo_plan.check_outcome(sandbox(), GREEN_ROLLOUT, {'phase': 'Failed', 'message': 'no'})


def test_after_the_rollback_production_must_answer_as_before() -> None:
    before = Production(200, 'blue', 'sample-app:3', 'v3')
    demo_plan.check_unchanged(sandbox(), before=before, now=Production(200, 'blue', 'sample-app:3', 'v3'))
    with pytest.raises(DemoFailed, match='not as before'):
        demo_plan.check_unchanged(sandbox(), before=before, now=Production(200, 'green', 'sample-app:4', 'v4'))
    with pytest.raises(DemoFailed):
        demo_plan.check_unchanged(sandbox(), before=None, now=before)


@pytest.mark.parametrize(('status', 'ok'), [('ROLLBACK_SUCCESSFUL', True), ('SUCCESSFUL', False),
                                            ('ROLLBACK_FAILED', False)])
def test_ecs_must_report_the_broken_commits_deployment_rolled_back(status: str, ok: bool) -> None:
    s = sandbox(clients=Clients(rule_weights=[{}], deployment_status=status))
    if ok:
        demo_plan.await_rolled_back(s, {'serviceDeploymentArn': 'arn:sd/x'})
        assert s.notes == ['[demo] ECS service deployment x: ROLLBACK_SUCCESSFUL (the words)']
    else:
        with pytest.raises(DemoFailed, match=f'ended {status}, not ROLLBACK_SUCCESSFUL'):
            demo_plan.await_rolled_back(s, {'serviceDeploymentArn': 'arn:sd/x'})


HELD = {GREEN: 90, BLUE: 10}


@pytest.mark.parametrize(('weights', 'answers', 'refused'), [
    ([HELD], {'green': 90, 'blue': 10}, None),
    ([HELD], {'green': 89, 'blue': 11}, "not the canary's split"),
    ([HELD], {'green': 100}, "not the canary's split"),
    ([HELD, {GREEN: 0, BLUE: 100}], {'green': 90, 'blue': 10}, 'the canary step ended before'),
])
def test_the_canary_split_must_match_its_percent_while_the_step_holds(
        monkeypatch: pytest.MonkeyPatch, weights: list[dict[str, int]], answers: dict[str, int],
        refused: str | None) -> None:
    counted = collections.Counter({Answerer(colour, f'sample-app:{2 if colour == "green" else 3}'): n
                                   for colour, n in answers.items()})
    monkeypatch.setattr(demo_plan, 'count_answers', lambda **_: counted)
    s = sandbox(clients=Clients(rule_weights=[{GREEN: 100, BLUE: 0}, *weights]))
    if refused is None:
        demo_plan.check_canary_split(s, CANARY, timeout=5)
        assert s.notes[0].endswith(': 90 from green (sample-app:2), 10 from blue (sample-app:3)'), s.notes
    else:
        with pytest.raises(DemoFailed, match=refused):
            demo_plan.check_canary_split(s, CANARY, timeout=5)
