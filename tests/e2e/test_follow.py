"""Continuous delivery through the operator process: a real git server, the Kubernetes API emulator.

One operator follows one resource through the whole story (one stack for all
of it): a push to the branch is deployed within the interval; a push that
touches only other paths deploys nothing and says so; while nothing changes
nothing is written; a new requestedAt value runs; with a long interval, a
signed GitHub push webhook makes the deploy immediate.
"""
from __future__ import annotations

import json
import pathlib
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from controller import webhooks
from tests.e2e.conftest import Cluster, Operator, wait_for
from tests.e2e.test_operator import SECRETS
from tests.integration.githttp import GitHttpServer, serving
from tests.integration.test_git_follow import Monorepo

HOOK_SECRET = b'e2e-hook-secret-4f1d'
NAME = 'web'


@pytest.fixture
def mono(tmp_path: pathlib.Path) -> Monorepo:
    repo = Monorepo(tmp_path / 'git')
    repo.commit({'services/web/Dockerfile': 'FROM scratch\n'})
    repo.push()
    return repo


@pytest.fixture
def git_server(mono: Monorepo) -> Iterator[GitHttpServer]:
    with serving(mono.root) as running:
        yield running


@pytest.fixture
def operator_env(tmp_path: pathlib.Path) -> dict[str, str]:
    secret = tmp_path / 'hook-secret'
    secret.write_bytes(HOOK_SECRET)
    return {'PANDA_DEPLOY_ADAPTERS': 'tests.e2e.follow_wiring:make_adapters',
            'PANDA_DEPLOY_MIN_INTERVAL_SECONDS': '1', 'PANDA_DEPLOY_WEBHOOK_SECRET_FILE': str(secret)}


def head(mono: Monorepo) -> str:
    from tests.integration.test_git import run_git
    return run_git('rev-parse', 'HEAD', cwd=mono.work)


def deployed(cluster: Cluster, revision: str) -> bool:
    status = cluster.status(NAME)
    return status.get('phase') == 'Succeeded' and status.get('revision') == revision


def reasons(cluster: Cluster) -> list[str]:
    return [event['reason'] for event in cluster.events(NAME)]


def github_push(port: int, url: str, branch: str, after: str) -> int:
    body = json.dumps({'ref': f'refs/heads/{branch}', 'after': after,
                       'repository': {'clone_url': url, 'full_name': 'local/mono'}}).encode()
    request = urllib.request.Request(
        f'http://127.0.0.1:{port}/hooks/github', data=body, method='POST',
        headers={'Content-Type': 'application/json', 'X-GitHub-Event': 'push', 'X-GitHub-Delivery': after,
                 'X-Hub-Signature-256': webhooks.sign(HOOK_SECRET, body)})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def test_following_the_branch(cluster: Cluster, operator: Operator, mono: Monorepo,
                              git_server: GitHttpServer) -> None:
    cluster.apply_secrets(**{'aws-creds': SECRETS['aws-creds']})
    url = git_server.url('mono.git')
    spec: dict[str, Any] = {
        'source': {'url': url, 'branch': 'main', 'interval': '2s', 'paths': ['services/web/**']},
        'aws': {'region': 'ap-northeast-2', 'credentialsSecretRef': {'name': 'aws-creds'}},
        'healthCheck': {'checks': 1, 'intervalSeconds': 0}}
    cluster.create(NAME, spec)
    first = head(mono)
    wait_for(lambda: deployed(cluster, first), timeout=60, what='the first run')

    # A push touching the watched paths: deployed within the interval (2 s, jittered; the run's own time on top).
    mono.commit({'services/web/app.py': 'v2\n'})
    mono.push()
    pushed, at = head(mono), time.monotonic()
    wait_for(lambda: deployed(cluster, pushed), timeout=30, what='the pushed commit deployed')
    assert cluster.status(NAME)['branchHead']['revision'] == pushed
    assert cluster.status(NAME)['branchHead']['decision'] == 'Deploy'
    assert 'BranchMoved' in reasons(cluster)
    print(f'push deployed after {time.monotonic() - at:.1f}s')

    # A push touching only other paths: nothing deployed, and said so.
    runs = len(cluster.status(NAME)['history'])
    mono.commit({'docs/readme.md': 'docs only\n'})
    mono.push()
    docs = head(mono)
    wait_for(lambda: (cluster.status(NAME).get('branchHead') or {}).get('revision') == docs, timeout=30,
             what='the docs-only head seen')
    status = cluster.status(NAME)
    assert status['branchHead']['decision'] == 'NoPathChanged' and status['revision'] == pushed
    assert 'changes no file under spec.source.paths' in status['branchHead']['message']
    assert 'NoPathChanged' in reasons(cluster)

    # Nothing changes: several intervals, no write at all.
    writes = len(cluster.writes_for(NAME))
    time.sleep(7)
    assert len(cluster.writes_for(NAME)) == writes
    assert len(cluster.status(NAME)['history']) == runs

    # A new requestedAt value runs at the branch head, though nothing changed under the paths.
    cluster.patch(NAME, {'metadata': {'annotations': {'deploy.panda.dev/requestedAt': '2026-11-30T16:00:00Z'}}})
    wait_for(lambda: cluster.status(NAME).get('lastHandledRequestedAt') == '2026-11-30T16:00:00Z'
             and len(cluster.status(NAME)['history']) == runs + 1 and cluster.finished(NAME),
             timeout=30, what='the requested run')
    assert deployed(cluster, docs) and 'RedeployRequested' in reasons(cluster)

    # A long interval: the webhook makes the next push immediate.
    cluster.patch(NAME, {'spec': {'source': {'interval': '1h'}}})
    wait_for(lambda: cluster.status(NAME).get('observedGeneration') == 2 and cluster.finished(NAME), timeout=30,
             what='the spec change run')
    mono.commit({'services/web/app.py': 'v3\n'})
    mono.push()
    hooked, at = head(mono), time.monotonic()
    assert github_push(operator.hooks_port, url, 'main', hooked) == 202
    wait_for(lambda: deployed(cluster, hooked), timeout=20, what='the hooked commit deployed')
    print(f'webhook push deployed after {time.monotonic() - at:.1f}s')
