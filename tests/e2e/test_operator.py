"""The operator process end to end: six stages, failure, supersede, delete, restart, timeout, stall, queue.

Manual promotion and abort (the annotations naming a run) are in test_annotations.py.
"""
from __future__ import annotations

import re
import signal
import time

import pytest

from tests.e2e.conftest import Cluster, Operator, wait_for
from tests.fakes import World

SPEC = {
    'source': {'repo': 'your-org/sample-app', 'branch': 'main',
               'tokenSecretRef': {'name': 'github-token', 'key': 'token'}},
    'aws': {'region': 'ap-northeast-2', 'credentialsSecretRef': {'name': 'aws-creds'}},
    'healthCheck': {'checks': 3, 'intervalSeconds': 0},
}
SECRETS = {
    'github-token': {'token': 'e2e-token-5bd1c9a0'},
    'aws-creds': {'accessKeyId': 'AKIDE2EFAKE', 'secretAccessKey': 'e2e-secret-77c0a1f3'},
}
STAGES = ['Build', 'Push', 'Service', 'BlueGreen', 'Verify', 'Complete']


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            if line.split('{')[0].split(' ')[0] == name:
                return float(line.rsplit(' ', 1)[1])
    return 0.0


def test_a_resource_passes_all_six_stages(cluster: Cluster, operator: Operator):
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.ready('app'), what='Ready')

    status = cluster.status('app')
    assert status['phase'] == 'Succeeded'
    assert status['observedGeneration'] == 1
    assert [s['name'] for s in status['stages']] == STAGES
    assert all(s['result'] == 'Succeeded' for s in status['stages'])
    assert status['stage'] == '6/6 Complete'
    assert re.fullmatch(r'dep_[a-z0-9]{10}', status['deploymentId'])
    assert status['image']['uri'].endswith(':' + status['revision'])
    assert status['activeColor'] == 'green'
    assert status['history'][0]['result'] == 'Succeeded'
    types = {c['type']: c for c in status['conditions']}
    assert types['Ready']['status'] == 'True' and types['Ready']['observedGeneration'] == 1
    assert 'Reconciling' not in types and 'Stalled' not in types
    assert all(types[s]['status'] == 'True' for s in STAGES)

    # Stage 6's Event is the run's final one, sent just after the status that says Ready.
    events = wait_for(lambda: [e for e in cluster.events('app')] if len(cluster.events('app')) >= 7 else None,
                      timeout=5, what='the final Event')
    assert [e['reason'] for e in events] == ['Started'] + [f'{s}Succeeded' for s in STAGES[:-1]] + ['Succeeded']
    assert {e['type'] for e in events} == {'Normal'}
    # Kopf's own state sits in our annotations; status holds only our fields.
    body = cluster.get('app')
    assert 'kopf' not in status
    assert any(k.startswith('deploy.panda.dev/') for k in body['metadata'].get('annotations', {}))
    assert body['metadata']['finalizers'] == ['deploy.panda.dev/finalizer']
    text = operator.metrics()
    assert metric(text, 'panda_deploy_runs_total', result='Succeeded') == 1
    assert metric(text, 'panda_deploy_stage_duration_seconds_count', stage='Build', result='Succeeded') == 1
    assert metric(text, 'panda_deploy_runs_in_progress') == 0


def test_an_unchanged_resource_writes_nothing_more(cluster: Cluster, operator: Operator):
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.ready('app'), what='Ready')
    time.sleep(1)
    before = len(cluster.writes_for('app'))
    cluster.patch('app', {'metadata': {'labels': {'team': 'payments'}}})  # not a spec change
    operator.kill(signal.SIGTERM)
    operator.start()  # resume pass over an object that is done
    time.sleep(3)
    after = cluster.writes_for('app')
    assert after[before:] == [('PATCH', 'pandadeploys', None)], 'only the label patch itself'
    assert len(cluster.events('app')) == 7  # Started, stages 1-5, Succeeded (which speaks for stage 6)


