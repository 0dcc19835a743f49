"""Notifications against a GitHub stand-in checked with GitHub's OpenAPI description, and a webhook receiver.

Each test drives `Notifications` as the recorder does (`for_run`, then `started` and `ended` on the running
loop) and waits for delivery with `drain`. The hostile servers: answers that never end, answers that never
come, redirects to the metadata address, webhook URLs on denied networks or hosts not allowed.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import logging
import threading
import time
from typing import Any

import prometheus_client
import pytest

from controller.adapters.github_status import GitHubApis
from controller.adapters.notify import Notifications, NotifySettings, notify_denied
from controller.adapters.webhook import signature
from controller.credentials import Credentials
from controller.egress import DeniedNetworks, GitHosts
from controller.models import PandaDeploySpec, PandaDeployStatus, RunResult
from tests.github_standin import GitHubStandIn

TOKEN = 'ghp_' + 'N0tify' * 6
KEY = 'hmac-signing-key-7'
SHA = 'a' * 40
FAST = (0.01, 0.01, 0.01)


@pytest.fixture
def github():
    with GitHubStandIn(token=TOKEN) as standin:
        yield standin


def spec(url: str, **notify: Any) -> PandaDeploySpec:
    return PandaDeploySpec.model_validate({
        'source': {'url': url, 'branch': 'main', 'tokenSecretRef': {'name': 'gh'}},
        'aws': {'region': 'ap-northeast-2'}, 'notify': notify})


def status(*, revision: str | None = SHA, message: str | None = None) -> PandaDeployStatus:
    return PandaDeployStatus.model_validate({'deploymentId': 'dep_abcdefghij', 'observedGeneration': 3,
                                             'revision': revision, 'message': message})


def notifications(github: GitHubStandIn, **settings: Any) -> Notifications:
    apis = GitHubApis.parse(f'http://127.0.0.1:*={github.base}')
    return Notifications(settings=NotifySettings(github_apis=apis, backoff=FAST, **settings))


async def announce(notifier: Notifications, target: PandaDeploySpec, result: RunResult = RunResult.succeeded,
                   message: str = 'Deployed aaaaaaa; green is active', **creds: Any) -> None:
    notices = notifier.for_run(namespace='team-a', name='web', spec=target,
                               credentials=Credentials(github_token=TOKEN, **creds))
    notices.started(status())
    await notifier.drain()
    notices.ended(status(message=message), result=result, reason=result.value)
    await notifier.drain()


async def test_a_run_posts_pending_then_success_on_its_commit(github):
    notifier = notifications(github, target_url='https://dash.example/d?ns={namespace}&pd={name}&run={deploymentId}')
    await announce(notifier, spec('http://127.0.0.1:9/your-org/web.git', commitStatus=True))

    assert github.violations == []
    sent = github.statuses[('your-org', 'web', SHA)]
    assert [s['state'] for s in sent] == ['pending', 'success']
    assert {s['context'] for s in sent} == {'panda-deploy/team-a/web'}
    assert sent[0]['description'] == 'Deploying aaaaaaaaaaaa (dep_abcdefghij)'
    assert sent[1]['target_url'] == 'https://dash.example/d?ns=team-a&pd=web&run=dep_abcdefghij'


@pytest.mark.parametrize('result, state', [(RunResult.failed, 'failure'), (RunResult.superseded, 'error')])
async def test_a_run_that_did_not_succeed_ends_failure_or_error_with_a_capped_description(github, result, state):
    await announce(notifications(github), spec('http://127.0.0.1:9/o/r.git', commitStatus=True), result=result,
                   message='HealthCheckFailed: ' + 'x' * 500)
    sent = github.statuses[('o', 'r', SHA)]
    assert github.violations == [] and sent[-1]['state'] == state and len(sent[-1]['description']) == 140


async def test_github_enterprise_is_reached_under_its_api_v3_base():
    with GitHubStandIn(token=TOKEN, prefix='/api/v3', description='ghes-3.19') as ghe:
        port = ghe.server.server_address[1]
        apis = GitHubApis.parse(f'http://127.0.0.1:{port}')  # no =URL: GitHub Enterprise Server at /api/v3
        notifier = Notifications(settings=NotifySettings(github_apis=apis, backoff=FAST))
        await announce(notifier, spec(f'http://127.0.0.1:{port}/corp/app.git', commitStatus=True))
        assert ghe.violations == [] and [c.target for c in ghe.calls] == [f'/api/v3/repos/corp/app/statuses/{SHA}'] * 2


def notifications_counted(channel: str, result: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(
        'panda_deploy_notifications_total', {'channel': channel, 'result': result}) or 0.0


async def test_a_failing_server_is_retried_a_bounded_number_of_times_and_a_late_pending_never_wins(github, caplog):
    github.mode, github.failures = 'fail', 2
    notifier = notifications(github)
    sent, failed = notifications_counted('commit_status', 'sent'), notifications_counted('commit_status', 'failed')
    await announce(notifier, spec('http://127.0.0.1:9/o/r.git', commitStatus=True))
    assert [s['state'] for s in github.statuses[('o', 'r', SHA)]] == ['pending', 'success']
    assert len(github.calls) == 4
    assert notifications_counted('commit_status', 'sent') - sent == 2  # each once, however many attempts
    assert notifications_counted('commit_status', 'failed') == failed

    github.failures, github.calls = 100, []
    await announce(notifier, spec('http://127.0.0.1:9/o/r.git', commitStatus=True))
    assert len(github.calls) == 8  # 4 attempts each, then given up
    assert 'gave up after 4 attempts' in caplog.text
    assert notifications_counted('commit_status', 'failed') - failed == 2  # what an alert on failures sees


async def test_a_rate_limited_request_is_tried_again_and_a_refused_one_is_not(github):
    github.mode, github.failures = 'ratelimit', 1  # GitHub's 403 for a spent rate limit
    await announce(notifications(github), spec('http://127.0.0.1:9/o/r.git', commitStatus=True))
    assert [s['state'] for s in github.statuses[('o', 'r', SHA)]] == ['pending', 'success'] and len(github.calls) == 3

    github.mode, github.token, github.calls = 'ok', 'another-token', []  # 401: retrying cannot help
    failed = notifications_counted('commit_status', 'failed')
    await announce(notifications(github), spec('http://127.0.0.1:9/o/r.git', commitStatus=True))
    assert len(github.calls) == 2
    assert notifications_counted('commit_status', 'failed') - failed == 2  # refused: failed at once


async def test_a_newer_notice_replaces_an_older_one_still_retrying(github):
    github.mode, github.failures = 'fail', 1
    notifier = Notifications(settings=NotifySettings(
        github_apis=GitHubApis.parse(f'http://127.0.0.1:*={github.base}'), backoff=(0.5, 0.5, 0.5)))
    notices = notifier.for_run(namespace='n', name='p', spec=spec('http://127.0.0.1:9/o/r.git', commitStatus=True),
                               credentials=Credentials(github_token=TOKEN))
    notices.started(status())
    for _ in range(100):
        if github.calls:
            break
        await asyncio.sleep(0.01)
    notices.ended(status(message='done'), result=RunResult.succeeded, reason='Succeeded')
    await notifier.drain()
    assert [s['state'] for s in github.statuses[('o', 'r', SHA)]] == ['success']


@pytest.mark.parametrize('mode, expected', [
    ('huge', 'answer larger than 65536 bytes'),
    ('redirect', 'redirect to http://169.254.169.254/latest/meta-data/ not followed'),
])
async def test_hostile_answers_are_cut_short_and_not_retried(github, caplog, mode, expected):
    github.mode = mode
    started = time.monotonic()
    await announce(notifications(github), spec('http://127.0.0.1:9/o/r.git', commitStatus=True))
    assert time.monotonic() - started < 5
    assert len(github.calls) == 2 and expected in caplog.text  # one attempt for each notice


@pytest.mark.parametrize('mode', ['hang', 'drip'])
async def test_a_server_that_never_answers_costs_each_attempt_its_deadline(github, caplog, mode):
    github.mode = mode
    notifier = notifications(github, deadline=0.3)
    started = time.monotonic()
    await announce(notifier, spec('http://127.0.0.1:9/o/r.git', commitStatus=True))
    assert len(github.calls) == 8 and time.monotonic() - started < 8
    assert 'no answer within 0.3 seconds' in caplog.text


async def test_the_token_reaches_no_log_line_even_when_the_server_echoes_it(caplog):
    caplog.set_level(logging.DEBUG)

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers['Content-Length']))
            body = f'bad credentials: {self.headers["Authorization"]}'.encode()
            self.send_response(401)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f'http://127.0.0.1:{server.server_address[1]}'
        notifier = Notifications(settings=NotifySettings(github_apis=GitHubApis.parse(f'http://127.0.0.1:*={base}'),
                                                         backoff=FAST))
        await announce(notifier, spec('http://127.0.0.1:9/o/r.git', commitStatus=True),
                       message=f'failed with {TOKEN} in the text')
    finally:
        server.shutdown()
    assert 'HTTP 401: bad credentials: Bearer ***' in caplog.text
    assert TOKEN not in caplog.text and TOKEN[4:] not in caplog.text


class Receiver:
    """A webhook receiver that keeps what it got and whether the signature held."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                receiver.got.append((dict(self.headers.items()), self.rfile.read(int(self.headers['Content-Length']))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}/hook'


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.server.shutdown()


