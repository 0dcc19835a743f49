"""Two operator processes in one Kopf peering (deploy/manifests/peering): only the active one drives runs.

Both run against the emulator, which serves Kopf's ClusterKopfPeering CRD
from deploy/manifests/peering. Kopf pauses the replica with the lower
priority; the fake adapters' journal records the process id of every call,
so it shows which replica did the work. A replica that Kopf pauses in the
middle of a run must drop it (the active one resumes it from its status),
not drive it to the end beside the active one: two drivers of one run build
twice, and race for the CodeDeploy deployment and the status.
"""
from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.conftest import ROOT, Cluster, Operator, wait_for
from tests.e2e.test_operator import SECRETS, SPEC
from tests.fakes import World

PEERING = 'panda-deploy'


@pytest.fixture
def peering(cluster: Cluster) -> Cluster:
    for doc in yaml.safe_load_all((ROOT / 'deploy' / 'manifests' / 'peering' / 'kopf-peering-crd.yaml').read_text()):
        cluster.emulator.add_crd(doc)
    cluster.emulator.create({'apiVersion': 'kopf.dev/v1', 'kind': 'ClusterKopfPeering', 'metadata': {'name': PEERING}})
    return cluster


@pytest.fixture
def replicas(peering: Cluster, world: World, tmp_path: pathlib.Path) -> Iterator[dict[int, Operator]]:
    """Operators by priority, started by the test (the peering component gives each pod its own priority)."""
    started: dict[int, Operator] = {}

    def make(priority: int) -> Operator:
        started[priority] = Operator(
            kubeconfig=peering.kubeconfig, world=world, log=tmp_path / f'operator-{priority}.log',
            env={'POD_ID': f'panda-deploy-{priority}'},
            args=('--all-namespaces', f'--peering={PEERING}', f'--priority={priority}'))
        return started[priority]

    yield make  # type: ignore[misc]
    for op in started.values():
        op.stop()
        print(f'--- priority {op.args[-1]}:\n{op.log()[-3000:]}')


def paused(op: Operator) -> bool:
    """Kopf paused an active replica for a peer with a higher priority."""
    return 'Pausing operations in favour of' in op.log()


def resumed(op: Operator) -> bool:
    """Kopf starts each replica paused, and resumes it when no peer has a higher priority."""
    return 'Resuming operations after the pause' in op.log()


def pid(op: Operator) -> int:
    assert op.process is not None
    return op.process.pid


def test_a_standby_replica_drives_no_run(peering: Cluster, replicas, world: World):
    active, standby = replicas(200), replicas(100)
    active.start()
    wait_for(lambda: resumed(active), what='the first replica to become active')
    standby.start()
    time.sleep(3)   # it has seen its peer by now
    assert not resumed(standby), 'the replica with the lower priority stays paused'
    peering.apply_secrets(**SECRETS)
    peering.create('app', SPEC)
    wait_for(lambda: peering.ready('app'), what='Ready')

    assert {entry['pid'] for entry in world.journal()} == {pid(active)}, 'every call made by the active replica'
    assert 'Run dep_' not in standby.log() and not resumed(standby) and not paused(active)


def test_a_replica_paused_mid_run_drops_it_and_the_active_one_finishes_it(peering: Cluster, replicas, world: World):
    world.set_script(delay={'docker.build': 8})
    first = replicas(100)
    first.start()
    peering.apply_secrets(**SECRETS)
    peering.create('app', SPEC)
    wait_for(lambda: world.calls('docker.build'), what='the build to start in the first replica')

    second = replicas(200)   # a higher priority: the first replica pauses
    second.start()
    wait_for(lambda: paused(first), what='the first replica to pause')
    since = time.time() + 1.0   # what the first replica still had on the way
    wait_for(lambda: peering.ready('app'), timeout=60, what='Ready')

    late = [e['call'] for e in world.journal() if e['pid'] == pid(first) and e['time'] > since
            and not e['call'].endswith(':cancelled')]
    assert late == [], f'the paused replica went on driving the run: {late}'
    assert 'Succeeded' not in first.log(), 'the paused replica finished the run'
    (entry,) = peering.status('app')['history']
    assert entry['result'] == 'Succeeded'
    assert [e['reason'] for e in peering.events('app')].count('Succeeded') == 1