def test_a_failure_in_stage_3_ends_failed_with_a_warning(cluster: Cluster, operator: Operator, world: World):
    world.set_script(fail={'ecs.ensure_service': 'cluster panda-cluster does not exist'})
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.finished('app'), what='the run to end')

    status = cluster.status('app')
    assert status['phase'] == 'Failed'
    assert [s['result'] for s in status['stages']] == ['Succeeded', 'Succeeded', 'Failed']
    ready = cluster.condition('app', 'Ready')
    assert (ready['status'], ready['reason']) == ('False', 'ServiceUpdateFailed')
    assert 'panda-service' in ready['message'] and 'panda-cluster' in ready['message']
    # The final Event follows the final status write: wait for it.
    warning = wait_for(lambda: (e := cluster.events('app')[-1])['reason'] == 'ServiceUpdateFailed' and e,
                       timeout=10, what='the ServiceUpdateFailed Event')
    assert (warning['type'], warning['reason']) == ('Warning', 'ServiceUpdateFailed')
    text = operator.metrics()
    assert metric(text, 'panda_deploy_stage_failures_total', stage='Service', reason='ServiceUpdateFailed') == 1
    assert metric(text, 'panda_deploy_runs_total', result='Failed') == 1


def test_a_spec_change_mid_run_supersedes_the_run(cluster: Cluster, operator: Operator, world: World):
    world.set_script(delay={'docker.build': 30})
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.status('app').get('stageName') == 'Build', what='stage 1')
    first = cluster.status('app')['deploymentId']
    world.set_script()
    cluster.patch('app', {'spec': {'healthCheck': {'checks': 2}}})
    wait_for(lambda: cluster.ready('app') and cluster.status('app')['observedGeneration'] == 2, what='gen 2 Ready')

    status = cluster.status('app')
    assert status['deploymentId'] != first
    assert [(h['generation'], h['result']) for h in status['history']] == [(2, 'Succeeded'), (1, 'Superseded')]
    assert status['history'][1]['deploymentId'] == first
    assert world.calls('docker.build:cancelled'), 'the superseded build was told to stop'
    assert 'Superseded' in [e['reason'] for e in cluster.events('app')]


def test_a_delete_mid_run_cancels_it_and_releases_the_finalizer(cluster: Cluster, operator: Operator, world: World):
    world.set_script(delay={'docker.build': 30})
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.status('app').get('stageName') == 'Build', what='stage 1')
    cluster.delete('app')
    wait_for(lambda: cluster.get('app') is None, timeout=15, what='the object to go')
    wait_for(lambda: world.calls('docker.build:cancelled'), timeout=5, what='the build to stop')
    assert world.calls('ecr.ensure_repository') == [] or world.calls('docker.push') == []


@pytest.mark.parametrize('sig', [signal.SIGKILL, signal.SIGTERM], ids=['SIGKILL', 'SIGTERM'])
def test_a_stopped_operator_resumes_without_redoing_stage_1(cluster: Cluster, operator: Operator, world: World,
                                                             sig: int):
    # SIGTERM waits for the push in flight (a blocking call) to return before the process exits.
    world.set_script(delay={'docker.push': 5})
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    wait_for(lambda: world.calls('docker.push'), what='stage 2 to push')
    # A stage's start is saved once it has run for a second (engine.SHOW_RUNNING_AFTER) if nothing saved it sooner.
    before = wait_for(lambda: cluster.status('app').get('stageName') == 'Push' and cluster.status('app'),
                      timeout=3, what='status to show stage 2')
    assert before['stages'][0]['result'] == 'Succeeded'
    operator.kill(sig)
    assert cluster.status('app')['phase'] == 'Progressing', 'a stopping operator records no end of the run'
    world.set_script()
    operator.start()
    wait_for(lambda: cluster.ready('app'), what='Ready after restart')

    status = cluster.status('app')
    assert status['deploymentId'] == before['deploymentId']
    assert len(world.calls('docker.build')) == 1 and len(world.calls('git.checkout')) == 1
    assert len(world.calls('codedeploy.create_deployment')) == 1
    assert status['stages'][0]['startedAt'] == before['stages'][0]['startedAt']
    assert 'Resumed' in [e['reason'] for e in cluster.events('app')]
    assert [h['result'] for h in status['history']] == ['Succeeded']


