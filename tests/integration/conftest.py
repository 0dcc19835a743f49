"""Real things for the adapter tests: a Docker engine, OCI registries, and moto standing in for AWS.

Nothing is pulled from a hub: the base image is a busybox rootfs imported
into the engine. Where `CI` is set, a missing engine or registry fails the
tests instead of skipping them (`.ci/run` starts both); elsewhere they skip
with a message saying how to start one.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import time
from collections.abc import Iterator

import docker
import docker.errors
import pytest
from moto.server import ThreadedMotoServer

from controller.sandbox.stack import localdocker
from tests.conftest import unavailable

BASE_IMAGE = localdocker.BASE_IMAGE
_unavailable = unavailable


# -- Docker ---------------------------------------------------------------------------

@pytest.fixture(scope='session')
def base_image(docker_client: docker.DockerClient) -> str:
    """`panda-test-base:latest`, a busybox rootfs imported into the engine (no pulls)."""
    try:
        return localdocker.ensure_base_image(docker_client)
    except localdocker.Unavailable as exc:
        _unavailable(str(exc))
        raise AssertionError('unreachable') from exc


# -- registries ------------------------------------------------------------------------

def _start_registry(root: pathlib.Path, *, auth: bool) -> tuple[subprocess.Popen[bytes], str, pathlib.Path]:
    try:
        return localdocker.start_registry(root, auth=auth)
    except localdocker.Unavailable as exc:
        _unavailable(str(exc))
        raise AssertionError('unreachable') from exc


_stop = localdocker.stop
_answers = localdocker.answers
free_port = localdocker.free_port


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
