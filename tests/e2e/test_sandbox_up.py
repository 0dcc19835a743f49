"""`panda-deploy sandbox up` and `sandbox world` as a user runs them for a repository of their own.

One `sandbox up` serves the whole module (a stack takes a while to start):
it runs as a subprocess in a session of its own, so that its process group
is exactly what it started. The tests wait for `DIR/env` and
`DIR/kubeconfig`, make two worlds with `sandbox world` -- `web` with the
`CodeDeploy` strategy and `api` with ECS native `BlueGreen` -- add to each a
`source` (a file:// repository of the user's own, built FROM the stack's
local base image) and a `healthCheck`, apply both with kubectl and wait for
Ready; each app answers through the load-balancer stand-in named in
`DIR/env`. `api` then gets a second commit, pinned with
`spec.source.revision`, which ECS's own blue/green moves production to green.
After SIGINT (even though it was started with SIGINT ignored, as a shell
starts a background command) nothing it started may remain: no process of
its group, no container labelled with its pid, no `DIR/env`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import docker
import pytest
import yaml

from controller.sandbox.stack import localdocker
from controller.sandbox.stack.envfile import read_env
from controller.sandbox.stack.tasks import LABEL
from controller.sandbox.stack.world import sandbox_clients
from tests.conftest import unavailable
from tests.e2e.test_demo import processes_in_group
from tests.e2e.test_load import git

ROOT = pathlib.Path(__file__).resolve().parents[2]
UP_TIMEOUT, READY_TIMEOUT = 120, 180
pytestmark = [pytest.mark.docker, pytest.mark.slow]


def panda_deploy(*args: str) -> list[str]:
    return [sys.executable, '-m', 'controller', *args]


def start_up(directory: pathlib.Path, log: pathlib.Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'PYTHONUNBUFFERED': '1'}
    with log.open('wb') as out:
        return subprocess.Popen(panda_deploy('sandbox', 'up', '--dir', str(directory)), cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=ignore_sigint)


def ignore_sigint() -> None:
    """As a shell starts a background command (`panda-deploy sandbox up --dir DIR &`): SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def await_files(process: subprocess.Popen[bytes], directory: pathlib.Path, log: pathlib.Path) -> None:
    deadline = time.monotonic() + UP_TIMEOUT
    while not ((directory / 'env').exists() and (directory / 'kubeconfig').exists()):
        if process.poll() is not None:
            if process.returncode == 2 and 'not installed' in log.read_text():
                unavailable(log.read_text().strip())  # docker-registry or busybox-static missing
            pytest.fail(f'sandbox up exited with {process.returncode}:\n{log.read_text()}', pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f'sandbox up wrote no DIR/env within {UP_TIMEOUT}s:\n{log.read_text()}', pytrace=False)
        time.sleep(0.2)


def make_repository(root: pathlib.Path, base_image: str) -> str:
    """A repository of the user's own: a page and /health served by busybox httpd on $PORT; its file:// URL."""
    work = root / 'my-org' / 'my-app'
    (work / 'www').mkdir(parents=True)
    (work / 'Dockerfile').write_text(f'FROM {base_image}\nCOPY www /www\n'
                                     'CMD ["sh", "-c", "exec httpd -f -p \\"${PORT:-8080}\\" -h /www"]\n')
    (work / 'www' / 'health').write_text('ok\n')
    git('init', '-q', '-b', 'main', '.', cwd=work)
    commit(work, 1)
    return work.as_uri()


def commit(work: pathlib.Path, version: int) -> str:
    """Version `version` of the page, committed to main; the commit's SHA."""
    (work / 'www' / 'index.html').write_text(f'<h1>my app v{version}</h1>\n')
    git('add', '-A', cwd=work)
    git('commit', '-q', '-m', f'my app v{version}', cwd=work)
    return git('rev-parse', 'HEAD', cwd=work)


