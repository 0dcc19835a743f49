"""The promote and abort annotations, through the operator process: each names the run it is for.

`deploy.panda.dev/promote=<deploymentId>` lets that run's manual promotion
go on, and no other; `deploy.panda.dev/abort=<deploymentId>` stops that run
with rollback (traffic stays), ending it `Failed` with reason `Aborted`. A
value naming another run (one left over from an earlier run, or `true`)
does nothing and is said so once: in `status.promotion` for promote, in one
Warning Event for abort.
"""
from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, Operator, wait_for
from tests.e2e.test_operator import SECRETS, SPEC, metric
from tests.fakes import World

MANUAL = {**SPEC, 'blueGreen': {'promotion': 'manual'}}
PROMOTE, ABORT = 'deploy.panda.dev/promote', 'deploy.panda.dev/abort'
OTHER_RUN = 'dep_0ther0run0'


def annotate(cluster: Cluster, name: str, key: str, value: str) -> None:
    cluster.patch(name, {'metadata': {'annotations': {key: value}}})


def waiting_for_promotion(cluster: Cluster, name: str = 'app') -> str:
    """The run's deploymentId once it waits for promotion in Verify."""
    wait_for(lambda: cluster.status(name).get('promotion'), what='waiting for promotion')
    status = cluster.status(name)
    assert status['stageName'] == 'Verify' and status['phase'] == 'Progressing'
    return str(status['deploymentId'])


def status_patches(cluster: Cluster, name: str = 'app') -> int:
    return cluster.writes_for(name).count(('PATCH', 'pandadeploys', 'status'))


def reasons(cluster: Cluster, name: str = 'app') -> list[str]:
    return [e['reason'] for e in cluster.events(name)]


def abort(cluster: Cluster, name: str, run: str, *, where: str) -> dict[str, Any]:
    """Annotate the abort of `run`; once the run ended, its Ready condition, which says it was aborted `where`."""
    annotate(cluster, name, ABORT, run)
    wait_for(lambda: cluster.finished(name), timeout=10, what=f'{name} to end')
    ready = cluster.condition(name, 'Ready')
    assert ready is not None
    assert (ready['status'], ready['reason'], ready['message']) == (
        'False', 'Aborted', f'Run {run} aborted {where} by {ABORT}={run}; production stays where it was')
    return ready


# -- promote ------------------------------------------------------------------------------


def test_promote_true_is_refused_and_the_deployment_id_promotes(cluster: Cluster, operator: Operator, world: World):
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', MANUAL)
    run = waiting_for_promotion(cluster)
    assert cluster.status('app')['promotion'] == (
        f'Green passed 3/3 checks; annotate {PROMOTE}={run} to shift traffic')

    annotate(cluster, 'app', PROMOTE, 'true')
    refused = (f"Green passed 3/3 checks; {PROMOTE}=true names no run (it takes a deploymentId); "
               f'annotate with {run} to shift traffic')
    wait_for(lambda: cluster.status('app')['promotion'] == refused, timeout=10, what='the refusal in status')
    patches = status_patches(cluster)
    time.sleep(1.5)  # polls go on; the refusal was news once
    assert status_patches(cluster) == patches
    assert world.calls('codedeploy.continue_deployment') == []
    assert cluster.status('app')['phase'] == 'Progressing'

    annotate(cluster, 'app', PROMOTE, run)
    wait_for(lambda: cluster.ready('app'), what='Ready after promotion')
    assert 'promotion' not in cluster.status('app')
    assert len(world.calls('codedeploy.continue_deployment')) == 1


def test_a_leftover_approval_does_not_promote_the_next_run(cluster: Cluster, operator: Operator, world: World):
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', MANUAL)
    first = waiting_for_promotion(cluster)
    annotate(cluster, 'app', PROMOTE, first)
    wait_for(lambda: cluster.ready('app'), what='run 1 Ready')
    assert len(world.calls('codedeploy.continue_deployment')) == 1

    world.set_script(commit='two')  # a new commit: run 2 deploys through CodeDeploy again
    cluster.patch('app', {'spec': {'healthCheck': {'checks': 2}}})
    wait_for(lambda: cluster.status('app').get('observedGeneration') == 2 and cluster.status('app').get('promotion'),
             what='run 2 waiting for promotion')
    second = waiting_for_promotion(cluster)
    assert second != first
    assert cluster.status('app')['promotion'] == (
        f'Green passed 2/2 checks; {PROMOTE} names {first}, not this run {second}; '
        f'annotate with {second} to shift traffic')
    time.sleep(1.5)
    assert len(world.calls('codedeploy.continue_deployment')) == 1, 'the leftover approval promoted nothing'
    assert cluster.status('app')['phase'] == 'Progressing'

    annotate(cluster, 'app', PROMOTE, second)
    wait_for(lambda: cluster.ready('app') and cluster.status('app')['observedGeneration'] == 2, what='run 2 Ready')
    assert len(world.calls('codedeploy.continue_deployment')) == 2
    assert [h['deploymentId'] for h in cluster.status('app')['history']] == [second, first]


# -- abort ------------------------------------------------------------------------------


