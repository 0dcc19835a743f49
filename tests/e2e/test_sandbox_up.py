"""`panda-deploy sandbox up` and `sandbox world` as a user runs them for a repository of their own.

`sandbox up` runs as a subprocess in a session of its own, so that its
process group is exactly what it started; the test waits for `DIR/env` and
`DIR/kubeconfig`, makes a CodeDeploy world with `sandbox world`, adds a
`source` (a file:// repository of its own, built FROM the stack's local base
image) and a `healthCheck`, applies it with kubectl and waits for Ready; the
app answers through the load-balancer stand-in named in `DIR/env`. After
SIGINT (even though it was started with SIGINT ignored, as a shell starts a
background command) nothing it started may remain: no process of its group, no container
labelled with its pid, no `DIR/env`.
"""
from __future__ import annotations

import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
import urllib.request

import docker
import pytest
import yaml

from controller.sandbox.stack import localdocker
from controller.sandbox.stack.envfile import read_env
from controller.sandbox.stack.tasks import LABEL
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
    (work / 'www' / 'index.html').write_text('<h1>my app</h1>\n')
    (work / 'www' / 'health').write_text('ok\n')
    git('init', '-q', '-b', 'main', '.', cwd=work)
    git('add', '-A', cwd=work)
    git('commit', '-q', '-m', 'my app v1', cwd=work)
    return work.as_uri()


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


def test_sandbox_up_deploys_a_repository_of_your_own_and_stops_all_it_started(
        docker_client: docker.DockerClient, tmp_path: pathlib.Path) -> None:
    directory, log = tmp_path / 'sandbox', tmp_path / 'up.log'
    process = start_up(directory, log)
    try:
        await_files(process, directory, log)
        env = {**os.environ, 'PYTHONPATH': str(ROOT)}
        made = subprocess.run(panda_deploy('sandbox', 'world', '--dir', str(directory), '--service', 'web',
                                           '--strategy', 'CodeDeploy'),
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        resource = yaml.safe_load(made.stdout)
        base_image = localdocker.ensure_base_image(docker_client)
        resource['spec']['source'] = {'url': make_repository(tmp_path / 'git', base_image), 'branch': 'main'}
        resource['spec']['healthCheck'] = {'path': '/health', 'checks': 3, 'intervalSeconds': 1}
        kubectl(directory, 'apply', '-f', '-', stdin=yaml.safe_dump(resource))
        kubectl(directory, 'wait', 'pd/web', '--for=condition=Ready', f'--timeout={READY_TIMEOUT}s',
                timeout=READY_TIMEOUT + 10)

        shell = read_env(directory)
        status = yaml.safe_load(kubectl(directory, 'get', 'pd/web', '-o', 'yaml'))['status']
        production = status[f'{status["activeColor"]}Url']  # through the load balancer stand-in, as a user would
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': shell['http_proxy']}))
        with opener.open(production, timeout=10) as answer:
            assert answer.read().decode() == '<h1>my app</h1>\n'
    finally:
        if process.poll() is None:
            stop(process, log)
    output = log.read_text()
    assert 'panda-deploy sandbox up: running' in output and 'stopping everything it started' in output
    started = [line for line in output.splitlines() if f'container panda-demo-{process.pid}-' in line]
    assert started, output  # the filter below is not vacuous
    left = docker_client.containers.list(all=True, filters={'label': [f'{LABEL}=1', f'{LABEL}.pid={process.pid}']})
    assert [c.name for c in left] == []
    assert processes_in_group(process.pid) == []
    assert not (directory / 'env').exists() and (directory / 'operator.log').exists()