def kubectl(directory: pathlib.Path, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
    done = subprocess.run(['kubectl', '--kubeconfig', str(directory / 'kubeconfig'), *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f'kubectl {shlex.join(args)}: {done.stdout}\n{done.stderr}'
    return done.stdout


def stop(process: subprocess.Popen[bytes], log: pathlib.Path) -> None:
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C in its terminal does: the whole group
    try:
        assert process.wait(timeout=90) == 0, log.read_text()
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f'sandbox up did not stop within 90s after SIGINT:\n{log.read_text()}', pytrace=False)


@dataclasses.dataclass
class Up:
    """The one `sandbox up` of this module, and the user's repository."""
    process: subprocess.Popen[bytes]
    directory: pathlib.Path
    log: pathlib.Path
    repository: pathlib.Path


@pytest.fixture(scope='module')
def up(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """`sandbox up`, started once for every deployment below; stopped at the end if a test has not."""
    tmp = tmp_path_factory.mktemp('sandbox-up')
    directory, log = tmp / 'sandbox', tmp / 'up.log'
    process = start_up(directory, log)
    try:
        await_files(process, directory, log)
        url = make_repository(tmp / 'git', localdocker.ensure_base_image(docker_client))
        yield Up(process, directory, log, pathlib.Path(urllib.parse.urlsplit(url).path))
    finally:
        if process.poll() is None:
            stop(process, log)


def world(up: Up, service: str, strategy: str) -> dict[str, Any]:
    """`sandbox world` for `service`, plus a source and a health check: the resource a user applies."""
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    made = subprocess.run(panda_deploy('sandbox', 'world', '--dir', str(up.directory), '--service', service,
                                       '--strategy', strategy),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    resource: dict[str, Any] = yaml.safe_load(made.stdout)
    resource['spec']['source'] = {'url': up.repository.as_uri(), 'branch': 'main'}
    resource['spec']['healthCheck'] = {'path': '/health', 'checks': 3, 'intervalSeconds': 1}
    return resource


@pytest.fixture(scope='module')
def deployed(up: Up) -> dict[str, dict[str, Any]]:
    """pd/web (CodeDeploy) and pd/api (ECS native BlueGreen) applied together, both Ready: their statuses."""
    for service, strategy in (('web', 'CodeDeploy'), ('api', 'BlueGreen')):
        kubectl(up.directory, 'apply', '-f', '-', stdin=yaml.safe_dump(world(up, service, strategy)))
    kubectl(up.directory, 'wait', 'pd/web', 'pd/api', '--for=condition=Ready', f'--timeout={READY_TIMEOUT}s',
            timeout=READY_TIMEOUT + 10)
    return {name: status(up, name) for name in ('web', 'api')}


def status(up: Up, name: str) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(kubectl(up.directory, 'get', f'pd/{name}', '-o', 'yaml'))['status']
    return found


def production(up: Up, found: dict[str, Any]) -> tuple[str, str]:
    """(page, X-Panda-Demo-Target) of the active colour's URL, through the load balancer stand-in as a user would."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': read_env(up.directory)['http_proxy']}))
    with opener.open(found[f'{found["activeColor"]}Url'], timeout=10) as answer:
        return answer.read().decode(), str(answer.headers.get('X-Panda-Demo-Target'))


def ecs_service(up: Up, name: str) -> dict[str, Any]:
    """The ECS service `name` (cluster NAME-cluster) and its service deployments, from the sandbox's AWS."""
    ecs = sandbox_clients(read_env(up.directory)['AWS_ENDPOINT_URL'])('ecs')
    service: dict[str, Any] = ecs.describe_services(cluster=f'{name}-cluster', services=[name])['services'][0]
    briefs = ecs.list_service_deployments(cluster=f'{name}-cluster', service=name)['serviceDeployments']
    service['deployments'] = sorted(briefs, key=lambda b: b['createdAt'])
    return service


def test_a_codedeploy_world_deploys_a_repository_of_your_own(up: Up, deployed: dict[str, dict[str, Any]]) -> None:
    web = deployed['web']
    assert production(up, web) == ('<h1>my app v1</h1>\n', web['activeColor'])
    assert ecs_service(up, 'web')['deploymentController'] == {'type': 'CODE_DEPLOY'}


def test_an_ecs_blue_green_world_deploys_it_then_moves_production_to_green(
        up: Up, deployed: dict[str, dict[str, Any]]) -> None:
    api = deployed['api']
    assert (api['activeColor'], production(up, api)) == ('blue', ('<h1>my app v1</h1>\n', 'blue'))
    assert 'BlueGreen service deployment' in api['stages'][-1]['message'], api['stages'][-1]
    sha = commit(up.repository, 2)
    kubectl(up.directory, 'patch', 'pd/api', '--type=merge', '-p',
            json.dumps({'spec': {'source': {'branch': None, 'revision': sha}}}))
    deadline = time.monotonic() + READY_TIMEOUT
    while (found := status(up, 'api')).get('revision') != sha or found.get('phase') not in ('Succeeded', 'Failed'):
        assert time.monotonic() < deadline, found
        time.sleep(1)
    assert found['phase'] == 'Succeeded', found.get('message')
    assert (found['activeColor'], production(up, found)) == ('green', ('<h1>my app v2</h1>\n', 'green'))
    service = ecs_service(up, 'api')
    assert service['deploymentController'] == {'type': 'ECS'}, service
    assert service['deploymentConfiguration']['strategy'] == 'BLUE_GREEN', service
    assert [d['status'] for d in service['deployments']] == ['SUCCESSFUL', 'SUCCESSFUL'], service['deployments']
    assert service['deployments'][-1]['serviceDeploymentArn'] == found['serviceDeploymentArn']


def test_sigint_stops_all_that_sandbox_up_started(up: Up, deployed: dict[str, dict[str, Any]],
                                                  docker_client: docker.DockerClient) -> None:
    stop(up.process, up.log)
    output = up.log.read_text()
    assert 'panda-deploy sandbox up: running' in output and 'stopping everything it started' in output
    started = [line for line in output.splitlines() if f'container panda-demo-{up.process.pid}-' in line]
    assert started, output  # the filter below is not vacuous
    left = docker_client.containers.list(all=True,
                                         filters={'label': [f'{LABEL}=1', f'{LABEL}.pid={up.process.pid}']})
    assert [c.name for c in left] == []
    assert processes_in_group(up.process.pid) == []
    assert not (up.directory / 'env').exists() and (up.directory / 'operator.log').exists()
