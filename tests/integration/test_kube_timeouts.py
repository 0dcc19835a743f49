"""Every Kubernetes API call ends, even against an API server that accepts connections and never answers.

The server is a plain socket in this test (it accepts and keeps every
connection, reading nothing, writing nothing), reached through a kubeconfig
the way the operator reaches a cluster outside a pod (`load_client`). Each of
`Kube`'s calls must end with `KubeError` within its call budget, after
retrying, instead of holding its worker thread for ever.
"""
from __future__ import annotations

import pathlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from controller.kube import CALL_SECONDS, REQUEST_TIMEOUT, Kube, KubeError, load_client

CALL_BUDGET = 4.0
TIMEOUT = (0.5, 0.5)


class SilentServer:
    """Accepts TCP connections and never answers; counts them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        for conn in [*self.held, self.sock]:
            conn.close()


@pytest.fixture
def silent(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentServer]:
    server = SilentServer()
    kubeconfig = tmp_path / 'kubeconfig'
    kubeconfig.write_text(yaml.safe_dump({
        'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'silent',
        'clusters': [{'name': 'silent', 'cluster': {'server': f'http://127.0.0.1:{server.port}'}}],
        'users': [{'name': 'silent', 'user': {'token': 'not-used'}}],
        'contexts': [{'name': 'silent', 'context': {'cluster': 'silent', 'user': 'silent'}}],
    }))
    # KUBECONFIG as the operator's process would have it (the client reads the variable when imported).
    monkeypatch.setenv('KUBECONFIG', str(kubeconfig))
    monkeypatch.setattr(kubernetes.config.kube_config, 'KUBE_CONFIG_DEFAULT_LOCATION', str(kubeconfig))
    monkeypatch.delenv('KUBERNETES_SERVICE_HOST', raising=False)   # not in a pod: the kubeconfig decides
    try:
        yield server
    finally:
        server.close()


def ends_within(seconds: float, call: Callable[[], Any]) -> tuple[float, BaseException | None]:
    """Runs `call` in a thread; fails the test (instead of hanging it) if it is still running after `seconds`."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # noqa: B036 -- handed to the test thread
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert not thread.is_alive(), f'the call is still blocked after {seconds:.0f}s'
    return time.monotonic() - started, outcome[0]


CALLS: dict[str, Callable[[Kube], Any]] = {
    'get': lambda kube: kube.get(namespace='default', name='app'),
    'patch_status': lambda kube: kube.patch_status(namespace='default', name='app', patch={'phase': 'Pending'}),
    'read_secret': lambda kube: kube.read_secret(namespace='default', name='aws-creds'),
    'post_event': lambda kube: kube.post_event(ref={'namespace': 'default', 'name': 'app', 'uid': 'u'},
                                               type='Normal', reason='Started', message='m'),
}


@pytest.mark.parametrize('name', CALLS)
def test_a_call_to_a_silent_api_server_ends_with_kube_error_within_its_budget(silent: SilentServer, name: str):
    kube = Kube(load_client(), request_timeout=TIMEOUT, call_seconds=CALL_BUDGET)
    took, error = ends_within(CALL_BUDGET + 3, lambda: CALLS[name](kube))
    assert isinstance(error, KubeError), repr(error)
    assert 'no answer in time' in str(error) and 'gave up after' in str(error), str(error)
    assert took <= CALL_BUDGET + 1, f'{took:.1f}s for a call with a {CALL_BUDGET}s budget'
    assert len(silent.held) >= 2, 'the call was retried'   # each attempt on a new connection


def test_the_defaults_bound_every_call():
    assert all(0 < t <= 30 for t in REQUEST_TIMEOUT)
    assert sum(REQUEST_TIMEOUT) < CALL_SECONDS <= 120
