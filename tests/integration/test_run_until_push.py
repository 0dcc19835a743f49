"""`panda-deploy run --until Push` with the real adapters: git over smart HTTP with a token,
the Docker engine, a real registry (PANDA_DEPLOY_REGISTRY) and moto for STS and ECR.

It checks the user's view (exit code, printed lines, status file), the
registry's own view of the pushed manifest, the skip path on a second run,
and that the token and AWS keys never show up in output, child argv, the
status, or files left under the temporary directory.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml

from controller.models import PandaDeploySpec
from controller.pipeline.build import image_tag
from tests.integration.githttp import serving

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = 'run-token-8e1f3c5a9b7d'
ACCESS_KEY, SECRET_KEY = 'AKIDRUNTESTKEY', 'run-secret-2b4d6f8h0j'
MANIFEST_ACCEPT = ', '.join([
    'application/vnd.docker.distribution.manifest.v2+json',
    'application/vnd.oci.image.manifest.v1+json',
    'application/vnd.docker.distribution.manifest.list.v2+json',
    'application/vnd.oci.image.index.v1+json',
])


def make_repository(root: pathlib.Path) -> pathlib.Path:
    """The sample app as a bare repository `sample-app.git` under root."""
    work = root / 'work'
    shutil.copytree(ROOT / 'examples' / 'sample-app', work)
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.test']
    subprocess.run(['git', 'init', '-q', '-b', 'main', str(work)], check=True)
    subprocess.run([*git, '-C', str(work), 'add', '.'], check=True)
    subprocess.run([*git, '-C', str(work), 'commit', '-qm', 'sample app'], check=True)
    bare = root / 'repos' / 'sample-app.git'
    subprocess.run(['git', 'clone', '-q', '--bare', str(work), str(bare)], check=True)
    return bare


class ArgvWatcher(threading.Thread):
    """Samples the command lines of all processes while a run goes on."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for cmdline in pathlib.Path('/proc').glob('[0-9]*/cmdline'):
                try:
                    self.seen.add(cmdline.read_bytes().replace(b'\0', b' ').decode(errors='replace'))
                except OSError:
                    pass
            time.sleep(0.02)


@pytest.fixture
def sample(tmp_path: pathlib.Path, base_image: str, registry: str, aws_endpoint: str):
    make_repository(tmp_path / 'git')
    with serving(tmp_path / 'git' / 'repos', token=TOKEN) as server:
        manifest = {
            'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
            'metadata': {'name': 'sample-app', 'namespace': 'default'},
            'spec': {
                'source': {'url': server.url('sample-app.git'), 'branch': 'main',
                           'tokenSecretRef': {'name': 'github-token', 'key': 'token'},
                           'buildArgs': {'BASE_IMAGE': base_image}},
                'aws': {'region': 'ap-northeast-2', 'credentialsSecretRef': {'name': 'aws-creds'}},
                'image': {'repository': 'your-org-sample-app'},
            },
        }
        secrets = [
            {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'github-token'},
             'stringData': {'token': TOKEN}},
            {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'aws-creds'},
             'stringData': {'accessKeyId': ACCESS_KEY, 'secretAccessKey': SECRET_KEY}},
        ]
        (tmp_path / 'app.yaml').write_text(yaml.safe_dump(manifest))
        (tmp_path / 'secrets.yaml').write_text(yaml.safe_dump_all(secrets))
        yield tmp_path, registry, aws_endpoint


