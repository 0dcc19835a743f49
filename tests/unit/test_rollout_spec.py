"""spec.rollout: the strategies, what each needs, the compatibility rule, and the CRD's CEL rules saying the same."""
from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.adapters.ecs_deployments import deployment_configuration, hook_timeout_minutes, load_balancers
from controller.crd import open_api_schema
from controller.models import PandaDeploySpec, Promotion, Strategy

ARN = 'arn:aws:elasticloadbalancing:eu-west-1:123456789012'
LOAD_BALANCER = {
    'targetGroupArn': f'{ARN}:targetgroup/blue/1', 'alternateTargetGroupArn': f'{ARN}:targetgroup/green/2',
    'productionListenerRuleArn': f'{ARN}:listener-rule/app/lb/3/4/5', 'roleArn': 'arn:aws:iam::123456789012:role/r'}
BASE = {'source': {'repo': 'org/app'}, 'aws': {'region': 'eu-west-1'}}


def spec(**fields: Any) -> PandaDeploySpec:
    return PandaDeploySpec.model_validate({**BASE, **fields})


def test_a_manifest_without_rollout_means_codedeploy_as_before():
    for found in (spec(), spec(blueGreen={'promotion': 'manual'})):
        assert found.strategy == Strategy.code_deploy and not found.ecs_native
    assert spec(blueGreen={'promotion': 'manual'}).promotion == Promotion.manual


def test_rollout_defaults_to_ecs_native_blue_green():
    found = spec(rollout={'loadBalancer': LOAD_BALANCER})
    assert found.strategy == Strategy.blue_green and found.ecs_native and found.promotion == Promotion.auto
    assert spec(rollout={'strategy': 'CodeDeploy'}).strategy == Strategy.code_deploy
    assert spec(rollout={'strategy': 'CodeDeploy'}, blueGreen={'promotion': 'manual'}).promotion == Promotion.manual


@pytest.mark.parametrize(('fields', 'says'), [
    ({'rollout': {}}, 'spec.rollout.loadBalancer is required for strategy BlueGreen'),
    ({'rollout': {'strategy': 'Canary'}}, 'spec.rollout.loadBalancer is required for strategy Canary'),
    ({'rollout': {'loadBalancer': LOAD_BALANCER}, 'blueGreen': {}}, 'spec.blueGreen configures the CodeDeploy'),
    ({'rollout': {'strategy': 'CodeDeploy', 'loadBalancer': LOAD_BALANCER}}, 'for the ECS strategies'),
    ({'rollout': {'loadBalancer': LOAD_BALANCER, 'canary': {}}}, 'only for strategy Canary, not BlueGreen'),
    ({'rollout': {'strategy': 'Canary', 'loadBalancer': LOAD_BALANCER, 'linear': {}}}, 'only for strategy Linear'),
    ({'rollout': {'strategy': 'CodeDeploy', 'promotion': 'manual'}, 'blueGreen': {}}, 'promotion in one place'),
    ({'rollout': {'strategy': 'Canary', 'loadBalancer': LOAD_BALANCER, 'canary': {'percent': 0}}}, 'canary.percent'),
    ({'rollout': {'strategy': 'Canary', 'loadBalancer': LOAD_BALANCER, 'canary': {'percent': 101}}}, 'percent'),
    ({'rollout': {'strategy': 'Linear', 'loadBalancer': LOAD_BALANCER, 'linear': {'stepPercent': 2}}},
     'stepPercent'),
    ({'rollout': {'loadBalancer': LOAD_BALANCER, 'bakeTimeMinutes': 1441}}, 'bakeTimeMinutes'),
    ({'rollout': {'strategy': 'Rolling', 'loadBalancer': LOAD_BALANCER}}, 'strategy'),
    ({'rollout': {'loadBalancer': {**LOAD_BALANCER, 'productionListenerRuleArn': f'{ARN}:listener/app/lb/3/4'}}},
     'productionListenerRuleArn'),
])
def test_specs_that_do_not_fit_their_strategy_are_refused(fields, says):
    with pytest.raises(ValidationError, match=says):
        spec(**fields)


def test_the_crd_says_the_cross_field_rules_in_cel():
    schema = open_api_schema()['properties']['spec']
    rules = ' '.join(rule['rule'] for rule in schema['x-kubernetes-validations'])
    assert 'has(self.rollout)' in rules and 'has(self.blueGreen)' in rules
    rollout = schema['properties']['rollout']
    assert rollout['properties']['strategy']['enum'] == ['BlueGreen', 'Canary', 'Linear', 'CodeDeploy']
    assert rollout['properties']['strategy']['description'].endswith('Default: BlueGreen.')
    assert len(rollout['x-kubernetes-validations']) == 4
    assert rollout['properties']['canary']['properties']['percent']['minimum'] == 0.1
    assert rollout['properties']['loadBalancer']['description']


@pytest.mark.parametrize(('strategy', 'extra', 'config'), [
    ('BlueGreen', {}, {}),
    ('Canary', {'canary': {'percent': 12.5, 'bakeMinutes': 3}},
     {'canaryConfiguration': {'canaryPercent': 12.5, 'canaryBakeTimeInMinutes': 3}}),
    ('Linear', {}, {'linearConfiguration': {'stepPercent': 20.0, 'stepBakeTimeInMinutes': 2}}),
])
def test_the_service_gets_the_strategy_and_the_operators_pause_hook(strategy, extra, config):
    found = spec(rollout={'strategy': strategy, 'loadBalancer': LOAD_BALANCER, 'bakeTimeMinutes': 4, **extra},
                 timeouts={'stageSeconds': '10m'})
    wanted = deployment_configuration(found)
    assert wanted['strategy'] == {'BlueGreen': 'BLUE_GREEN', 'Canary': 'CANARY', 'Linear': 'LINEAR'}[strategy]
    assert wanted['bakeTimeInMinutes'] == 4
    assert wanted['lifecycleHooks'] == [{'targetType': 'PAUSE', 'lifecycleStages': ['POST_TEST_TRAFFIC_SHIFT'],
                                         'timeoutConfiguration': {'timeoutInMinutes': 11, 'action': 'ROLLBACK'}}]
    assert {k: v for k, v in wanted.items() if k.endswith('Configuration')} == config
    advanced = load_balancers(found)[0]['advancedConfiguration']
    assert advanced == {'alternateTargetGroupArn': LOAD_BALANCER['alternateTargetGroupArn'],
                        'productionListenerRule': LOAD_BALANCER['productionListenerRuleArn'],
                        'roleArn': LOAD_BALANCER['roleArn']}


def test_the_hook_timeout_follows_the_stage_timeout():
    for seconds, minutes in ((30, 2), (600, 11), (7 * 86400, 10081)):
        found = spec(rollout={'loadBalancer': LOAD_BALANCER}, timeouts={'stageSeconds': seconds})
        assert hook_timeout_minutes(found) == minutes
