"""What every suite shares: the rule for missing machinery, and the Docker engine.

Where `CI` is set the environment promised the thing (`.ci/run` starts it),
so a missing one fails the test; elsewhere the test skips, saying how to get it.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import docker
import docker.errors
import pytest

START_ENGINE = ('start one as root with `dockerd --storage-driver=vfs --iptables=false --bridge=none '
                '-H unix:///var/run/docker.sock &` (apt-get install docker.io), or run .ci/run')


def unavailable(message: str) -> None:
    """Fail where CI is set, skip elsewhere."""
    if os.environ.get('CI'):
        pytest.fail(f'{message} (CI is set, so this fails instead of skipping)', pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope='session')
def docker_client() -> Iterator[docker.DockerClient]:
    """A client of the engine at DOCKER_HOST (or the default socket)."""
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'
        unavailable(f'No Docker engine answers at {where} ({type(exc).__name__}); {START_ENGINE}')
    yield client
    client.close()
