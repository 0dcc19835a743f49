"""The promote annotation, through the operator process: it names the run it is for.

`deploy.panda.dev/promote=<deploymentId>` lets that run's manual promotion
go on, and no other. A value naming another run (one left over from an
earlier run, or `true`) does nothing and `status.promotion` says so once.
"""
from __future__ import annotations

import time

from tests.e2e.conftest import Cluster, Operator, wait_for
from tests.e2e.test_operator import SECRETS, SPEC
from tests.fakes import World

MANUAL = {**SPEC, 'blueGreen': {'promotion': 'manual'}}
PROMOTE = 'deploy.panda.dev/promote'


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
