"""deploy/argocd/health.lua, run by a real Lua 5.1 interpreter (lupa) over PandaDeploy status samples.

Argo CD runs health checks in gopher-lua (Lua 5.1) with the object as the global
`obj`, converted from JSON: objects and arrays become tables (arrays 1-based),
absent and null fields are nil. The samples below are statuses the operator
writes (see controller/conditions.py and controller/pipeline/recorder.py).
"""
from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml
from lupa import lua51

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / 'deploy' / 'argocd' / 'health.lua'
CM_PATCH = ROOT / 'deploy' / 'argocd' / 'argocd-cm-patch.yaml'
CM_KEY = 'resource.customizations.health.deploy.panda.dev_PandaDeploy'
T = '2025-01-01T00:00:00Z'


def to_lua(lua: lua51.LuaRuntime, value: Any) -> Any:
    """A Python value as Argo CD hands it to Lua: dicts and lists become tables, None becomes nil."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:
                table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(lua, item)
        return table
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    hs = lua.execute(HEALTH_LUA.read_text())
    assert hs is not None, 'the script returns hs'
    assert isinstance(hs['message'], str) and hs['message'], 'Argo CD shows the message: never empty'
    return hs['status'], hs['message']


def cond(type: str, status: str, reason: str, message: str = '', generation: int = 1) -> dict[str, Any]:
    return {'type': type, 'status': status, 'reason': reason, 'message': message,
            'observedGeneration': generation, 'lastTransitionTime': T}


def resource(status: dict[str, Any] | None = None, *, generation: int = 1, suspend: bool | None = None
             ) -> dict[str, Any]:
    spec: dict[str, Any] = {'source': {'repo': 'your-org/sample-app', 'branch': 'main'},
                            'aws': {'region': 'ap-northeast-2'}}
    if suspend is not None:
        spec['suspend'] = suspend
    obj: dict[str, Any] = {'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
                           'metadata': {'name': 'app', 'namespace': 'default', 'generation': generation},
                           'spec': spec}
    if status is not None:
        obj['status'] = status
    return obj


STAGES = ['Build', 'Push', 'Service', 'BlueGreen', 'Verify', 'Complete']
QUEUED_MSG = 'Waiting for a free worker (2 run(s) ahead)'
STAGE3_MSG = 'Stage 3/6 Service running'
READY_MSG = 'Revision a1b2c3d4e5f60718293a4b5c6d7e8f9012345678 deployed; green is active'
FAILED_MSG = 'Health check of http://green.example/ failed 2/5 checks (HTTP 503)'
STALLED_MSG = "spec.aws.credentialsSecretRef: Secret 'aws-creds' not found"

QUEUED = {'observedGeneration': 1, 'phase': 'Pending', 'deploymentId': 'dep_a1b2c3d4e5', 'message': QUEUED_MSG,
          'conditions': [cond('Ready', 'Unknown', 'Queued', QUEUED_MSG),
                         cond('Reconciling', 'True', 'Queued', QUEUED_MSG)]}
STAGE_3 = {'observedGeneration': 1, 'phase': 'Progressing', 'stage': '3/6 Service', 'stageNumber': 3,
           'stageName': 'Service', 'deploymentId': 'dep_a1b2c3d4e5', 'message': STAGE3_MSG,
           'stages': [{'number': 1, 'name': 'Build', 'result': 'Succeeded', 'startedAt': T, 'completedAt': T},
                      {'number': 2, 'name': 'Push', 'result': 'Succeeded', 'startedAt': T, 'completedAt': T},
                      {'number': 3, 'name': 'Service', 'result': 'Running', 'startedAt': T}],
           'conditions': [cond('Ready', 'Unknown', 'Progressing', STAGE3_MSG),
                          cond('Reconciling', 'True', 'Progressing', STAGE3_MSG),
                          cond('Build', 'True', 'Succeeded', 'Built'), cond('Push', 'True', 'Succeeded', 'Pushed'),
                          cond('Service', 'Unknown', 'Progressing', STAGE3_MSG)]}
READY = {'observedGeneration': 1, 'phase': 'Succeeded', 'stage': '6/6 Complete', 'activeColor': 'green',
         'message': READY_MSG,
         'conditions': [cond('Ready', 'True', 'Succeeded', READY_MSG)]
         + [cond(s, 'True', 'Succeeded', s) for s in STAGES],
         'history': [{'deploymentId': 'dep_a1b2c3d4e5', 'generation': 1, 'result': 'Succeeded',
                      'startedAt': T, 'completedAt': T, 'durationSeconds': 42.5}]}
FAILED = {'observedGeneration': 1, 'phase': 'Failed', 'stage': '5/6 Verify', 'message': FAILED_MSG,
          'conditions': [cond('Ready', 'False', 'HealthCheckFailed', FAILED_MSG)]
          + [cond(s, 'True', 'Succeeded', s) for s in STAGES[:4]]
          + [cond('Verify', 'False', 'HealthCheckFailed', FAILED_MSG)]}
ABORTED_MSG = 'Run dep_a1b2c3d4e5 aborted at stage 5/6 Verify by deploy.panda.dev/abort=dep_a1b2c3d4e5; ' \
              'production stays where it was'
ABORTED = {'observedGeneration': 1, 'phase': 'Failed', 'stage': '5/6 Verify', 'message': ABORTED_MSG,
           'conditions': [cond('Ready', 'False', 'Aborted', ABORTED_MSG)]
           + [cond(s, 'True', 'Succeeded', s) for s in STAGES[:4]]
           + [cond('Verify', 'False', 'Aborted', ABORTED_MSG)]}
STALLED = {'observedGeneration': 1, 'phase': 'Pending', 'message': STALLED_MSG,
           'conditions': [cond('Ready', 'False', 'SecretNotFound', STALLED_MSG),
                          cond('Stalled', 'True', 'SecretNotFound', STALLED_MSG)]}


def test_a_fresh_object_without_status_is_progressing():
    status, message = health(resource())
    assert status == 'Progressing'
    assert 'operator' in message


def test_an_empty_status_is_progressing():
    assert health(resource({}))[0] == 'Progressing'


def test_a_queued_run_is_progressing_with_the_queue_message():
    assert health(resource(QUEUED)) == ('Progressing', QUEUED_MSG)


def test_a_run_at_stage_3_is_progressing_with_the_stage():
    assert health(resource(STAGE_3)) == ('Progressing', STAGE3_MSG)


def test_ready_is_healthy():
    assert health(resource(READY)) == ('Healthy', READY_MSG)


def test_ready_for_a_newer_generation_seen_is_healthy():
    # observedGeneration >= generation: nothing is due
    assert health(resource({**READY, 'observedGeneration': 3}, generation=3))[0] == 'Healthy'


def test_failed_is_degraded_with_the_ready_message():
    assert health(resource(FAILED)) == ('Degraded', FAILED_MSG)


def test_an_aborted_run_is_degraded_until_retried():
    # Argo Rollouts' abort: the stable version keeps serving and the rollout is Degraded until retried.
    assert health(resource(ABORTED)) == ('Degraded', ABORTED_MSG)
    assert health(resource(ABORTED, generation=2))[0] == 'Progressing'  # a new spec: the retry


def test_failed_without_conditions_falls_back_to_the_status_message():
    assert health(resource({**FAILED, 'conditions': []})) == ('Degraded', FAILED_MSG)


def test_stalled_is_degraded_with_the_stalled_message():
    assert health(resource(STALLED)) == ('Degraded', STALLED_MSG)


def test_suspended_is_suspended():
    status, message = health(resource(READY, suspend=True))
    assert status == 'Suspended'
    assert 'suspend' in message


def test_suspended_before_any_run_is_suspended():
    # the operator starts no run for a suspended object, so it never gets a status
    assert health(resource(suspend=True))[0] == 'Suspended'


def test_suspended_while_failed_or_stalled_is_suspended():
    assert health(resource(FAILED, suspend=True))[0] == 'Suspended'
    assert health(resource(STALLED, suspend=True))[0] == 'Suspended'


def test_a_run_going_when_suspend_is_set_stays_progressing_until_it_ends():
    assert health(resource(STAGE_3, suspend=True)) == ('Progressing', STAGE3_MSG)
    assert health(resource(QUEUED, suspend=True)) == ('Progressing', QUEUED_MSG)


def test_suspend_false_changes_nothing():
    assert health(resource(READY, suspend=False)) == ('Healthy', READY_MSG)


def test_ready_with_observed_generation_behind_is_progressing():
    status, message = health(resource(READY, generation=2))
    assert status == 'Progressing'
    assert 'generation 2' in message and 'observed: 1' in message


def test_failed_with_observed_generation_behind_is_progressing():
    # a new spec after a failure: the operator starts a run for it, so the old failure is no verdict
    assert health(resource(FAILED, generation=2))[0] == 'Progressing'


def test_superseded_run_waiting_for_the_next_is_progressing():
    superseded = copy.deepcopy(QUEUED)
    superseded['conditions'] = [cond('Ready', 'Unknown', 'Superseded', 'Superseded by generation 2', 2),
                                cond('Reconciling', 'True', 'Superseded', 'Superseded by generation 2', 2)]
    superseded['observedGeneration'] = 2
    assert health(resource(superseded, generation=2)) == ('Progressing', 'Superseded by generation 2')


def test_conditions_without_messages_still_give_a_message():
    bare = copy.deepcopy(STALLED)
    for c in bare['conditions']:
        del c['message']
    del bare['message']
    status, message = health(resource(bare))
    assert (status, message) == ('Degraded', 'Stalled: SecretNotFound')


@pytest.mark.parametrize('sample', [QUEUED, STAGE_3, READY, FAILED, STALLED], ids=['queued', 'stage3', 'ready',
                                                                                  'failed', 'stalled'])
def test_the_status_argo_cd_reads_is_one_it_knows(sample: dict[str, Any]):
    assert health(resource(sample))[0] in {'Healthy', 'Progressing', 'Degraded', 'Suspended'}


def test_the_argocd_cm_patch_holds_health_lua_verbatim():
    (doc,) = [d for d in yaml.safe_load_all(CM_PATCH.read_text()) if d is not None]
    assert (doc['apiVersion'], doc['kind']) == ('v1', 'ConfigMap')
    assert doc['metadata']['name'] == 'argocd-cm'
    assert doc['data'][CM_KEY] == HEALTH_LUA.read_text(), \
        'deploy/argocd/argocd-cm-patch.yaml is out of date with deploy/argocd/health.lua'


def test_health_lua_runs_on_lua_5_1():
    # gopher-lua is Lua 5.1: make sure the interpreter here is too
    lua = lua51.LuaRuntime()
    assert lua.eval('_VERSION') == 'Lua 5.1'
