"""`panda-deploy run` and `panda-deploy crd` as a user runs them: a subprocess, exit codes, printed lines."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import yaml

from tests.fakes import World

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFEST = {
    'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
    'metadata': {'name': 'sample-app', 'namespace': 'default'},
    'spec': {'source': {'repo': 'your-org/sample-app', 'tokenSecretRef': {'name': 'github-token', 'key': 'token'}},
             'aws': {'region': 'ap-northeast-2', 'credentialsSecretRef': {'name': 'aws-creds'}},
             'healthCheck': {'checks': 5, 'intervalSeconds': 0}},
}
SECRETS = [
    {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'github-token'},
     'stringData': {'token': 'cli-token-4d2a9e'}},
    {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'aws-creds'},
     'data': {'accessKeyId': 'QUtJRENMSQ==', 'secretAccessKey': 'Y2xpLXNlY3JldC03NzE='}},
]


def panda_deploy(tmp_path: pathlib.Path, *args: str, manifest: dict = MANIFEST) -> subprocess.CompletedProcess[str]:
    (tmp_path / 'app.yaml').write_text(yaml.safe_dump(manifest))
    (tmp_path / 'secrets.yaml').write_text(yaml.safe_dump_all(SECRETS))
    env = {**os.environ, 'PANDA_DEPLOY_ADAPTERS': 'tests.fakes:make_adapters',
           'PANDA_FAKE_DIR': str(tmp_path / 'world'), 'PANDA_DEPLOY_POLL_SECONDS': '0.05', 'PYTHONPATH': str(ROOT)}
    return subprocess.run([sys.executable, '-m', 'controller', *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_prints_progress_and_exits_0_on_success(tmp_path):
    result = panda_deploy(tmp_path, 'run', '-f', 'app.yaml', '-s', 'secrets.yaml', '--status-out', 'status.yaml')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith('Run dep_') and lines[0].endswith('started for generation 1')
    for expected in ('[Stage 1] Repository cloned', '[Stage 1] Dockerfile found: Dockerfile',
                     '[Stage 2] Image pushed: 123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/your-org-sample-app:',
                     '[Stage 5] HealthCheck in progress - Check 5/5', '[Stage 5] Traffic switched to green'):
        assert any(line.startswith(expected) for line in lines), expected
    assert 'Succeeded: Revision' in lines[-1]
    status = yaml.safe_load((tmp_path / 'status.yaml').read_text())
    assert status['phase'] == 'Succeeded' and len(status['stages']) == 6
    assert 'cli-token-4d2a9e' not in result.stdout + result.stderr + (tmp_path / 'status.yaml').read_text()


def test_run_until_push_stops_after_stage_2(tmp_path):
    result = panda_deploy(tmp_path, 'run', '-f', 'app.yaml', '-s', 'secrets.yaml', '--until', 'Push',
                          '--status-out', 'status.yaml')
    assert result.returncode == 0, result.stderr
    status = yaml.safe_load((tmp_path / 'status.yaml').read_text())
    assert [s['name'] for s in status['stages']] == ['Build', 'Push']
    assert World(tmp_path / 'world').calls('ecs.register_task_definition') == []


def test_run_exits_1_when_a_stage_fails(tmp_path):
    World(tmp_path / 'world').set_script(health=[500])
    result = panda_deploy(tmp_path, 'run', '-f', 'app.yaml', '-s', 'secrets.yaml')
    assert result.returncode == 1
    assert 'Warning HealthCheckFailed: Health check of http://green.example.test/ failed 5/5 checks' in result.stdout


def test_run_exits_2_naming_the_field_at_fault(tmp_path):
    bad = {**MANIFEST, 'spec': {**MANIFEST['spec'], 'timeouts': {'stageSeconds': '10x'}}}
    result = panda_deploy(tmp_path, 'run', '-f', 'app.yaml', '-s', 'secrets.yaml', manifest=bad)
    assert result.returncode == 2
    assert 'spec.timeouts.stageSeconds' in result.stderr and 'Traceback' not in result.stderr


def test_run_exits_2_when_a_secret_is_missing(tmp_path):
    (tmp_path / 'none.yaml').write_text('')
    result = panda_deploy(tmp_path, 'run', '-f', 'app.yaml', '-s', 'none.yaml')
    assert result.returncode == 2
    assert "SecretNotFound: spec.source.tokenSecretRef: Secret 'github-token' not found" in result.stderr


def test_run_exits_2_on_a_missing_file(tmp_path):
    result = panda_deploy(tmp_path, 'run', '-f', 'nope.yaml', '-s', 'secrets.yaml')
    assert result.returncode == 2 and 'nope.yaml' in result.stderr


def test_crd_prints_the_checked_in_crd(tmp_path):
    result = panda_deploy(tmp_path, 'crd')
    assert result.returncode == 0
    assert result.stdout == (ROOT / 'crds' / 'pandadeploys.yaml').read_text()
