"""Real things for the adapter tests: a Docker engine, OCI registries, and moto standing in for AWS.

Nothing is pulled from a hub: the base image is a busybox rootfs imported
into the engine. Where `CI` is set, a missing engine or registry fails the
tests instead of skipping them (`.ci/run` starts both); elsewhere they skip
with a message saying how to start one.
"""
from __future__ import annotations

import io
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import docker
import docker.errors
import pytest
from moto.server import ThreadedMotoServer

BASE_IMAGE = 'panda-test-base:latest'
BUSYBOX_PATHS = ('/bin/busybox', '/usr/bin/busybox')
START_ENGINE = ('start one as root with `dockerd --storage-driver=vfs --iptables=false --bridge=none '
                '-H unix:///var/run/docker.sock &` (apt-get install docker.io), or run .ci/run')


def _unavailable(message: str) -> None:
    """Fail where CI is set (the environment promised the thing), skip elsewhere."""
    if os.environ.get('CI'):
        pytest.fail(f'{message} (CI is set, so this fails instead of skipping)', pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> int | None:
    """The HTTP status `url` answers with, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


# -- Docker ---------------------------------------------------------------------------

@pytest.fixture(scope='session')
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of the engine at DOCKER_HOST (or the default socket)."""
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'
        _unavailable(f'No Docker engine answers at {where} ({type(exc).__name__}); {START_ENGINE}')
    yield client
    client.close()


def _static_busybox() -> str | None:
    for path in BUSYBOX_PATHS:
        if os.path.isfile(path):
            with open(path, 'rb') as f:
                if b'ld-linux' not in f.read(8192):  # no program interpreter: statically linked
                    return path
    return None


@pytest.fixture(scope='session')
def base_image(docker_client: docker.DockerClient) -> str:
    """`panda-test-base:latest`: /bin/busybox and its applets, imported from a tar (kept between sessions
    so the layer cache of the images built on it stays valid)."""
    try:
        docker_client.images.get(BASE_IMAGE)
        return BASE_IMAGE
    except docker.errors.ImageNotFound:
        pass
    busybox = _static_busybox()
    if busybox is None:
        _unavailable('No statically linked busybox for the test base image; apt-get install busybox-static')
        raise AssertionError('unreachable')
    applets = subprocess.run([busybox, '--list'], check=True, capture_output=True, text=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as tar:
        for directory in ('bin', 'tmp', 'etc', 'root'):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == 'tmp' else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname='bin/busybox')
        for applet in applets:
            if applet == 'busybox':
                continue
            info = tarfile.TarInfo(f'bin/{applet}')
            info.type, info.linkname = tarfile.SYMTYPE, 'busybox'
            tar.addfile(info)
        passwd = b'root:x:0:0:root:/root:/bin/sh\n'
        info = tarfile.TarInfo('etc/passwd')
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    repository, tag = BASE_IMAGE.split(':')
    docker_client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag)
    docker_client.images.get(BASE_IMAGE)
    return BASE_IMAGE


# -- registries ------------------------------------------------------------------------

def _start_registry(root: pathlib.Path, *, auth: bool) -> tuple[subprocess.Popen[bytes], str, pathlib.Path]:
    """Debian's docker-registry on a free port, storing under `root`: (process, host:port, log file)."""
    binary = shutil.which('docker-registry')
    if binary is None:
        _unavailable('docker-registry is not installed (apt-get install docker-registry); '
                     'or set PANDA_TEST_REGISTRY=host:port')
        raise AssertionError('unreachable')
    port = free_port()
    address = f'127.0.0.1:{port}'
    root.mkdir(parents=True, exist_ok=True)
    config = [
        'version: 0.1',
        'log: {level: info}',
        f'storage: {{filesystem: {{rootdirectory: {root / "data"}}}, delete: {{enabled: true}}}}',
        f'http: {{addr: "{address}"}}',
    ]
    if auth:  # a missing htpasswd file: the registry makes one with a generated user and logs its password
        config.append(f'auth: {{htpasswd: {{realm: panda-test, path: {root / "htpasswd"}}}}}')
    (root / 'config.yml').write_text('\n'.join(config) + '\n')
    log_path = root / 'registry.log'
    with log_path.open('wb') as log:
        process = subprocess.Popen([binary, 'serve', str(root / 'config.yml')], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while _answers(f'http://{address}/v2/') is None:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _unavailable(f'docker-registry did not start on {address}: {log_path.read_text()[-500:]}')
        time.sleep(0.1)
    return process, address, log_path


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope='session')
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of an anonymous OCI registry: PANDA_TEST_REGISTRY (from .ci/run), or one started here."""
    given = os.environ.get('PANDA_TEST_REGISTRY', '').strip()
    if given:
        if _answers(f'http://{given}/v2/') != 200:
            _unavailable(f'PANDA_TEST_REGISTRY={given} does not answer /v2/ with 200')
        yield given
        return
    process, address, _ = _start_registry(tmp_path_factory.mktemp('registry'), auth=False)
    yield address
    _stop(process)


@pytest.fixture(scope='session')
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(host:port, username, password) of a registry that refuses anonymous pushes."""
    process, address, log_path = _start_registry(tmp_path_factory.mktemp('auth-registry'), auth=True)
    assert _answers(f'http://{address}/v2/') == 401  # provisions the user on first request
    found = None
    deadline = time.monotonic() + 5
    while found is None and time.monotonic() < deadline:
        found = re.search(r'password=(\S+) .*user=(\S+)', log_path.read_text())
        time.sleep(0.05)
    assert found, 'the registry did not log its provisioned user'
    yield address, found.group(2), found.group(1)
    _stop(process)


# -- AWS (moto) ------------------------------------------------------------------------

@pytest.fixture(scope='session')
def moto_server() -> Iterator[str]:
    """The endpoint URL of an in-process moto server (STS, ECR, ...)."""
    server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f'http://{host}:{port}'
    server.stop()


@pytest.fixture
def aws_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """AWS_ENDPOINT_URL pointing at moto, with nothing else of the machine's AWS set-up in the way."""
    for name in list(os.environ):
        if name.startswith('AWS_'):
            monkeypatch.delenv(name)
    monkeypatch.setenv('AWS_ENDPOINT_URL', moto_server)
    monkeypatch.setenv('AWS_EC2_METADATA_DISABLED', 'true')
    monkeypatch.setenv('AWS_CONFIG_FILE', os.devnull)
    monkeypatch.setenv('AWS_SHARED_CREDENTIALS_FILE', os.devnull)
    monkeypatch.delenv('PANDA_DEPLOY_REGISTRY', raising=False)
    return moto_server
