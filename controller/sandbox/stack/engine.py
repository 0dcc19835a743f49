"""The Docker engine the stack builds and runs with: the one that answers, or a private one started for it.

Why: the README's one command should be the whole set-up. Where no engine
answers but `dockerd` is installed and we are root (a fresh CI machine or
container), `docker_engine` starts a private engine as `.ci/run` does (vfs
storage, no iptables, no bridge: the sandbox's containers use the host
network) on a socket of its own, points `DOCKER_HOST` at it for this process
and its children (the operator builds with it), and stops it when the
caller's ExitStack closes. Elsewhere it raises `Unavailable` saying what to do.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import FrameType

import docker
import docker.errors

from controller.sandbox.stack.localdocker import Unavailable, stop
from controller.sandbox.stack.operator import OperatorFailed

START_ENGINE = """\
{command} needs a Docker engine, and none answers at {where} ({error}).
Start one (as root), then run it again:
    apt-get install docker.io          # when dockerd is not installed
    dockerd --storage-driver=vfs --iptables=false --bridge=none -H unix:///var/run/docker.sock &
or point DOCKER_HOST at an engine you have."""
ENGINE_START_SECONDS = 60.0


class NoEngine(Unavailable):
    """No Docker engine answers and none can be started here; the message is START_ENGINE, for the user as is."""


def docker_engine(stack: contextlib.ExitStack, *, command: str,
                  note: Callable[[str], None] = print) -> docker.DockerClient:
    """A client of the engine that answers (closed when `stack` closes); see the module's docstring."""
    try:
        client = _answering(docker.from_env(timeout=30))
    except docker.errors.DockerException as exc:
        where = os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'
        dockerd = shutil.which('dockerd')
        if dockerd is None or os.geteuid() != 0:
            raise NoEngine(START_ENGINE.format(command=command, where=where, error=type(exc).__name__)) from None
        client = _private_engine(stack, dockerd, note)
    stack.callback(client.close)
    return client


def _answering(client: docker.DockerClient) -> docker.DockerClient:
    try:
        client.ping()
    except docker.errors.DockerException:
        client.close()
        raise
    return client


def _private_engine(stack: contextlib.ExitStack, dockerd: str, note: Callable[[str], None]) -> docker.DockerClient:
    """dockerd on a socket in a temporary directory, stopped (and DOCKER_HOST restored) when `stack` closes."""
    home = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix='panda-dockerd-')))
    socket, log_path = f'unix://{home / "docker.sock"}', home / 'dockerd.log'
    note(f'[sandbox] No Docker engine answers; starting a private one ({dockerd}, socket {socket}, '
         f'log {log_path})')
    with log_path.open('wb') as log:
        process = subprocess.Popen([dockerd, '--storage-driver=vfs', '--iptables=false', '--bridge=none',
                                    '-H', socket, '--pidfile', str(home / 'docker.pid'),
                                    '--exec-root', str(home / 'exec')],
                                   stdout=log, stderr=subprocess.STDOUT)
    stack.callback(_stop_engine, process, os.environ.get('DOCKER_HOST'))
    os.environ['DOCKER_HOST'] = socket
    deadline = time.monotonic() + ENGINE_START_SECONDS
    while True:
        with contextlib.suppress(docker.errors.DockerException):
            return _answering(docker.DockerClient(base_url=socket, timeout=30))
        if process.poll() is not None or time.monotonic() > deadline:
            tail = '\n'.join(log_path.read_text(errors='replace').splitlines()[-20:])
            raise Unavailable(f'the private dockerd did not answer within {ENGINE_START_SECONDS:.0f}s; '
                              f'its log:\n{tail}')
        time.sleep(0.5)


def _stop_engine(process: subprocess.Popen[bytes], docker_host: str | None) -> None:
    stop(process)
    if docker_host is None:
        os.environ.pop('DOCKER_HOST', None)
    else:
        os.environ['DOCKER_HOST'] = docker_host


def run_with_engine(prog: str, body: Callable[[contextlib.ExitStack, docker.DockerClient], int], *,
                    failures: tuple[type[Exception], ...] = ()) -> int:
    """`body(stack, engine)` for a command (`prog`) of the stack; everything it started stops when it ends.

    SIGINT, SIGTERM and SIGHUP end it (KeyboardInterrupt); once the
    clean-up starts, further signals are ignored so they cannot cut it short.
    Exit codes: body's; 2 when this machine lacks what the stack needs; 1 on
    `failures` (and OperatorFailed); 130 when interrupted."""
    failed: tuple[type[Exception], ...] = (OperatorFailed, *failures)
    # SIGINT too: a shell starts a background command with SIGINT ignored, and Python keeps it so
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with contextlib.ExitStack() as stack:
            try:
                return body(stack, docker_engine(stack, command=prog))
            finally:
                for signum in previous:
                    signal.signal(signum, signal.SIG_IGN)
    except NoEngine as exc:
        print(exc, file=sys.stderr)
        return 2
    except Unavailable as exc:
        print(f'{prog}: {exc}', file=sys.stderr)
        return 2
    except failed as exc:
        print(f'{prog} failed: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f'{prog}: interrupted; everything it started is stopped', file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