def webhook_spec(url: str) -> PandaDeploySpec:
    return spec('https://github.com/o/r.git', webhook={'url': url, 'secretRef': {'name': 'hook', 'key': 'k'}})


async def test_a_webhook_gets_the_start_and_end_as_signed_json(receiver):
    notifier = Notifications(settings=NotifySettings(webhook_hosts=GitHosts.parse('http://127.0.0.1:*'),
                                                     backoff=FAST))
    sent = notifications_counted('webhook', 'sent')
    await announce(notifier, webhook_spec(receiver.url), webhook_key=KEY)
    assert len(receiver.got) == 2
    assert notifications_counted('webhook', 'sent') - sent == 2
    for headers, body in receiver.got:
        expected = 'sha256=' + hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers['X-Panda-Signature-256'], expected) and signature(KEY, body) == expected
        assert TOKEN not in body.decode() and KEY not in body.decode()
    first, last = (json.loads(body) for _, body in receiver.got)
    assert (first['event'], first['result'], first['revision']) == ('started', None, SHA)
    assert (last['event'], last['result'], last['namespace'], last['name']) == ('ended', 'Succeeded', 'team-a', 'web')
    assert last['message'] == 'Deployed aaaaaaa; green is active' and last['deploymentId'] == 'dep_abcdefghij'


