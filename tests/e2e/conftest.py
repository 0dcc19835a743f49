"""The operator as a process, against the Kubernetes API emulator, reached through a kubeconfig.

The emulator runs in this test process (its objects and write log are there
to assert on); the operator runs as `python -m controller operator`, exactly
as in a pod, with fake adapters selected by PANDA_DEPLOY_ADAPTERS and their
world in a directory the test shares with it.
"""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from controller.sandbox.kube import ClusterServer
from tests.fakes import World

ROOT = pathlib.Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = 'deploy.panda.dev', 'v1alpha1', 'pandadeploys'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30, what: str = 'condition') -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout}s waiting for {what}')
        time.sleep(0.1)


class Operator:
    """`panda-deploy operator` in a subprocess that tests can kill and start again."""

    def __init__(self, *, kubeconfig: pathlib.Path, world: World, log: pathlib.Path, env: dict[str, str],
                 args: tuple[str, ...] = ('--standalone', '--all-namespaces')) -> None:
        self.kubeconfig, self.world, self.log_path, self.extra_env, self.args = kubeconfig, world, log, env, args
        self.port = free_port()
        self.hooks_port = free_port()  # served only when the test sets PANDA_DEPLOY_WEBHOOK_SECRET_FILE
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, 'KUBECONFIG': str(self.kubeconfig), 'PANDA_FAKE_DIR': str(self.world.root),
               'PANDA_DEPLOY_ADAPTERS': 'tests.fakes:make_adapters', 'PANDA_DEPLOY_HTTP_HOST': '127.0.0.1',
               'PANDA_DEPLOY_HTTP_PORT': str(self.port), 'PANDA_DEPLOY_WEBHOOK_PORT': str(self.hooks_port),
               'PANDA_DEPLOY_POLL_SECONDS': '0.2',
               'PYTHONPATH': str(ROOT), **self.extra_env}
        log = self.log_path.open('ab')
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'controller', 'operator', *self.args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.healthy, timeout=30, what='the operator to answer /healthz')

    def healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f'operator exited with {self.process.returncode}:\n{self.log()}')
        try:
            with urllib.request.urlopen(f'http://127.0.0.1:{self.port}/healthz', timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f'http://127.0.0.1:{self.port}/metrics', timeout=5) as r:
            return r.read().decode()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')


class Cluster:
    """The test's view of the cluster: a kubernetes client plus the emulator's own records."""

    def __init__(self, server: ClusterServer, kubeconfig: pathlib.Path) -> None:
        self.server, self.emulator, self.kubeconfig = server, server.emulator, kubeconfig
        api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)

    def apply_secrets(self, namespace: str = 'default', **secrets: dict[str, str]) -> None:
        for name, data in secrets.items():
            self.core.create_namespaced_secret(namespace, {'metadata': {'name': name}, 'stringData': data})

    def create(self, name: str, spec: dict[str, Any], namespace: str = 'default') -> dict[str, Any]:
        body = {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'PandaDeploy',
                'metadata': {'name': name, 'namespace': namespace}, 'spec': spec}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def patch(self, name: str, patch: dict[str, Any], namespace: str = 'default') -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)

    def delete(self, name: str, namespace: str = 'default') -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def get(self, name: str, namespace: str = 'default') -> dict[str, Any] | None:
        return self.emulator.get(PLURAL, namespace, name)

    def status(self, name: str, namespace: str = 'default') -> dict[str, Any]:
        return (self.get(name, namespace) or {}).get('status') or {}

    def condition(self, name: str, type: str) -> dict[str, Any] | None:
        return next((c for c in self.status(name).get('conditions', []) if c['type'] == type), None)

    def ready(self, name: str) -> bool:
        c = self.condition(name, 'Ready')
        return c is not None and c['status'] == 'True'

    def finished(self, name: str) -> bool:
        return self.status(name).get('phase') in ('Succeeded', 'Failed')

    def events(self, name: str, namespace: str = 'default') -> list[dict[str, Any]]:
        listed = self.core.list_namespaced_event(namespace, field_selector=f'involvedObject.name={name}')
        items = [kubernetes.client.ApiClient().sanitize_for_serialization(e) for e in listed.items]
        return sorted(items, key=lambda e: e['metadata'].get('resourceVersion', '0').zfill(12))

    def writes_for(self, name: str) -> list[tuple[str, str, str | None]]:
        return [(w.method, w.plural, w.subresource) for w in self.emulator.writes
                if w.name == name or (w.plural == 'events' and w.name.startswith(f'{name}.'))]


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[Cluster]:
    with ClusterServer() as server:
        for doc in yaml.safe_load_all((ROOT / 'crds' / 'pandadeploys.yaml').read_text()):
            server.emulator.add_crd(doc)
        kubeconfig = server.write_kubeconfig(tmp_path / 'kubeconfig')
        yield Cluster(server, kubeconfig)


@pytest.fixture
def world(tmp_path: pathlib.Path) -> World:
    return World(tmp_path / 'world')


@pytest.fixture
def operator_env() -> dict[str, str]:
    return {}


@pytest.fixture
def operator(cluster: Cluster, world: World, tmp_path: pathlib.Path,
             operator_env: dict[str, str]) -> Iterator[Operator]:
    op = Operator(kubeconfig=cluster.kubeconfig, world=world, log=tmp_path / 'operator.log', env=operator_env)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        print(op.log()[-5000:])