def test_a_stage_over_its_timeout_fails_with_stage_timeout(cluster: Cluster, operator: Operator, world: World):
    world.set_script(delay={'docker.build': 30})
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', {**SPEC, 'timeouts': {'stageSeconds': 2}})
    wait_for(lambda: cluster.finished('app'), what='the run to end')

    ready = cluster.condition('app', 'Ready')
    assert ready['reason'] == 'StageTimeout'
    assert re.fullmatch(r'Stage 1 \(Build\) timed out after [23] seconds \(timeout: 2 seconds\)', ready['message'])
    # The run's final Event follows its final status write (the status is saved first), so wait for it.
    wait_for(lambda: cluster.events('app')[-1]['reason'] == 'StageTimeout', timeout=10, what='the StageTimeout Event')


def test_a_missing_secret_stalls_and_recovers_once_created(cluster: Cluster, operator: Operator):
    cluster.apply_secrets(**{'github-token': SECRETS['github-token']})
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.condition('app', 'Stalled'), what='Stalled')
    stalled = cluster.condition('app', 'Stalled')
    assert stalled['reason'] == 'SecretNotFound'
    assert stalled['message'] == "spec.aws.credentialsSecretRef: Secret 'aws-creds' not found"
    assert cluster.condition('app', 'Ready')['status'] == 'False'
    assert cluster.condition('app', 'Reconciling') is None
    time.sleep(3)  # retries in between write nothing new
    assert [e['reason'] for e in cluster.events('app')] == ['SecretNotFound']

    cluster.apply_secrets(**{'aws-creds': SECRETS['aws-creds']})
    wait_for(lambda: cluster.ready('app'), timeout=40, what='Ready after the Secret appeared')
    assert cluster.condition('app', 'Stalled') is None


def test_a_secret_without_its_key_stalls_naming_the_key(cluster: Cluster, operator: Operator):
    cluster.apply_secrets(**{'github-token': {'wrong': 'x'}, 'aws-creds': SECRETS['aws-creds']})
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.condition('app', 'Stalled'), what='Stalled')
    stalled = cluster.condition('app', 'Stalled')
    assert stalled['reason'] == 'SecretKeyNotFound'
    assert stalled['message'] == "spec.source.tokenSecretRef: Secret 'github-token' has no key 'token'"


def test_an_invalid_spec_stalls_until_fixed(cluster: Cluster, operator: Operator):
    """What the CRD cannot check (the ECR name derived from the source, here 'your-org-sample..app') stalls
    the operator; everything else the API server refuses (a dockerfile outside the repository is a 422)."""
    cluster.apply_secrets(**SECRETS)
    bad = {**SPEC, 'source': {**SPEC['source'], 'repo': 'your-org/sample..app'}}
    cluster.create('app', bad)
    wait_for(lambda: cluster.condition('app', 'Stalled'), what='Stalled')
    stalled = cluster.condition('app', 'Stalled')
    assert stalled['reason'] == 'InvalidSpec'
    assert 'spec.image.repository' in stalled['message'] and 'your-org-sample..app' in stalled['message']
    cluster.patch('app', {'spec': {'source': {'repo': SPEC['source']['repo']}}})
    wait_for(lambda: cluster.ready('app'), what='Ready after the fix')


@pytest.mark.parametrize('operator_env', [{'PANDA_DEPLOY_WORKERS': '1'}])
def test_runs_beyond_the_pool_wait_queued_and_start_in_order(cluster: Cluster, operator: Operator, world: World):
    world.set_script(delay={'docker.build': 1.5})
    cluster.apply_secrets(**SECRETS)
    names = ['app-a', 'app-b', 'app-c']
    for name in names:
        cluster.create(name, {**SPEC, 'source': {**SPEC['source'], 'repo': f'your-org/{name}'}})
        time.sleep(0.3)
    wait_for(lambda: cluster.status('app-c').get('phase') == 'Pending', what='app-c queued')
    queued = cluster.condition('app-c', 'Reconciling')
    assert queued['reason'] == 'Queued'
    wait_for(lambda: all(cluster.ready(n) for n in names), timeout=60, what='all Ready')
    starts = [cluster.status(n)['startedAt'] for n in names]
    assert starts == sorted(starts)
    ends_and_starts = [(cluster.status(n)['startedAt'], cluster.status(n)['completedAt']) for n in names]
    for (_, end), (start, _) in zip(ends_and_starts, ends_and_starts[1:], strict=False):
        assert start >= end, 'one worker: runs do not overlap'
    assert [e['reason'] for e in cluster.events('app-c')][0] == 'Queued'