async def test_a_webhook_never_reaches_a_denied_network_even_when_its_host_is_allowed(receiver, caplog):
    allowed = GitHosts.parse('http://127.0.0.1:*,http://169.254.169.254:*')
    notifier = Notifications(settings=NotifySettings(
        webhook_hosts=allowed, backoff=FAST, denied=notify_denied(DeniedNetworks.parse('127.0.0.0/8'))))
    await announce(notifier, webhook_spec(receiver.url), webhook_key=KEY)
    await announce(notifier, webhook_spec('http://169.254.169.254/latest/'), webhook_key=KEY)
    assert receiver.got == []
    assert '127.0.0.1 is in 127.0.0.0/8: not allowed' in caplog.text
    assert '169.254.169.254 is in 169.254.0.0/16: not allowed' in caplog.text
    assert 'attempt 2' not in caplog.text  # a refusal is not retried


async def test_a_webhook_to_a_host_not_allowed_is_never_sent(receiver):
    notifier = Notifications(settings=NotifySettings(webhook_hosts=GitHosts.parse('chat.example.com'),
                                                     backoff=FAST))
    await announce(notifier, webhook_spec(receiver.url), webhook_key=KEY)
    assert receiver.got == []


def test_a_notice_queued_off_the_event_loop_fails_nothing(github, caplog):
    notices = notifications(github).for_run(namespace='n', name='p', credentials=Credentials(github_token=TOKEN),
                                            spec=spec('http://127.0.0.1:9/o/r.git', commitStatus=True))
    notices.started(status())
    assert github.calls == [] and 'queued outside the event loop; not sent' in caplog.text
