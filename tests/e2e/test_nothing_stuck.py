"""Nothing stuck: the operator process against the API emulator, with the fake adapters.

- A run whose status cannot be written (the API server refuses every status patch for a while, longer
  than the Kubernetes client's retries) ends visibly (an error log line and a Warning Event) and is picked
  up again by the same operator process once writes go through: the resource reaches Ready, no restart.
- `spec.suspend: true` set while a run is in flight lets that run finish and starts no new one; set back
  to false, the latest generation runs.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from controller.sandbox.kube import ApiError, ClusterEmulator
from tests.e2e.conftest import Cluster, Operator, wait_for
from tests.e2e.test_operator import SECRETS, SPEC
from tests.fakes import World

NOT_SAVED_LINE = 'could not be written'


def refuse_status_writes(monkeypatch: pytest.MonkeyPatch, refusing: threading.Event) -> list[float]:
    """While `refusing` is set, the emulator answers 503 to every write of a PandaDeploy's status; the
    times of the refusals are returned (a list that grows)."""
    refused: list[float] = []
    original = ClusterEmulator._update

    def update(self: ClusterEmulator, rtype: Any, version: str, namespace: str | None, name: str,
               old: dict[str, Any], body: Any, **kwargs: Any) -> dict[str, Any]:
        if refusing.is_set() and rtype.plural == 'pandadeploys' and kwargs.get('subresource') == 'status':
            refused.append(time.monotonic())
            raise ApiError(503, 'ServiceUnavailable', 'etcd is having a bad day')
        return original(self, rtype, version, namespace, name, old, body, **kwargs)

    monkeypatch.setattr(ClusterEmulator, '_update', update)
    return refused


def test_a_run_whose_status_cannot_be_written_ends_visibly_and_is_picked_up_again(
        cluster: Cluster, operator: Operator, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    refusing = threading.Event()
    refusing.set()
    refused = refuse_status_writes(monkeypatch, refusing)
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    pid = operator.process.pid if operator.process else None

    # The client retries each write (~15 s); then the run must give up visibly.
    wait_for(lambda: NOT_SAVED_LINE in operator.log(), timeout=90, what='the run to say its status was not saved')
    refusing.clear()
    assert len(refused) >= 2, refused
    assert cluster.status('app') == {}, 'nothing got through'
    line = next(line for line in operator.log().splitlines() if NOT_SAVED_LINE in line)
    assert 'ERROR' in line and 'HTTP 503' in line, line
    warning = wait_for(lambda: next((e for e in cluster.events('app') if e['reason'] == 'StatusNotSaved'), None),
                       timeout=10, what='the StatusNotSaved Event')
    assert warning['type'] == 'Warning' and 'HTTP 503' in warning['message']

    # Writes go through again: the same operator picks the resource up, without a restart or a spec change.
    wait_for(lambda: cluster.ready('app'), timeout=60, what='Ready')
    status = cluster.status('app')
    assert status['phase'] == 'Succeeded' and status['observedGeneration'] == 1
    assert [h['result'] for h in status['history']] == ['Succeeded']
    assert operator.process is not None and operator.process.pid == pid and operator.process.poll() is None
    assert len(world.calls('codedeploy.create_deployment')) == 1


def test_suspend_lets_the_run_in_flight_finish_and_starts_no_new_one(
        cluster: Cluster, operator: Operator, world: World) -> None:
    world.set_script(delay={'docker.build': 3})
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.status('app').get('stageName') == 'Build', what='stage 1')
    first = cluster.status('app')['deploymentId']

    cluster.patch('app', {'spec': {'suspend': True, 'healthCheck': {'checks': 2}}})  # generation 2

    wait_for(lambda: cluster.finished('app'), timeout=30, what='the run in flight to end')
    status = cluster.status('app')
    assert status['phase'] == 'Succeeded' and status['deploymentId'] == first
    assert [(h['generation'], h['result']) for h in status['history']] == [(1, 'Succeeded')]
    assert 'Superseded' not in [e['reason'] for e in cluster.events('app')]
    assert not world.calls('docker.build:cancelled')
    time.sleep(2)  # and nothing new starts for generation 2
    assert cluster.status('app') == status
    assert len(world.calls('docker.build')) == 1
    assert 'no new run starts' in operator.log()

    cluster.patch('app', {'spec': {'suspend': False}})  # generation 3: the latest spec runs
    wait_for(lambda: cluster.status('app').get('observedGeneration') == 3 and cluster.ready('app'),
             timeout=30, what='generation 3 Ready')
    assert cluster.status('app')['deploymentId'] != first