def run_until_push(tmp_path: pathlib.Path, registry: str, endpoint: str,
                   out: str = 'status.yaml') -> subprocess.CompletedProcess[str]:
    temp_root = tmp_path / 'tmp'
    temp_root.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith('AWS_')}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_EC2_METADATA_DISABLED='true', PANDA_DEPLOY_REGISTRY=registry,
               TMPDIR=str(temp_root), HOME=str(tmp_path / 'home'), PYTHONPATH=str(ROOT),
               PANDA_DEPLOY_GIT_HOSTS='http://127.0.0.1:*')  # the token goes to the test's git server
    env.pop('PANDA_DEPLOY_ADAPTERS', None)
    return subprocess.run([sys.executable, '-m', 'controller', 'run', '-f', 'app.yaml', '-s', 'secrets.yaml',
                           '--until', 'Push', '--status-out', out],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def registry_digest(registry: str, name: str, tag: str) -> str:
    request = urllib.request.Request(f'http://{registry}/v2/{name}/manifests/{tag}', method='HEAD',
                                     headers={'Accept': MANIFEST_ACCEPT})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers['Docker-Content-Digest']


@pytest.mark.docker
def test_run_until_push_builds_and_pushes_the_sample_app(sample, docker_client):
    tmp_path, registry, endpoint = sample
    watcher = ArgvWatcher()
    watcher.start()
    try:
        result = run_until_push(tmp_path, registry, endpoint)
    finally:
        watcher.stop.set()
        watcher.join()
    assert result.returncode == 0, result.stdout + result.stderr

    status = yaml.safe_load((tmp_path / 'status.yaml').read_text())
    assert status['phase'] == 'Succeeded'
    assert [(s['name'], s['result']) for s in status['stages']] == [('Build', 'Succeeded'), ('Push', 'Succeeded')]
    revision = subprocess.run(['git', '-C', str(tmp_path / 'git' / 'work'), 'rev-parse', 'HEAD'],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert status['revision'] == revision
    # The tag: the commit, then the hash of the build inputs (spec.source.buildArgs is set).
    tag = image_tag(PandaDeploySpec.model_validate(yaml.safe_load((tmp_path / 'app.yaml').read_text())['spec']),
                    revision)
    assert tag.startswith(f'{revision}-')
    assert status['image']['uri'].endswith(f'.amazonaws.com/your-org-sample-app:{tag}')
    assert status['image']['digest'] == registry_digest(registry, 'your-org-sample-app', tag)
    lines = result.stdout.splitlines()
    for expected in ('[Stage 1] Repository cloned', '[Stage 1] Dockerfile found: Dockerfile',
                     f'[Stage 1] Docker image built: your-org-sample-app:{tag}',
                     '[Stage 2] Image pushed: '):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
    labels = docker_client.images.get(f'your-org-sample-app:{tag}').labels
    assert labels['org.opencontainers.image.revision'] == revision

    # Secrets: not in output, status, argv of any process seen, or files left behind.
    secrets = (TOKEN, SECRET_KEY)
    text = result.stdout + result.stderr + (tmp_path / 'status.yaml').read_text()
    for secret in secrets:
        assert secret not in text
        assert not [argv for argv in watcher.seen if secret in argv]
    assert len(watcher.seen) > 10, 'the watcher saw processes'
    left = [p for p in (tmp_path / 'tmp').rglob('*')]
    assert left == [], f'temporary files left behind: {left}'
    for path in (tmp_path / 'home').rglob('*') if (tmp_path / 'home').exists() else []:
        if path.is_file():
            assert not any(s.encode() in path.read_bytes() for s in secrets), path


@pytest.mark.docker
def test_a_second_run_for_the_same_commit_skips_clone_build_and_push(sample, docker_client):
    tmp_path, registry, endpoint = sample
    first = run_until_push(tmp_path, registry, endpoint, out='first.yaml')
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_until_push(tmp_path, registry, endpoint, out='second.yaml')
    assert second.returncode == 0, second.stdout + second.stderr

    status = yaml.safe_load((tmp_path / 'second.yaml').read_text())
    assert [(s['name'], s['result']) for s in status['stages']] == [('Build', 'Skipped'), ('Push', 'Skipped')]
    assert status['image'] == {k: v for k, v in yaml.safe_load((tmp_path / 'first.yaml').read_text())['image'].items()
                               if k != 'dockerfile'}
    assert 'already in the registry' in second.stdout
    assert 'Repository cloned' not in second.stdout and 'Docker image built' not in second.stdout


@pytest.mark.docker
def test_a_wrong_token_fails_the_build_with_source_auth_failed(sample, docker_client):
    tmp_path, registry, endpoint = sample
    secrets = list(yaml.safe_load_all((tmp_path / 'secrets.yaml').read_text()))
    secrets[0]['stringData']['token'] = 'wrong-token-000'
    (tmp_path / 'secrets.yaml').write_text(yaml.safe_dump_all(secrets))
    result = run_until_push(tmp_path, registry, endpoint)
    assert result.returncode == 1
    assert 'Warning SourceAuthFailed' in result.stdout
    assert 'wrong-token-000' not in result.stdout + result.stderr
    status = yaml.safe_load((tmp_path / 'status.yaml').read_text())
    assert status['stages'][0]['reason'] == 'SourceAuthFailed'


@pytest.mark.docker
def test_a_failing_dockerfile_gives_build_failed_with_the_exit_code(sample, docker_client):
    tmp_path, registry, endpoint = sample
    work = tmp_path / 'git' / 'work'
    (work / 'Dockerfile').write_text('ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo about to fail && exit 7\n')
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.test', '-C', str(work)]
    subprocess.run([*git, 'commit', '-qam', 'break it'], check=True)
    subprocess.run([*git, 'push', '-q', str(tmp_path / 'git' / 'repos' / 'sample-app.git'), 'main'], check=True)
    result = run_until_push(tmp_path, registry, endpoint)
    assert result.returncode == 1
    status = yaml.safe_load((tmp_path / 'status.yaml').read_text())
    record = status['stages'][0]
    assert record['reason'] == 'BuildFailed'
    assert 'exit code 7' in record['message'] and 'about to fail' in record['message']
    assert json.dumps(status).count(TOKEN) == 0