def test_an_abort_during_the_manual_wait_stops_the_deployment_with_rollback(
        cluster: Cluster, operator: Operator, world: World):
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', MANUAL)
    run = waiting_for_promotion(cluster)
    deployment = cluster.status('app')['codeDeployDeploymentId']

    message = abort(cluster, 'app', run, where='at stage 5/6 Verify')['message']

    status = cluster.status('app')
    assert status['phase'] == 'Failed' and status['message'] == message
    verify = status['stages'][4]
    assert (verify['name'], verify['result'], verify['reason']) == ('Verify', 'Failed', 'Aborted')
    assert cluster.condition('app', 'Verify')['reason'] == 'Aborted'
    assert (status['history'][0]['deploymentId'], status['history'][0]['result'],
            status['history'][0]['reason']) == (run, 'Failed', 'Aborted')
    assert 'promotion' not in status, 'an ended run waits for no promotion'
    # The open CodeDeploy deployment was stopped (with rollback); traffic never moved.
    assert len(world.calls('codedeploy.stop_deployment')) == 1
    assert world.calls('codedeploy.continue_deployment') == []
    assert world.state()['deployments'][deployment]['status'] == 'Stopped'
    assert world.state()['active'] == 'blue'
    wait_for(lambda: reasons(cluster)[-1] == 'Aborted', timeout=5, what='the Aborted Event')
    assert cluster.events('app')[-1]['type'] == 'Warning'
    text = operator.metrics()
    assert metric(text, 'panda_deploy_stage_failures_total', stage='Verify', reason='Aborted') == 1
    assert metric(text, 'panda_deploy_runs_total', result='Failed') == 1

    # Degraded until retried: a restarted operator starts no run and says nothing about the leftover abort.
    writes = len(cluster.writes_for('app'))
    operator.kill(signal.SIGTERM)
    operator.start()
    time.sleep(2)
    assert cluster.writes_for('app')[writes:] == []
    assert cluster.status('app')['phase'] == 'Failed'


def test_an_abort_during_build_stops_the_build(cluster: Cluster, operator: Operator, world: World):
    world.set_script(delay={'docker.build': 30})
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.status('app').get('stageName') == 'Build', what='stage 1')
    run = cluster.status('app')['deploymentId']

    abort(cluster, 'app', run, where='at stage 1/6 Build')

    assert [(s['name'], s['result']) for s in cluster.status('app')['stages']] == [('Build', 'Failed')]
    wait_for(lambda: world.calls('docker.build:cancelled'), timeout=5, what='the build to be told to stop')
    assert world.calls('docker.push') == [] and world.calls('codedeploy.create_deployment') == []


@pytest.mark.parametrize('operator_env', [{'PANDA_DEPLOY_WORKERS': '1'}])
def test_an_abort_of_a_queued_run_ends_it_before_it_starts(cluster: Cluster, operator: Operator, world: World):
    world.set_script(delay={'docker.build': 3})
    cluster.apply_secrets(**SECRETS)
    cluster.create('app-a', SPEC)
    wait_for(lambda: cluster.status('app-a').get('stageName') == 'Build', what='app-a building')
    cluster.create('app-b', {**SPEC, 'source': {**SPEC['source'], 'repo': 'your-org/app-b'}})
    wait_for(lambda: cluster.condition('app-b', 'Reconciling') and
             cluster.condition('app-b', 'Reconciling')['reason'] == 'Queued', what='app-b queued')
    run = cluster.status('app-b')['deploymentId']

    abort(cluster, 'app-b', run, where='while queued')

    assert cluster.status('app-b')['stages'] == []
    assert cluster.status('app-b')['history'][0]['reason'] == 'Aborted'
    wait_for(lambda: cluster.ready('app-a'), what='app-a goes on to Ready')
    assert len(world.calls('docker.build')) == 1, 'app-b never built'


def test_an_abort_naming_another_run_does_nothing_and_says_so_once(
        cluster: Cluster, operator: Operator, world: World):
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', MANUAL)
    run = waiting_for_promotion(cluster)

    annotate(cluster, 'app', ABORT, 'true')
    wait_for(lambda: 'AbortIgnored' in reasons(cluster), timeout=10, what='the AbortIgnored Event')
    annotate(cluster, 'app', ABORT, OTHER_RUN)
    wait_for(lambda: reasons(cluster).count('AbortIgnored') == 2, timeout=10, what='the second AbortIgnored')
    ignored = [e for e in cluster.events('app') if e['reason'] == 'AbortIgnored']
    assert [(e['type'], e['message']) for e in ignored] == [
        ('Warning', f'{ABORT}=true names no run (it takes a deploymentId); annotate with {run} to abort the run '
                    'in flight'),
        ('Warning', f'{ABORT} names {OTHER_RUN}, not the run in flight {run}; annotate with {run} to abort it')]
    cluster.patch('app', {'metadata': {'labels': {'team': 'payments'}}})  # more events, same annotation
    time.sleep(1.5)
    assert reasons(cluster).count('AbortIgnored') == 2, 'each value said once'
    assert cluster.status('app')['phase'] == 'Progressing'
    assert world.calls('codedeploy.stop_deployment') == []

    annotate(cluster, 'app', PROMOTE, run)
    wait_for(lambda: cluster.ready('app'), what='Ready after promotion')

    # An abort of a run that already ended does nothing either.
    annotate(cluster, 'app', ABORT, run)
    wait_for(lambda: reasons(cluster).count('AbortIgnored') == 3, timeout=10, what='the third AbortIgnored')
    assert cluster.events('app')[-1]['message'] == f'{ABORT} names {run}, but no run is in flight; nothing aborted'
    time.sleep(1)
    status = cluster.status('app')
    assert status['phase'] == 'Succeeded' and [h['result'] for h in status['history']] == ['Succeeded']
    assert world.calls('codedeploy.stop_deployment') == []
