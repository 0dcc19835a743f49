"""`docker_engine`: the engine that answers, else a private dockerd (root, installed), else what to do.

The engine and dockerd are stand-ins here: `docker.from_env` fails as it does
with no engine, and `dockerd` is a script; the private engine's life (started,
DOCKER_HOST pointed at its socket, stopped and DOCKER_HOST restored when the
stack closes) is what is checked.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
from typing import Any

import docker
import docker.errors
import pytest

from controller.sandbox.stack import engine
from controller.sandbox.stack.localdocker import Unavailable


class Answering:
    """A DockerClient whose engine answers."""

    def __init__(self, base_url: str = '', **_: Any) -> None:
        self.base_url, self.closed = base_url, False

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def no_engine(**_: Any) -> docker.DockerClient:
    raise docker.errors.DockerException('Error while fetching server API version: no such file')


def fake_dockerd(tmp_path: pathlib.Path, body: str) -> str:
    script = tmp_path / 'dockerd'
    script.write_text(f'#!/bin/sh\n{body}\n')
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def without_engine(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(engine.docker, 'from_env', no_engine)
    monkeypatch.setenv('DOCKER_HOST', 'unix:///nowhere/docker.sock')
    return monkeypatch


def test_the_engine_that_answers_is_used_and_closed_with_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Answering()
    monkeypatch.setattr(engine.docker, 'from_env', lambda **_: client)
    with contextlib.ExitStack() as stack:
        assert engine.docker_engine(stack, command='x') is client
        assert not client.closed
    assert client.closed


@pytest.mark.parametrize('dockerd, root', [(None, 0), ('/usr/sbin/dockerd', 1000)])
def test_without_dockerd_or_root_it_says_what_to_do(without_engine: pytest.MonkeyPatch, dockerd: str | None,
                                                    root: int) -> None:
    without_engine.setattr(engine.shutil, 'which', lambda name: dockerd)
    without_engine.setattr(engine.os, 'geteuid', lambda: root)
    with contextlib.ExitStack() as stack, pytest.raises(engine.NoEngine) as raised:
        engine.docker_engine(stack, command='panda-deploy demo')
    assert str(raised.value).startswith('panda-deploy demo needs a Docker engine, and none answers at '
                                        'unix:///nowhere/docker.sock (DockerException)')
    assert 'dockerd --storage-driver=vfs --iptables=false --bridge=none' in str(raised.value)


def test_a_private_engine_is_started_for_the_stack_and_stopped_with_it(
        without_engine: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    without_engine.setattr(engine.shutil, 'which', lambda name: fake_dockerd(tmp_path, 'exec sleep 60'))
    without_engine.setattr(engine.os, 'geteuid', lambda: 0)
    without_engine.setattr(engine.subprocess, 'Popen', popen)
    without_engine.setattr(engine.docker, 'DockerClient', Answering)
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        client = engine.docker_engine(stack, command='x', note=notes.append)
        socket = os.environ['DOCKER_HOST']
        assert socket.startswith('unix:///') and socket.endswith('/docker.sock') and client.base_url == socket
        assert started[0].poll() is None and '-H' in started[0].args and socket in started[0].args
        assert 'starting a private one' in notes[0]
    assert started[0].poll() is not None  # stopped
    assert os.environ['DOCKER_HOST'] == 'unix:///nowhere/docker.sock'  # restored


def test_a_private_engine_that_does_not_start_is_reported_with_its_log(
        without_engine: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    without_engine.setattr(engine.shutil, 'which', lambda name: fake_dockerd(tmp_path, 'echo no vfs here; exit 1'))
    without_engine.setattr(engine.os, 'geteuid', lambda: 0)
    without_engine.setattr(engine.docker, 'DockerClient', no_engine)
    with contextlib.ExitStack() as stack, pytest.raises(Unavailable, match='(?s)did not answer.*no vfs here'):
        engine.docker_engine(stack, command='x', note=lambda line: None)
    assert os.environ['DOCKER_HOST'] == 'unix:///nowhere/docker.sock'
