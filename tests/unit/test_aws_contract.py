"""The contract check of tests/aws_contract.py finds each kind of break in an answer (a check that cannot fail checks nothing)."""
from __future__ import annotations

import copy
from typing import Any

import botocore.session
import pytest

from tests.aws_contract import violations

ECS = botocore.session.get_session().get_service_model('ecs')
OUTPUT = ECS.operation_model('DescribeServiceDeployments').output_shape
GOOD: dict[str, Any] = {'serviceDeployments': [{
    'serviceDeploymentArn': 'arn:aws:ecs:eu-west-1:123456789012:service-deployment/c/s/abc',
    'createdAt': 1700000000.5, 'status': 'IN_PROGRESS', 'lifecycleStage': 'POST_TEST_TRAFFIC_SHIFT',
    'targetServiceRevision': {'arn': 'r', 'requestedTaskCount': 2, 'requestedProductionTrafficWeight': 12.5},
    'lifecycleHookDetails': [{'hookId': 'h', 'targetType': 'PAUSE', 'status': 'AWAITING_ACTION',
                              'expiresAt': 1700000600, 'timeoutAction': 'ROLLBACK'}],
    'deploymentConfiguration': {'strategy': 'CANARY', 'deploymentCircuitBreaker': {'enable': True, 'rollback': True},
                                'lifecycleHooks': [{'hookDetails': {'any': ['json']}}]},
}], 'failures': []}


def test_a_document_of_the_model_passes() -> None:
    assert violations(OUTPUT, GOOD) == []


@pytest.mark.parametrize(('path', 'value', 'fragment'), [
    (('serviceDeployments', 0, 'colour'), 'green', 'colour: not a member of ServiceDeployment'),
    (('serviceDeployments', 0, 'status'), 'DONE', "'DONE' is not in the ServiceDeploymentStatus enum"),
    (('serviceDeployments', 0, 'lifecycleStage'), 'PRE_PRODUCTION_TRAFFIC_SHIFT', 'ServiceDeploymentLifecycleStage enum'),
    (('serviceDeployments', 0, 'createdAt'), '2025-07-18T00:00:00Z', 'expected timestamp'),
    (('serviceDeployments', 0, 'targetServiceRevision', 'requestedTaskCount'), '2', 'expected integer'),
    (('serviceDeployments', 0, 'targetServiceRevision', 'requestedTaskCount'), True, 'expected integer'),
    (('serviceDeployments', 0, 'lifecycleHookDetails'), {'hookId': 'h'}, 'expected a list'),
    (('serviceDeployments', 0, 'deploymentConfiguration', 'deploymentCircuitBreaker'), {'enable': True},
     'rollback: required by DeploymentCircuitBreaker, missing'),
])
def test_each_kind_of_break_is_found(path: tuple[Any, ...], value: Any, fragment: str) -> None:
    document = copy.deepcopy(GOOD)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    found = violations(OUTPUT, document)
    assert len(found) == 1 and fragment in found[0], found


def test_an_operation_without_output_must_answer_nothing() -> None:
    assert violations(None, {}) == []
    assert violations(None, {'status': 'ok'}) != []
