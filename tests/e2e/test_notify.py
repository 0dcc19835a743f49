"""The operator process announces a run to the GitHub stand-in and a webhook receiver, writing nothing more.

The operator runs with fake adapters against the API emulator; PANDA_DEPLOY_GITHUB_API points github.com at
the stand-in (checked against GitHub's OpenAPI description) and PANDA_DEPLOY_WEBHOOK_HOSTS allows the local
receiver. A run with notifications writes to the Kubernetes API exactly what the same run without them writes.
"""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Cluster, Operator, wait_for
from tests.e2e.test_operator import SECRETS, SPEC
from tests.github_standin import GitHubStandIn
from tests.integration.test_notify import Receiver

TOKEN = SECRETS['github-token']['token']
KEY = 'e2e-webhook-key-31f0'


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    with GitHubStandIn(token=TOKEN) as standin:
        yield standin


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


@pytest.fixture
def operator_env(github: GitHubStandIn) -> dict[str, str]:
    return {'PANDA_DEPLOY_GITHUB_API': f'github.com={github.base}',
            'PANDA_DEPLOY_WEBHOOK_HOSTS': 'http://127.0.0.1:*',
            'PANDA_DEPLOY_NOTIFY_URL': 'https://dash.example/{namespace}/{name}/{deploymentId}'}


def test_a_run_posts_its_commit_status_and_webhook_and_writes_no_more(cluster: Cluster, operator: Operator,
                                                                       github: GitHubStandIn, receiver: Receiver):
    cluster.apply_secrets(**SECRETS, hook={'key': KEY})
    cluster.create('quiet', SPEC)
    wait_for(lambda: cluster.finished('quiet') and len(cluster.events('quiet')) >= 7, what='the quiet run')
    notify = {'commitStatus': True, 'webhook': {'url': receiver.url, 'secretRef': {'name': 'hook', 'key': 'key'}}}
    cluster.create('loud', {**SPEC, 'image': {'repository': 'loud'}, 'notify': notify})
    wait_for(lambda: cluster.ready('loud'), what='Ready')
    status = cluster.status('loud')
    key = ('your-org', 'sample-app', status['revision'])
    wait_for(lambda: len(github.statuses.get(key, [])) == 2 and len(receiver.got) == 2, timeout=15,
             what='both notices on both channels')

    assert github.violations == []
    assert [(s['state'], s['context']) for s in github.statuses[key]] == [
        ('pending', 'panda-deploy/default/loud'), ('success', 'panda-deploy/default/loud')]
    assert github.statuses[key][1]['target_url'] == f'https://dash.example/default/loud/{status["deploymentId"]}'
    bodies = [json.loads(body) for _, body in receiver.got]
    assert [(b['event'], b['result']) for b in bodies] == [('started', None), ('ended', 'Succeeded')]
    wait_for(lambda: len(cluster.events('loud')) >= 7, timeout=5, what='the final Event')
    assert len(cluster.writes_for('loud')) == len(cluster.writes_for('quiet'))
    assert TOKEN not in operator.log() and KEY not in operator.log()
    assert 'panda-deploy/default/loud: success notice of' in operator.log()


def test_a_webhook_host_not_allowed_stalls_the_resource(cluster: Cluster, operator: Operator):
    cluster.apply_secrets(**SECRETS, hook={'key': KEY})
    notify = {'webhook': {'url': 'https://chat.example.com/x', 'secretRef': {'name': 'hook', 'key': 'key'}}}
    cluster.create('refused', {**SPEC, 'notify': notify})
    stalled = wait_for(lambda: cluster.condition('refused', 'Stalled'), what='Stalled')
    assert stalled['reason'] == 'NotificationNotAllowed' and 'PANDA_DEPLOY_WEBHOOK_HOSTS' in stalled['message']
