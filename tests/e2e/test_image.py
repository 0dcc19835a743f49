"""The operator image, built from the repository's Dockerfile and run the way a cluster runs it.

The image is built FROM a Debian base made here (tests/e2e/operator_image.py
says how and why), then runs as uid 10001 with a read-only root filesystem,
no capabilities and `--network host`, in place of the operator process of the
demo's stack (`start_sandbox(launch=...)`): the Kubernetes API emulator
through a kubeconfig, the AWS sandbox through AWS_ENDPOINT_URL, the engine's
socket mounted for the builds. It must answer /healthz and /metrics, take a
PandaDeploy to Ready, run an init as PID 1 that reaps orphaned children
(checked against a container of the same image without one, where the same
orphan stays a zombie), and end a hanging git process tree with the git
adapter's own code.

It needs a Docker engine and the docker CLI, debootstrap, root (debootstrap
and chroot) and a Debian mirror (`PANDA_IMAGE_MIRROR`, default
http://deb.debian.org/debian): where `CI` is set, a missing tool fails the
test; elsewhere it skips. The first run on a machine makes the base (minutes)
and builds every layer; later runs reuse both. The figures are printed
(`pytest -s`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import docker.models.containers
import kubernetes
import pytest

from controller.sandbox.stack.manifests import NAME, NAMESPACE, demo_manifests
from controller.sandbox.stack.operator import start_operator
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.sandbox import Sandbox, start_sandbox
from tests.conftest import unavailable
from tests.e2e.conftest import GROUP, PLURAL, VERSION, wait_for
from tests.e2e.operator_image import CREATE_SECONDS, IMAGE, UID, build_image, create_container, ensure_base, image_size

# The first test's set-up makes the base and builds the image: minutes on a machine that has neither yet.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]

CONTAINER = f'panda-deploy-image-test-{os.getpid()}'
READY_SECONDS = 240
# An orphan: the subshell starts `sleep` and exits at once, so the sleep's parent becomes PID 1; once the
# sleep ends, only PID 1 can reap it. After a while, print every process's stat line.
ORPHAN = '(sleep 0.3 &); sleep 2; cat /proc/[0-9]*/stat 2>/dev/null; true'
# A git process tree that hangs (git and its git-remote-http child, on a server that accepts the connection
# and never answers), ended by the git adapter at its deadline; the processes seen before and after.
GIT_TREE = '''
import json, os, sys, threading, time
from controller.adapters import gitprocess
def gits():
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            stat = open(f'/proc/{pid}/stat').read()
        except OSError:
            continue
        comm, state = stat[stat.index('(') + 1:stat.rindex(')')], stat[stat.rindex(')') + 2]
        if comm.startswith('git') or state == 'Z':
            found.append([comm, state])
    return found
during = []
threading.Timer(1.5, lambda: during.extend(gits())).start()
started = time.monotonic()
done = gitprocess.run(['git', 'ls-remote', sys.argv[1]], env={'PATH': os.environ['PATH'], 'HOME': '/tmp',
                      'GIT_TERMINAL_PROMPT': '0'}, cwd='/tmp', timeout=3)
seconds = time.monotonic() - started
time.sleep(1)
print(json.dumps({'stopped': done.stopped, 'seconds': seconds, 'during': during, 'after': gits()}))
'''


@dataclasses.dataclass
class Running:
    """The stack with the operator image in place of the operator process, and its container."""
    sandbox: Sandbox
    container: docker.models.containers.Container
    port: int
    revision: str  # the commit the sample PandaDeploy deploys


@pytest.fixture(scope='module')
def engine(docker_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    """A client of the same engine that waits as long as a vfs engine takes to create a container (it copies
    the whole image) or import the base."""
    client = docker.from_env(timeout=CREATE_SECONDS)
    yield client
    client.close()


@pytest.fixture(scope='module')
def image(engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The operator image, built FROM the locally made base; prints the figures."""
    for tool in ('debootstrap', 'chroot', 'docker'):
        if shutil.which(tool) is None:
            unavailable(f'{tool} is not installed (apt-get install debootstrap docker.io); the image test needs it')
    if os.geteuid() != 0:
        unavailable('debootstrap needs root to make the base image; run the image test as root (as CI does)')
    started = time.monotonic()
    base, made = ensure_base(engine, tmp_path_factory.mktemp('base'))
    based = time.monotonic()
    build_image(base)
    print(f'\n[image] base {base} ({"made in %.0fs" % (based - started) if made else "cached"}); '
          f'{IMAGE} built in {time.monotonic() - based:.0f}s; {image_size(engine) / 1e6:.0f} MB')
    return IMAGE


