"""The reconciler's small parts: FIFO slots, merge-patch diffs, validation messages, Secrets, conditions."""
from __future__ import annotations

import asyncio
import datetime

import pydantic
import pytest

from controller import conditions, credentials
from controller.errors import Stall
from controller.kube import merge_diff
from controller.models import PandaDeploySpec, PandaDeployStatus, Phase, describe_validation_error
from controller.reconciler import Slots

BASE = {'source': {'repo': 'o/r', 'tokenSecretRef': {'name': 'gh', 'key': 'token'}},
        'aws': {'region': 'ap-northeast-2', 'credentialsSecretRef': {'name': 'aws'}}}


async def test_slots_admit_at_most_size_and_start_waiters_in_arrival_order():
    slots = Slots(2)
    order: list[str] = []
    queued: list[tuple[str, int]] = []
    gate = asyncio.Event()

    async def run(name: str) -> None:
        async def on_queued(ahead: int) -> None:
            queued.append((name, ahead))
        async with slots.take(on_queued=on_queued):
            order.append(name)
            assert slots.busy <= 2
            await gate.wait()

    tasks = [asyncio.create_task(run(n)) for n in 'abcde']
    await asyncio.sleep(0.05)
    assert order == ['a', 'b'] and queued == [('c', 0), ('d', 1), ('e', 2)]
    gate.set()
    await asyncio.gather(*tasks)
    assert order == list('abcde') and slots.busy == 0


async def test_a_cancelled_waiter_leaves_the_queue_without_leaking_a_slot():
    slots = Slots(1)
    release = asyncio.Event()

    async def hold() -> None:
        async with slots.take(on_queued=lambda _: asyncio.sleep(0)):
            await release.wait()

    async def wait() -> None:
        async with slots.take(on_queued=lambda _: asyncio.sleep(0)):
            pass

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(wait())
    await asyncio.sleep(0.01)
    waiter.cancel()
    release.set()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.busy == 0
    async with slots.take(on_queued=lambda _: asyncio.sleep(0)):
        assert slots.busy == 1


def test_merge_diff_carries_only_changes_and_nulls_for_removed_keys():
    old = {'phase': 'Progressing', 'image': {'uri': 'u', 'digest': 'd'}, 'stages': [1], 'message': 'x'}
    new = {'phase': 'Succeeded', 'image': {'uri': 'u'}, 'stages': [1, 2]}
    assert merge_diff(old, new) == {'phase': 'Succeeded', 'image': {'digest': None}, 'stages': [1, 2],
                                    'message': None}
    assert merge_diff(new, new) == {}


@pytest.mark.parametrize('spec, expected', [
    ({'aws': BASE['aws']}, 'spec.source: Field required'),
    ({**BASE, 'source': {'repo': 'o/r', 'url': 'https://x/y.git'}},
     'spec.source: exactly one of spec.source.repo and spec.source.url must be set'),
    ({**BASE, 'timeouts': {'stageSeconds': '10x'}}, 'spec.timeouts.stageSeconds: '),
    ({**BASE, 'ecs': {'containerPort': 70000}}, 'spec.ecs.containerPort: Input should be less than or equal to 65535'),
    ({**BASE, 'sourec': {}}, 'spec.sourec: Extra inputs are not permitted'),
])
def test_invalid_specs_are_described_with_the_field_path(spec, expected):
    with pytest.raises(pydantic.ValidationError) as info:
        PandaDeploySpec.model_validate(spec)
    assert describe_validation_error(info.value).startswith(expected)


def test_timeouts_take_seconds_or_durations():
    spec = PandaDeploySpec.model_validate({**BASE, 'timeouts': {'stageSeconds': '1m30s', 'totalSeconds': 900}})
    assert (spec.timeouts.stage, spec.timeouts.total) == (90, 900)


def test_secrets_resolve_or_stall_naming_field_and_key():
    spec = PandaDeploySpec.model_validate(BASE)
    found = {'gh': {'token': 'tkn-123456'}, 'aws': {'accessKeyId': 'AKID', 'secretAccessKey': 'sek-98765'}}
    creds = credentials.resolve(spec, found.get)
    assert creds.github_token == 'tkn-123456' and creds.aws.secret_access_key == 'sek-98765'
    assert 'tkn-123456' not in repr(creds) and 'sek-98765' not in repr(creds)

    with pytest.raises(Stall) as info:
        credentials.resolve(spec, {'aws': found['aws']}.get)
    assert (info.value.reason, info.value.message) == (
        'SecretNotFound', "spec.source.tokenSecretRef: Secret 'gh' not found")
    with pytest.raises(Stall) as info:
        credentials.resolve(spec, {'gh': found['gh'], 'aws': {'accessKeyId': 'AKID'}}.get)
    assert (info.value.reason, info.value.message) == (
        'SecretKeyNotFound', "spec.aws.credentialsSecretRef: Secret 'aws' has no key 'secretAccessKey'")


def test_redact_blanks_known_values_and_credential_shapes():
    text = ('clone of https://user:hunter2@github.com/o/r failed; token ghp_' + 'a' * 36 +
            ' key AKIA' + 'B' * 16 + ' Authorization: Basic eC1hY2Nlc3M= password=pw1 and s3cret-value')
    out = credentials.redact(text, ['s3cret-value'])
    for leaked in ('hunter2', 'ghp_', 'AKIA', 'eC1hY2Nlc3M', 'pw1', 's3cret-value'):
        assert leaked not in out
    assert 'github.com/o/r failed' in out


def test_last_transition_time_moves_only_when_the_status_flips():
    status = PandaDeployStatus(phase=Phase.progressing)
    conditions.summarise(status, reason='Progressing', message='a', generation=1)
    first = conditions.get(status, 'Ready')
    old = first.last_transition_time - datetime.timedelta(minutes=5)
    first.last_transition_time = old
    conditions.summarise(status, reason='Progressing', message='b', generation=1)
    assert conditions.get(status, 'Ready').last_transition_time == old
    status.phase = Phase.succeeded
    conditions.summarise(status, reason='Succeeded', message='done', generation=1)
    ready = conditions.get(status, 'Ready')
    assert ready.status == 'True' and ready.last_transition_time > old
    assert conditions.get(status, 'Reconciling') is None


def test_stalled_and_reconciling_exclude_each_other():
    status = PandaDeployStatus(phase=Phase.pending)
    conditions.summarise(status, reason='Queued', message='q', generation=2)
    assert conditions.get(status, 'Reconciling').status == 'True'
    conditions.summarise(status, reason='SecretNotFound', message='m', generation=2, stalled=True)
    assert conditions.get(status, 'Reconciling') is None
    assert conditions.get(status, 'Stalled').status == 'True'
    assert conditions.get(status, 'Ready').observed_generation == 2
