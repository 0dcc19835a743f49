"""Health-check URLs as a tenant would aim them: at the cloud's metadata service, or through a redirect elsewhere.

A tenant writes `spec.healthCheck.url`, and the application it deploys
answers the checks, redirects included. The operator's health check must not
become the tenant's way into what only the operator can reach (the EC2/ECS
metadata endpoints hand out the node's or the task's AWS credentials):

- an address in PANDA_DEPLOY_HEALTH_CHECK_DENY (default 169.254.0.0/16 and
  fd00:ec2::254/128), in any spelling (IPv4-mapped IPv6, decimal, octal, a
  name that resolves to it) is refused without a connection attempt: the
  socket's `connect` is watched and never called;
- the address that was checked is the address connected to: a name resolved
  once for the check and again for the connection (DNS rebinding) would
  leave a window;
- a redirect is followed only to the same scheme, host and port (at most
  three): 127.0.0.2 is another host than 127.0.0.1, and the server there
  sees nothing;
- a denied URL fails the Verify stage at once as `HealthCheckURLNotAllowed`
  (no waiting for an answer that cannot come), and an open CodeDeploy
  deployment is stopped with rollback.

Only 127.0.0.x is ever connected to: every other address is stopped in the
socket layer by the test, fix or no fix.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import http.server
import logging
import pathlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from controller.adapters.http import HttpProbe
from controller.credentials import Credentials
from controller.models import PandaDeploySpec, PandaDeployStatus, RunResult
from controller.pipeline import Engine, Recorder, Run, default_stages
from tests.fakes import MemorySink, World, make_adapters


class _Counting(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, redirect_to: str | None = None) -> None:
        super().__init__((host, 0), _Handler)
        self.redirect_to = redirect_to
        self.hits: list[str] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f'http://{host}:{port}'


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Counting

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.hits.append(self.path)
        target = self.server.redirect_to
        self.send_response(302 if target else 200)
        if target:
            self.send_header('Location', target)
        self.send_header('Content-Length', '2')
        self.end_headers()
        self.wfile.write(b'ok')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[_Counting] = []

    def start(host: str, redirect_to: str | None = None) -> _Counting:
        server = _Counting(host, redirect_to)
        threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address a socket is asked to connect to; anything but 127.0.0.x is refused right there."""
    seen: list[Any] = []
    real = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        seen.append(address)
        if not str(address[0]).startswith('127.0.0.'):
            raise ConnectionRefusedError(f'test: no connection to {address[0]} from this test')
        return real(self, address)

    monkeypatch.setattr(socket.socket, 'connect', connect)
    return seen


# ---------------------------------------------------------------------------------------------
# The probe.


@pytest.mark.parametrize('url', [
    'http://169.254.169.254/latest/meta-data/iam/security-credentials/',
    'http://169.254.170.2/v2/credentials/',  # the ECS task role endpoint
    'http://[fd00:ec2::254]/latest/meta-data/',
    'http://[::ffff:169.254.169.254]/latest/meta-data/',
    'http://2852039166/latest/meta-data/',  # 169.254.169.254, as one number
    'http://0251.0376.0251.0376/latest/meta-data/',  # and in octal
    'https://169.254.169.254:443/latest/meta-data/',
])
def test_the_metadata_service_is_refused_without_a_connection_attempt(url: str, connects: list[Any]) -> None:
    probe = HttpProbe().get(url, timeout=2)
    assert connects == [], f'connect() was called: {connects}'
    assert probe.status is None and probe.denied
    assert probe.error and 'not allowed' in probe.error and 'PANDA_DEPLOY_HEALTH_CHECK_DENY' in probe.error
    assert '169.254.0.0/16' in probe.error or 'fd00:ec2::254/128' in probe.error


