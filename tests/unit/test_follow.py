"""The follower's decisions, with a recording stand-in for the Kubernetes API, the git calls and the reconciler.

What is checked: which looks ask the git server, which write (and what), which
start a run; and that nothing is written while nothing changes.
"""
from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

import prometheus_client
import pytest

from controller.follow import Follower

OLD, NEW, OTHER = 'a' * 40, 'b' * 40, 'c' * 40
URL = 'https://github.com/octo/mono.git'
LOG = logging.getLogger('test')


class Kube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []

    def patch_status(self, *, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(patch)
        return {}

    def post_event(self, *, ref: dict[str, str], type: str, reason: str, message: str) -> None:
        self.events.append((reason, message))

    def read_secret(self, *, namespace: str, name: str) -> dict[str, str] | None:
        return {'token': 'ghp_secret'} if name == 'github-token' else None


class Heads:
    def __init__(self, head: str = NEW, touched: bool | None = True) -> None:
        self.current, self.touched = head, touched
        self.asked: list[tuple[str, str, str | None]] = []
        self.compared: list[tuple[str, str, list[str]]] = []

    def head(self, *, url: str, branch: str, token: str | None) -> str:
        self.asked.append((url, branch, token))
        return self.current

    def touches(self, *, url: str, old: str, new: str, patterns: list[str], token: str | None) -> bool | None:
        self.compared.append((old, new, patterns))
        return self.touched


class Runs:
    def __init__(self) -> None:
        self.busy = False
        self.started: list[dict[str, Any]] = []

    def running(self, key: tuple[str, str]) -> bool:
        return self.busy

    async def reconcile(self, *, body: Any, logger: Any, wanted: bool = False) -> None:
        assert wanted
        self.started.append(copy.deepcopy(dict(body)))


def resource(*, source: dict[str, Any] | None = None, status: dict[str, Any] | None = None,
             annotations: dict[str, str] | None = None, generation: int = 1) -> dict[str, Any]:
    return {'metadata': {'namespace': 'team', 'name': 'web', 'uid': 'u1', 'generation': generation,
                         'annotations': annotations or {}},
            'spec': {'source': {'url': URL, 'branch': 'main', 'interval': '1m', **(source or {})},
                     'aws': {'region': 'ap-northeast-2'}},
            'status': status if status is not None else settled(OLD)}


def settled(revision: str, **extra: Any) -> dict[str, Any]:
    return {'observedGeneration': 1, 'phase': 'Succeeded', 'revision': revision,
            'history': [{'deploymentId': 'dep_0000000001', 'generation': 1, 'revision': revision,
                         'result': 'Succeeded', 'startedAt': '2026-11-30T10:00:00Z',
                         'completedAt': '2026-11-30T10:01:00Z', 'durationSeconds': 60.0}], **extra}


@pytest.fixture
def kube() -> Kube:
    return Kube()


@pytest.fixture
def runs() -> Runs:
    return Runs()


def follower(kube: Kube, runs: Runs, heads: Heads, min_interval: float = 1.0) -> Follower:
    return Follower(kube=kube, runs=runs, heads=heads, min_interval=min_interval)  # type: ignore[arg-type]


async def look(f: Follower, body: dict[str, Any]) -> None:
    await f.observe(body=body, deleted=False, logger=LOG)
    key = ('team', 'web')
    await f._look(key, f.entries[key])


async def test_a_head_that_is_the_last_runs_commit_costs_one_ls_remote_and_no_write(kube: Kube, runs: Runs) -> None:
    heads = Heads(head=OLD)
    now = [1000.0]
    f = Follower(kube=kube, runs=runs, heads=heads, min_interval=1, clock=lambda: now[0])  # type: ignore[arg-type]
    unchanged = looks_counted('unchanged')
    for _ in range(3):
        await look(f, resource())
        now[0] += 60
    assert len(heads.asked) == 3 and kube.patches == [] and kube.events == [] and runs.started == []
    assert looks_counted('unchanged') - unchanged == 3


def looks_counted(result: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value('panda_deploy_branch_looks_total', {'result': result}) or 0.0


async def test_resources_on_one_branch_share_a_recent_answer_but_not_a_token(kube: Kube, runs: Runs) -> None:
    heads = Heads(head=OLD)
    now = [1000.0]
    f = Follower(kube=kube, runs=runs, heads=heads, min_interval=1, clock=lambda: now[0])  # type: ignore[arg-type]
    for index in range(5):  # five services of one monorepo, looked at within a second
        body = resource(source={'paths': [f'services/s{index}/**']})
        body['metadata'].update(name=f's{index}', uid=f'u{index}')
        await f.observe(body=body, deleted=False, logger=LOG)
        await f._look(('team', f's{index}'), f.entries[('team', f's{index}')])
        now[0] += 0.2
    assert len(heads.asked) == 1
    private = resource(source={'tokenSecretRef': {'name': 'github-token', 'key': 'token'}})
    private['metadata'].update(name='private', uid='u9')
    await f.observe(body=private, deleted=False, logger=LOG)
    await f._look(('team', 'private'), f.entries[('team', 'private')])
    assert len(heads.asked) == 2  # another token: its own answer
    f.wake(repository=URL, branch='main')  # a webhook: the server is asked again, however recent the answer
    await f._look(('team', 's0'), f.entries[('team', 's0')])
    assert len(heads.asked) == 3
    now[0] += 10  # older than a tenth of the interval (at most 5 s): asked again
    await f._look(('team', 's1'), f.entries[('team', 's1')])
    assert len(heads.asked) == 4


async def test_a_new_head_is_decided_on_once_and_starts_a_run(kube: Kube, runs: Runs) -> None:
    heads = Heads(head=NEW)
    f = follower(kube, runs, heads)
    moved = looks_counted('moved')
    await look(f, resource())
    assert [p['branchHead']['revision'] for p in kube.patches] == [NEW]
    assert looks_counted('moved') - moved == 1
    assert kube.patches[0]['branchHead']['decision'] == 'Deploy'
    assert [reason for reason, _ in kube.events] == ['BranchMoved'] and len(runs.started) == 1
    await look(f, resource())  # the watch's status still lags: this process remembers
    assert len(kube.patches) == 1 and len(runs.started) == 1
    # A restarted operator reads what was decided from the status.
    fresh = follower(kube, runs, heads)
    await look(fresh, resource(status=settled(OLD, branchHead=kube.patches[0]['branchHead'])))
    assert len(kube.patches) == 1 and len(runs.started) == 1


async def test_a_head_changing_no_watched_path_deploys_nothing_and_says_so(kube: Kube, runs: Runs) -> None:
    heads = Heads(head=NEW, touched=False)
    f = follower(kube, runs, heads)
    skipped = looks_counted('no_path_changed')
    await look(f, resource(source={'paths': ['services/web/**']}))
    assert looks_counted('no_path_changed') - skipped == 1
    assert heads.compared == [(OLD, NEW, ['services/web/**'])]
    assert kube.patches[0]['branchHead']['decision'] == 'NoPathChanged' and runs.started == []
    assert [reason for reason, _ in kube.events] == ['NoPathChanged']
    assert 'changes no file under spec.source.paths' in kube.events[0][1]


async def test_a_deployed_commit_gone_from_the_server_deploys_the_head(kube: Kube, runs: Runs) -> None:
    heads = Heads(head=NEW, touched=None)
    f = follower(kube, runs, heads)
    await look(f, resource(source={'paths': ['services/web/**']}))
    assert len(runs.started) == 1 and 'no longer on the server' in kube.events[0][1]


async def test_the_compared_commit_is_the_newest_that_succeeded(kube: Kube, runs: Runs) -> None:
    """A run that failed at OTHER did not deploy it: the change set is counted from OLD, which runs."""
    status = settled(OLD)
    status['history'].insert(0, {**status['history'][0], 'revision': OTHER, 'result': 'Failed'})
    status.update(phase='Failed', revision=OTHER)
    heads = Heads(head=NEW, touched=False)
    await look(follower(kube, runs, heads), resource(source={'paths': ['a/**']}, status=status))
    assert heads.compared[0][0] == OLD


@pytest.mark.parametrize('case', ['pinned', 'suspended', 'running', 'progressing', 'new generation'])
async def test_no_look_unless_following_a_settled_resource(kube: Kube, runs: Runs, case: str) -> None:
    heads = Heads()
    body = resource()
    if case == 'pinned':
        body['spec']['source'] = {'url': URL, 'revision': OLD, 'interval': '1m'}
    elif case == 'suspended':
        body['spec']['suspend'] = True
    elif case == 'running':
        runs.busy = True
    elif case == 'progressing':
        body['status']['phase'] = 'Progressing'
    else:
        body['metadata']['generation'] = 2
    f = follower(kube, runs, heads)
    await look(f, body)
    assert heads.asked == [] and kube.patches == [] and runs.started == []
    if case == 'pinned':
        assert f.entries[('team', 'web')].due is None  # never scheduled


async def test_a_token_is_read_from_the_secret_for_each_look(kube: Kube, runs: Runs) -> None:
    heads = Heads(head=OLD)
    await look(follower(kube, runs, heads),
               resource(source={'tokenSecretRef': {'name': 'github-token', 'key': 'token'}}))
    assert heads.asked == [(URL, 'main', 'ghp_secret')]
    assert all('ghp_secret' not in str(p) for p in kube.patches)


async def test_requested_at_runs_once_per_value_and_waits_for_the_run_in_flight(kube: Kube, runs: Runs) -> None:
    f = follower(kube, runs, Heads(head=OLD))
    requested = resource(annotations={'deploy.panda.dev/requestedAt': 'first'})
    runs.busy = True
    await f.observe(body=requested, deleted=False, logger=LOG)
    assert runs.started == [] and kube.patches == []
    assert f.entries[('team', 'web')].due is not None  # looked at again soon
    runs.busy = False
    await f.observe(body=requested, deleted=False, logger=LOG)
    assert kube.patches == [{'lastHandledRequestedAt': 'first'}] and len(runs.started) == 1
    assert [reason for reason, _ in kube.events] == ['RedeployRequested']
    await f.observe(body=requested, deleted=False, logger=LOG)  # the same value again: nothing
    restarted = follower(kube, runs, Heads(head=OLD))
    await restarted.observe(body=resource(annotations={'deploy.panda.dev/requestedAt': 'first'},
                                          status=settled(OLD, lastHandledRequestedAt='first')),
                            deleted=False, logger=LOG)
    assert len(runs.started) == 1
    await f.observe(body=resource(annotations={'deploy.panda.dev/requestedAt': 'second'}), deleted=False,
                    logger=LOG)
    assert len(runs.started) == 2 and kube.patches[-1] == {'lastHandledRequestedAt': 'second'}


async def test_a_webhook_wakes_only_resources_following_that_repository_and_branch(kube: Kube,
                                                                                   runs: Runs) -> None:
    f = follower(kube, runs, Heads(), min_interval=3600)
    await f.observe(body=resource(), deleted=False, logger=LOG)
    other = resource(source={'branch': 'release'})
    other['metadata'].update(name='release', uid='u2')
    await f.observe(body=other, deleted=False, logger=LOG)
    pinned = resource(source={'revision': OLD, 'branch': None})
    pinned['metadata'].update(name='pinned', uid='u3')
    await f.observe(body=pinned, deleted=False, logger=LOG)
    assert f.wake(repository='git@github.com:Octo/mono.git', branch='main') == [('team', 'web')]
    assert f.wake(repository='octo/mono', branch='release') == [('team', 'release')]
    assert f.wake(repository='octo/other', branch='main') == []


async def test_intervals_are_raised_to_the_operators_floor_and_looks_repeat(kube: Kube, runs: Runs) -> None:
    f = follower(kube, runs, Heads(head=OLD), min_interval=30)
    await f.observe(body=resource(source={'interval': '5s'}), deleted=False, logger=LOG)
    assert f.entries[('team', 'web')].interval == 30.0
    heads = Heads(head=OLD)
    f = follower(kube, runs, heads, min_interval=1)
    await f.observe(body=resource(source={'interval': 1}), deleted=False, logger=LOG)
    f.start()
    try:
        await asyncio.sleep(2.5)
    finally:
        await f.stop()
    assert 2 <= len(heads.asked) <= 4 and kube.patches == []


async def test_a_wake_during_a_look_waits_for_its_end(kube: Kube, runs: Runs) -> None:
    """Two looks at one resource never run side by side (each could decide on the same head)."""
    import threading
    import time

    class SlowHeads(Heads):
        def __init__(self) -> None:
            super().__init__(head=NEW)
            self.inside, self.most, self.lock = 0, 0, threading.Lock()

        def head(self, *, url: str, branch: str, token: str | None) -> str:
            with self.lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
            time.sleep(0.3)
            with self.lock:
                self.inside -= 1
            return super().head(url=url, branch=branch, token=token)

    heads = SlowHeads()
    f = follower(kube, runs, heads, min_interval=3600)
    await f.observe(body=resource(), deleted=False, logger=LOG)
    f.start()
    try:
        for _ in range(3):
            f.wake(repository=URL, branch='main')
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
    finally:
        await f.stop()
    assert heads.most == 1 and len(heads.asked) == 2  # the look under way, then one more for the wakes
    assert len(runs.started) == 1 and len(kube.patches) == 1


async def test_a_forgotten_resource_is_looked_at_no_more(kube: Kube, runs: Runs) -> None:
    """Kopf paused this replica for a peer: it stops following until the watch shows the resource again."""
    f = follower(kube, runs, Heads())
    await f.observe(body=resource(), deleted=False, logger=LOG)
    f.forget(body=resource())
    assert f.entries == {} and f.wake(repository=URL, branch='main') == []


async def test_a_request_waiting_for_a_run_is_handled_soon_after_it_ends_whatever_the_interval(
        kube: Kube, runs: Runs) -> None:
    f = follower(kube, runs, Heads(head=OLD), min_interval=3600)
    runs.busy = True
    await f.observe(body=resource(source={'interval': '1h'}, annotations={'deploy.panda.dev/requestedAt': 'x'}),
                    deleted=False, logger=LOG)
    f.start()
    try:
        await asyncio.sleep(1.5)
        assert runs.started == []
        runs.busy = False  # the run ended; no watch event follows
        await asyncio.sleep(2.5)
    finally:
        await f.stop()
    assert len(runs.started) == 1 and kube.patches == [{'lastHandledRequestedAt': 'x'}]


@pytest.mark.parametrize('source, message', [
    ({'paths': ['../other/**']}, 'relative to the repository root'),
    ({'paths': ['/services/**']}, 'relative to the repository root'),
    ({'paths': [':(exclude)docs']}, 'relative to the repository root'),
    ({'paths': ['a\\b']}, 'pattern'),
    ({'paths': ['x'] * 33}, 'at most 32'),
    ({'interval': '0.5s'}, 'between 1 second and 7 days'),
    ({'interval': '8d'}, 'pattern'),
])
def test_bad_follow_fields_are_refused(source: dict[str, Any], message: str) -> None:
    from pydantic import ValidationError

    from controller.models import Source
    with pytest.raises(ValidationError, match=message):
        Source.model_validate({'url': URL, **source})


def test_a_pinned_revision_is_not_followed() -> None:
    from controller.models import Source
    assert Source.model_validate({'url': URL, 'interval': '5m'}).interval_seconds == 300
    assert Source.model_validate({'url': URL, 'revision': OLD, 'interval': '5m'}).interval_seconds is None


async def test_a_failing_look_says_so_once_per_failure_and_writes_no_status(kube: Kube, runs: Runs) -> None:
    from controller.adapters.git import SourceAuthFailed

    class FailingHeads(Heads):
        def __init__(self) -> None:
            super().__init__(head=OLD)
            self.error: Exception | None = SourceAuthFailed('authentication to https://github.com/octo/mono.git '
                                                            'failed')

        def head(self, *, url: str, branch: str, token: str | None) -> str:
            if self.error is not None:
                raise self.error
            return super().head(url=url, branch=branch, token=token)

    heads = FailingHeads()
    now = [1000.0]
    f = Follower(kube=kube, runs=runs, heads=heads, min_interval=1, clock=lambda: now[0])  # type: ignore[arg-type]
    failed = looks_counted('failed')
    for _ in range(3):
        await look(f, resource())
        now[0] += 60
    assert [reason for reason, _ in kube.events] == ['SourceAuthFailed'] and kube.patches == []
    assert looks_counted('failed') - failed == 3  # one Event per failure, but every failed look counted
    heads.error = None
    await look(f, resource())
    heads.error = SourceAuthFailed('authentication failed again')
    now[0] += 60
    await look(f, resource())
    assert [reason for reason, _ in kube.events] == ['SourceAuthFailed', 'SourceAuthFailed']
