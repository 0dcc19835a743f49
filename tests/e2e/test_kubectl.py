"""The kubectl experience against the operator and the API emulator: apply, get (printer columns),
wait for Ready, events of the resource, and a refused manifest naming its field.

kubectl is not a project dependency (Debian's kubernetes-client 1.20 is too old
for this API surface); the tests run where a kubectl binary is on PATH and skip
elsewhere, saying so.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.e2e.conftest import ROOT, Cluster, Operator

pytestmark = pytest.mark.skipif(shutil.which('kubectl') is None, reason='kubectl is not on PATH')


def kubectl(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(['kubectl', '--kubeconfig', str(cluster.kubeconfig), *args],
                            capture_output=True, text=True, timeout=90)
    if check and result.returncode != 0:
        raise AssertionError(f'kubectl {" ".join(args)} failed:\n{result.stdout}\n{result.stderr}')
    return result


def test_apply_get_wait_and_events(cluster: Cluster, operator: Operator, tmp_path):
    app = yaml.safe_load((ROOT / 'examples' / 'pandadeploy.yaml').read_text())
    app['spec']['healthCheck']['intervalSeconds'] = 0
    (tmp_path / 'app.yaml').write_text(yaml.safe_dump(app))
    kubectl(cluster, 'apply', '-f', str(ROOT / 'examples' / 'secrets.yaml'), '-f', str(tmp_path / 'app.yaml'))

    kubectl(cluster, 'wait', '--for=condition=Ready', 'pd/sample-app', '--timeout=60s')

    table = kubectl(cluster, 'get', 'pd').stdout.splitlines()
    assert table[0].split() == ['NAME', 'PHASE', 'STAGE', 'REVISION', 'ACTIVE', 'READY', 'AGE']
    row = table[1].split()
    revision = cluster.status('sample-app')['revision']
    assert row[:7] == ['sample-app', 'Succeeded', '6/6', 'Complete', revision[:7], 'blue', 'True']

    events = kubectl(cluster, 'get', 'events', '--field-selector', 'involvedObject.name=sample-app',
                     '-o', 'jsonpath={range .items[*]}{.reason}{"\\n"}{end}').stdout.split()
    assert {'Started', 'Succeeded', 'BuildSucceeded', 'PushSucceeded', 'ServiceSucceeded', 'BlueGreenSkipped',
            'VerifySucceeded'} <= set(events)


def test_a_bad_manifest_is_refused_naming_the_field(cluster: Cluster):
    result = kubectl(cluster, 'apply', '-f', str(ROOT / 'examples' / 'bad' / 'container-port.yaml'), check=False)
    assert result.returncode != 0
    assert 'spec.ecs.containerPort' in result.stderr