def test_a_name_that_resolves_to_the_metadata_service_is_refused(connects: list[Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == 'metadata.tenant.test'
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, '', ('127.0.0.1', port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, '', ('169.254.169.254', port))]

    monkeypatch.setattr(socket, 'getaddrinfo', resolve)
    probe = HttpProbe().get('http://metadata.tenant.test/latest/meta-data/', timeout=2)
    assert connects == [] and probe.denied  # one bad address among the answers is enough
    assert probe.error and 'metadata.tenant.test' in probe.error and '169.254.169.254' in probe.error


def test_the_checked_address_is_the_one_connected_to(serve: Any, connects: list[Any],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name answers a harmless address for the check, the metadata address after. The probe
    resolves once and connects to what it checked (a regression guard: a check that resolved again, as
    urllib does when it connects, would hand the second answer to connect())."""
    server = serve('127.0.0.1')
    port = server.server_address[1]
    answers = iter([[('127.0.0.1', port)]] + [[('169.254.169.254', port)]] * 10)

    def resolve(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, '', address) for address in next(answers)]

    monkeypatch.setattr(socket, 'getaddrinfo', resolve)
    probe = HttpProbe().get(f'http://rebinding.tenant.test:{port}/healthz', timeout=2)
    assert (probe.status, probe.error) == (200, None)
    assert connects == [('127.0.0.1', port)]


def test_a_redirect_to_another_host_is_not_followed(serve: Any, connects: list[Any]) -> None:
    elsewhere = serve('127.0.0.2')
    bouncer = serve('127.0.0.1', redirect_to=f'{elsewhere.url}/steal')
    probe = HttpProbe().get(f'{bouncer.url}/healthz', timeout=2)
    assert elsewhere.hits == [], 'the other host was asked'
    assert probe.status == 302 and not probe.denied
    assert probe.error == f'redirect to {elsewhere.url}/steal not followed (another host)'
    # Another port of the same host is another server as well.
    other_port = serve('127.0.0.1')
    bouncer.redirect_to = f'{other_port.url}/x'
    assert HttpProbe().get(f'{bouncer.url}/healthz', timeout=2).status == 302 and other_port.hits == []


def test_a_redirect_to_the_metadata_service_is_not_followed(serve: Any, connects: list[Any]) -> None:
    bouncer = serve('127.0.0.1', redirect_to='http://169.254.169.254/latest/meta-data/')
    probe = HttpProbe().get(f'{bouncer.url}/healthz', timeout=2)
    assert [address[0] for address in connects] == ['127.0.0.1']
    assert probe.status == 302 and probe.error and 'not followed' in probe.error


def test_the_deny_list_is_the_operators_to_set(serve: Any, connects: list[Any]) -> None:
    from controller.egress import DeniedNetworks
    server = serve('127.0.0.1')
    narrowed = HttpProbe(denied=DeniedNetworks.parse('127.0.0.0/8'))
    refused = narrowed.get(f'{server.url}/healthz', timeout=2)
    assert refused.denied and server.hits == [] and connects == []
    assert HttpProbe(denied=DeniedNetworks.parse('')).get(f'{server.url}/healthz', timeout=2).status == 200


# ---------------------------------------------------------------------------------------------
# The Verify stage: a denied URL ends the run at once, with its own reason.


@pytest.mark.parametrize('first_rollout', [True, False], ids=['no-deployment', 'open-deployment'])
async def test_a_denied_health_check_url_fails_verify_at_once_as_health_check_url_not_allowed(
        tmp_path: pathlib.Path, connects: list[Any], first_rollout: bool) -> None:
    world = World(tmp_path / 'world')
    if first_rollout:  # no service yet: Verify waits for production to answer before counting checks
        world.save({**world.state(), 'services': {}})
    url = 'http://169.254.169.254/latest/meta-data/iam/security-credentials/'
    spec = PandaDeploySpec.model_validate({
        'source': {'repo': 'your-org/sample-app', 'branch': 'main'}, 'aws': {'region': 'ap-northeast-2'},
        'healthCheck': {'url': url, 'checks': 3, 'intervalSeconds': 1, 'timeoutSeconds': 1},
        'timeouts': {'stageSeconds': 60, 'totalSeconds': 120}})
    sink = MemorySink()
    recorder = Recorder(sink=sink, status=PandaDeployStatus(), generation=1)
    run = Run(spec=spec, credentials=Credentials(), recorder=recorder, logger=logging.getLogger('test'))
    recorder.begin()

    def adapters(spec: PandaDeploySpec, credentials: Credentials) -> Any:
        return dataclasses.replace(make_adapters(spec, credentials, root=world.root), http=HttpProbe())

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        engine = Engine(stages=default_stages(poll_seconds=0.05), adapters=adapters, pool=pool)
        result = await asyncio.wait_for(engine.drive(run), timeout=50)
    verify = run.status.stages[-1]
    assert result == RunResult.failed
    assert (verify.name.value, verify.reason) == ('Verify', 'HealthCheckURLNotAllowed')
    assert verify.message and url in verify.message and '169.254.0.0/16' in verify.message
    assert 'PANDA_DEPLOY_HEALTH_CHECK_DENY' in verify.message
    assert connects == []
    assert verify.started_at and verify.completed_at
    assert (verify.completed_at - verify.started_at).total_seconds() < 5, 'failed at once, not at the timeout'
    stopped = [d['status'] for d in world.state()['deployments'].values()]
    assert stopped == ([] if first_rollout else ['Stopped']), 'an open deployment is stopped (with rollback)'
    assert [reason for kind, reason, _ in sink.events if kind == 'Warning'] == ['HealthCheckURLNotAllowed']
