"""Webhooks on the operator's webhook port, played by an attacker: unsigned, mis-signed, replayed, oversized, slow,
a flood of connections.

The server is the operator's own (`controller.http.serve`) on a free port; a
valid hook is seen as a call of `wake` with the repository and branch.
"""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import pathlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import prometheus_client
import pytest

from controller import http as operator_http
from controller import webhooks

SECRET = b'hook-secret-0123456789'


class Woken:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, repository: str, branch: str) -> None:
        self.calls.append((repository, branch))


@pytest.fixture
def woken() -> Woken:
    return Woken()


@pytest.fixture
async def server(tmp_path: pathlib.Path, woken: Woken) -> AsyncIterator[operator_http.Server]:
    secret_file = tmp_path / 'secret'
    secret_file.write_bytes(SECRET + b'\n')
    hooks = webhooks.Webhooks(secret=webhooks.secret_from_file(secret_file), wake=woken)
    running = await operator_http.serve(host='127.0.0.1', port=0, hooks=hooks, body_seconds=1.0)
    try:
        yield running
    finally:
        await running.cleanup()


def push_event(branch: str = 'main', after: str = 'a' * 40) -> bytes:
    return json.dumps({'ref': f'refs/heads/{branch}', 'after': after, 'repository': {
        'full_name': 'octo/app', 'clone_url': 'https://github.com/octo/app.git',
        'html_url': 'https://github.com/octo/app', 'ssh_url': 'git@github.com:octo/app.git'}}).encode()