@pytest.fixture(scope='module')
def running(image: str, docker_client: docker.DockerClient, engine: docker.DockerClient) -> Iterator[Running]:
    """The demo's stack with the operator in the image's container, and the sample PandaDeploy applied."""
    def launch(env: dict[str, str], log: pathlib.Path) -> subprocess.Popen[bytes]:
        shared = pathlib.Path(env['KUBECONFIG']).parent
        shared.chmod(0o755)  # made private (mkdtemp); uid 10001 reads the kubeconfig and the git repository in it
        return start_operator(env, log, argv=create_container(env=env, name=CONTAINER, shared=shared, image=image))

    with contextlib.ExitStack() as stack:
        stack.callback(_remove, engine, CONTAINER)
        printer = ProgressPrinter(out=io.StringIO())
        stack.callback(printer.close)
        sandbox = start_sandbox(stack, docker_client, printer, launch=launch)
        revision, _ = sandbox.repository.commit(1)
        _hand_over(sandbox.repository.bare)
        secrets, resource = demo_manifests(repo_url=sandbox.repository.url, base_image=sandbox.base_image,
                                           world=sandbox.world)
        core = kubernetes.client.CoreV1Api(sandbox.api)
        for secret in secrets:
            core.create_namespaced_secret(NAMESPACE, secret)
        sandbox.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, resource)
        try:
            yield Running(sandbox=sandbox, container=engine.containers.get(CONTAINER),
                          port=int(sandbox.env['PANDA_DEPLOY_HTTP_PORT']), revision=revision)
        finally:
            print(sandbox.operator_log.read_text(errors='replace')[-5000:])


def test_the_container_runs_as_uid_10001_on_a_read_only_root(running: Running) -> None:
    config = running.container.attrs
    assert config['HostConfig']['ReadonlyRootfs'] is True
    assert config['Config']['User'] == f'{UID}:{UID}'
    assert _exec(running.container, 'id -u; id -g') == f'{UID}\n{UID}\n'
    refused = running.container.exec_run(['sh', '-c', 'touch /opt/panda-deploy/x'])
    assert refused.exit_code != 0 and b'Read-only file system' in refused.output, refused.output


def test_healthz_and_metrics_answer(running: Running) -> None:
    with urllib.request.urlopen(f'http://127.0.0.1:{running.port}/healthz', timeout=5) as answer:
        assert answer.status == 200
    with urllib.request.urlopen(f'http://127.0.0.1:{running.port}/metrics', timeout=5) as answer:
        assert answer.status == 200
        assert 'panda_deploy_runs_in_progress' in answer.read().decode()


def test_a_pandadeploy_reaches_ready(running: Running) -> None:
    custom = running.sandbox.custom

    def ready() -> dict[str, Any] | None:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME).get('status') or {}
        assert status.get('phase') != 'Failed', status.get('message')
        condition = next((c for c in status.get('conditions') or [] if c['type'] == 'Ready'), {})
        return status if condition.get('status') == 'True' else None

    status = wait_for(ready, timeout=READY_SECONDS, what='the sample PandaDeploy to be Ready')
    assert status['phase'] == 'Succeeded'
    assert status['revision'] == running.revision
    with urllib.request.urlopen(f'http://127.0.0.1:{running.port}/metrics', timeout=5) as answer:
        assert 'panda_deploy_runs_total{result="Succeeded"} 1.0' in answer.read().decode()


def test_an_init_is_pid_1_and_reaps_orphans(running: Running, engine: docker.DockerClient) -> None:
    assert _exec(running.container, 'cat /proc/1/comm') == 'tini\n'
    assert 'panda-deploy' in _exec(running.container, "tr '\\0' ' ' < /proc/1/cmdline")
    assert _zombies(_exec(running.container, ORPHAN)) == []
    # The same orphan where PID 1 is no init (the image's Python, as the operator would be without tini):
    # it stays a zombie, so the check above can fail.
    try:
        bare = engine.containers.run(IMAGE, entrypoint=['python', '-c', 'import time; time.sleep(60)'],
                                     name=f'{CONTAINER}-no-init', detach=True, read_only=True,
                                     user=f'{UID}:{UID}', network_mode='none')
        assert _zombies(_exec(bare, ORPHAN)) == [('sleep', 1)]
    finally:
        _remove(engine, f'{CONTAINER}-no-init')


def test_a_hanging_git_process_tree_is_ended(running: Running) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(('127.0.0.1', 0))
        silent.listen(8)
        url = f'http://127.0.0.1:{silent.getsockname()[1]}/your-org/hangs.git'
        found = json.loads(_exec(running.container, f"python -c \"$GIT_TREE\" '{url}'",
                                 environment={'GIT_TREE': GIT_TREE}))
    assert found['stopped'] == 'timed out' and found['seconds'] < 10, found
    assert {'git', 'git-remote-http'} <= {comm for comm, _ in found['during']}, found
    assert found['after'] == [], found  # every process of the tree ended, none left a zombie


def _exec(container: docker.models.containers.Container, script: str,
          environment: dict[str, str] | None = None) -> str:
    result = container.exec_run(['sh', '-c', script], environment=environment)
    assert result.exit_code == 0, result.output
    return str(result.output.decode())


def _zombies(stat_lines: str) -> list[tuple[str, int]]:
    """(name, parent pid) of every zombie in `/proc/*/stat` lines."""
    zombies = []
    for line in stat_lines.splitlines():
        comm, rest = line[line.index('(') + 1:line.rindex(')')], line[line.rindex(')') + 2:].split()
        if rest[0] == 'Z':
            zombies.append((comm, int(rest[1])))
    return zombies


def _hand_over(repository: pathlib.Path) -> None:
    """Make uid 10001 own the served repository: git refuses to serve one of another user's ("dubious ownership"),
    and in production the operator clones only from git servers."""
    for path in [repository, *repository.rglob('*')]:
        os.chown(path, UID, UID, follow_symlinks=False)


def _remove(client: docker.DockerClient, name: str) -> None:
    """Remove the container if `--rm` has not (a removal already under way is fine)."""
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        client.containers.get(name).remove(force=True)