def post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
    try:
        connection.request('POST', path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def github_headers(body: bytes, *, secret: bytes = SECRET, event: str = 'push') -> dict[str, str]:
    return {'Content-Type': 'application/json', 'X-GitHub-Event': event, 'X-GitHub-Delivery': str(time.time()),
            'X-Hub-Signature-256': webhooks.sign(secret, body)}


def answered(hook: str, code: int) -> float:
    """How many requests panda_deploy_webhook_requests_total counts for `hook` answered `code`."""
    return prometheus_client.REGISTRY.get_sample_value(
        'panda_deploy_webhook_requests_total', {'hook': hook, 'code': str(code)}) or 0.0


async def test_a_signed_push_wakes_its_repository_and_branch(server: operator_http.Server, woken: Woken) -> None:
    body = push_event('release')
    accepted = answered('github', 202)
    status, text = await _post(server.hooks_port, '/hooks/github', body, github_headers(body))
    assert status == 202, text
    assert answered('github', 202) - accepted == 1
    assert {branch for _, branch in woken.calls} == {'release'}
    assert {repository for repository, _ in woken.calls} >= {'octo/app', 'https://github.com/octo/app.git'}


@pytest.mark.parametrize('change, expected', [
    (lambda h: h.pop('X-Hub-Signature-256'), 401),  # unsigned
    (lambda h: h.update({'X-Hub-Signature-256': webhooks.sign(b'another secret', push_event())}), 403),
    (lambda h: h.update({'X-Hub-Signature-256': 'sha256=' + '0' * 64}), 403),
    (lambda h: h.update({'Content-Type': 'application/x-www-form-urlencoded'}), 415),
])
async def test_bad_github_hooks_are_refused_and_wake_nothing(server: operator_http.Server, woken: Woken, change: Any,
                                                             expected: int) -> None:
    body = push_event()
    headers = github_headers(body)
    change(headers)
    before = answered('github', expected)
    status, _ = await _post(server.hooks_port, '/hooks/github', body, headers)
    assert status == expected
    assert woken.calls == []
    assert answered('github', expected) - before == 1  # refusals are counted: a wrong secret shows on a dashboard


async def test_a_replayed_delivery_is_refused_even_under_a_new_delivery_id(server: operator_http.Server,
                                                                           woken: Woken) -> None:
    body = push_event()
    assert (await _post(server.hooks_port, '/hooks/github', body, github_headers(body)))[0] == 202
    calls = len(woken.calls)
    again = github_headers(body)
    again['X-GitHub-Delivery'] = 'another-delivery-id'
    assert (await _post(server.hooks_port, '/hooks/github', body, again))[0] == 409
    assert len(woken.calls) == calls


async def test_an_oversized_body_is_refused_before_it_is_read(server: operator_http.Server, woken: Woken) -> None:
    with socket.create_connection(('127.0.0.1', server.hooks_port), timeout=10) as connection:
        connection.sendall(b'POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                           + f'Content-Length: {webhooks.MAX_BODY_BYTES + 1}\r\n\r\n'.encode())
        answer = connection.recv(4096).decode()
    assert answer.startswith('HTTP/1.0 413'), answer
    assert woken.calls == []


async def test_a_body_without_length_is_refused(server: operator_http.Server) -> None:
    with socket.create_connection(('127.0.0.1', server.hooks_port), timeout=10) as connection:
        connection.sendall(b'POST /hooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n')
        answer = connection.recv(4096).decode()
    assert answer.startswith('HTTP/1.0 411'), answer


async def test_a_slow_body_neither_blocks_healthz_nor_lasts(server: operator_http.Server, woken: Woken) -> None:
    """A sender trickling a byte at a time: /healthz and a valid hook are answered meanwhile; it gets 408."""
    body = push_event('slow')
    with socket.create_connection(('127.0.0.1', server.hooks_port), timeout=10) as slow:
        slow.sendall(b'POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                     + f'Content-Length: {len(body)}\r\n\r\n'.encode())
        started = time.monotonic()
        slow.sendall(body[:1])
        healthz = await _get(server.port, '/healthz')
        assert healthz == 200
        other = push_event('other')
        assert (await _post(server.hooks_port, '/hooks/github', other, github_headers(other)))[0] == 202
        answer = b''
        for byte in body[1:20]:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        answer = slow.recv(4096)
        assert answer.startswith(b'HTTP/1.0 408'), answer
        assert time.monotonic() - started < 5
    assert ('octo/app', 'slow') not in woken.calls and ('octo/app', 'other') in woken.calls


async def test_generic_hooks_are_signed_over_a_recent_timestamp(server: operator_http.Server, woken: Woken) -> None:
    body = json.dumps({'repository': 'https://git.example.com/team/app.git', 'branch': 'main'}).encode()

    def headers(stamp: float, secret: bytes = SECRET) -> dict[str, str]:
        text = str(int(stamp))
        return {'Content-Type': 'application/json', webhooks.TIMESTAMP_HEADER: text,
                webhooks.SIGNATURE_HEADER: webhooks.sign(secret, text.encode() + b'.' + body)}
    now = time.time()
    assert (await _post(server.hooks_port, '/hooks/generic', body, headers(now - 3600)))[0] == 401  # stale
    assert (await _post(server.hooks_port, '/hooks/generic', body, headers(now, b'wrong')))[0] == 403
    unsigned = {k: v for k, v in headers(now).items() if k != webhooks.SIGNATURE_HEADER}
    assert (await _post(server.hooks_port, '/hooks/generic', body, unsigned))[0] == 401
    assert woken.calls == []
    assert (await _post(server.hooks_port, '/hooks/generic', body, headers(now)))[0] == 202
    assert woken.calls == [('https://git.example.com/team/app.git', 'main')]
    assert (await _post(server.hooks_port, '/hooks/generic', body, headers(now)))[0] == 409  # replayed


async def test_without_a_secret_there_are_no_webhooks(tmp_path: pathlib.Path, woken: Woken) -> None:
    for content in (None, b'', b'  \n'):
        path = tmp_path / 'secret'
        if content is not None:
            path.write_bytes(content)
        hooks = webhooks.Webhooks(secret=webhooks.secret_from_file(path), wake=woken)
        body = push_event()
        # An empty secret must not validate a signature made with an empty key.
        assert hooks.handle(path='/hooks/github', headers={k.lower(): v for k, v in github_headers(
            body, secret=b'').items()}, body=body)[0] == 404
    assert woken.calls == []


async def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    return await asyncio.to_thread(post, port, path, body, headers)


async def _get(port: int, path: str) -> int:
    def get() -> int:
        connection = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
        try:
            connection.request('GET', path)
            return connection.getresponse().status
        finally:
            connection.close()
    return await asyncio.to_thread(get)


@pytest.fixture
async def patient(tmp_path: pathlib.Path, woken: Woken,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[operator_http.Server]:
    """The server, with a request deadline (60 s) no slow machine reaches within a test."""
    monkeypatch.setattr(operator_http, 'REQUEST_SECONDS', 60.0)
    (tmp_path / 'secret').write_bytes(SECRET)
    hooks = webhooks.Webhooks(secret=webhooks.secret_from_file(tmp_path / 'secret'), wake=woken)
    running = await operator_http.serve(host='127.0.0.1', port=0, hooks=hooks, body_seconds=1.0)
    try:
        yield running
    finally:
        await running.cleanup()


async def test_a_flood_of_idle_connections_costs_a_bounded_number_of_threads_and_healthz_answers(
        patient: operator_http.Server, woken: Woken) -> None:
    """300 connections that send half a request and wait: the operator keeps its threads (each connection would
    hold one for 30 s), /healthz still answers, and once the flood is gone a valid hook is taken."""
    server = patient
    before, busy = threading.active_count(), answered('other', 503)
    flood = []
    try:
        for _ in range(300):
            connection = socket.create_connection(('127.0.0.1', server.hooks_port), timeout=10)
            with contextlib.suppress(OSError):  # one too many is closed at once
                connection.sendall(b'POST /hooks/github HTTP/1.1\r\nHost: x\r\n')
            flood.append(connection)
        await asyncio.sleep(0.5)
        assert threading.active_count() - before <= operator_http.MAX_CONNECTIONS
        assert flood[-1].recv(100).startswith(b'HTTP/1.0 503 '), 'one connection too many is told so and closed'
        assert answered('other', 503) - busy >= 300 - operator_http.MAX_CONNECTIONS
        assert await _get(server.port, '/healthz') == 200  # the probes' port is not the webhooks'
    finally:
        for connection in flood:
            connection.close()
    body = push_event('after-the-flood')
    for _ in range(50):  # the server's threads see their connections closed
        if (await _post(server.hooks_port, '/hooks/github', body, github_headers(body)))[0] == 202:
            break
        await asyncio.sleep(0.1)
    assert ('octo/app', 'after-the-flood') in woken.calls


async def test_a_sender_trickling_its_headers_is_cut(tmp_path: pathlib.Path, woken: Woken,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A header line every 0.3 s never lets the 30 s silence limit strike: the request's own limit does."""
    monkeypatch.setattr(operator_http, 'REQUEST_SECONDS', 1.0)
    (tmp_path / 'secret').write_bytes(SECRET)
    hooks = webhooks.Webhooks(secret=webhooks.secret_from_file(tmp_path / 'secret'), wake=woken)
    running = await operator_http.serve(host='127.0.0.1', port=0, hooks=hooks, body_seconds=1.0)
    try:
        assert running.hooks_port is not None
        lasted = await asyncio.to_thread(trickle, running.hooks_port, seconds=15)
    finally:
        await running.cleanup()
    assert lasted < 6, f'the trickling sender kept its connection {lasted:.1f} s (limit 1 + 1 s)'


def trickle(port: int, *, seconds: float) -> float:
    """Seconds until the server cut a connection that sends a header line every 0.3 s (at most `seconds`)."""
    started = time.monotonic()
    with socket.create_connection(('127.0.0.1', port), timeout=10) as slow:
        slow.sendall(b'POST /hooks/github HTTP/1.1\r\n')
        slow.settimeout(0.3)
        while time.monotonic() - started < seconds:
            try:
                slow.sendall(b'X-Slow: 1\r\n')
                if slow.recv(1) == b'':
                    break
            except TimeoutError:
                continue
            except OSError:
                break
    return time.monotonic() - started


async def test_stopping_does_not_wait_for_a_senders_connection(tmp_path: pathlib.Path, woken: Woken) -> None:
    """The operator's shutdown (Kopf's cleanup, on the event loop) is not held by a half-sent request."""
    (tmp_path / 'secret').write_bytes(SECRET)
    hooks = webhooks.Webhooks(secret=webhooks.secret_from_file(tmp_path / 'secret'), wake=woken)
    running = await operator_http.serve(host='127.0.0.1', port=0, hooks=hooks, body_seconds=1.0)
    with socket.create_connection(('127.0.0.1', running.hooks_port), timeout=10) as half:
        half.sendall(b'POST /hooks/github HTTP/1.1\r\nHost: x\r\n')
        await asyncio.sleep(0.3)  # its thread is reading the headers
        started = time.monotonic()
        await running.cleanup()
        took = time.monotonic() - started
    assert took < 5, f'stopping waited {took:.1f} s for a sender'
