"""Messages are capped where they are made and wherever they are stored, so a stranger's text (build output,
a server's error) cannot grow the status towards the API server's object size limit (1.5 MiB); and derived
names ECR would refuse are caught as an invalid spec."""
from __future__ import annotations

import datetime
import json
from typing import Any

import kubernetes
import pydantic
import pytest

from controller import conditions
from controller.errors import BuildFailed, PandaDeployError, Stall
from controller.kube import Kube
from controller.models import (
    HISTORY_MESSAGE_LIMIT,
    MESSAGE_LIMIT,
    Condition,
    HealthCheckStatus,
    HistoryEntry,
    ImageStatus,
    PandaDeploySpec,
    PandaDeployStatus,
    StageName,
    StageRecord,
    cap_message,
    describe_validation_error,
)

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


def test_a_long_message_keeps_its_beginning_and_its_end() -> None:
    text = 'docker build failed: ' + 'y' * 400_000 + '\nthe-last-words'
    capped = cap_message(text)
    assert len(capped) == MESSAGE_LIMIT
    assert capped.startswith('docker build failed: ') and capped.endswith('\nthe-last-words')
    cut = int(capped.split(' … [')[1].split(' ')[0])  # the note says how much is missing
    assert len(capped) - len(f' … [{cut} characters cut] … ') + cut == len(text)
    assert cap_message('short') == 'short'


def test_control_characters_other_than_newline_and_tab_are_blanked() -> None:
    assert cap_message('a\x00b\x1b[31mc\td\ne\x7f') == 'a b [31mc\td\ne '


def test_every_error_message_is_capped_when_made() -> None:
    assert len(PandaDeployError('x' * 100_000).message) == MESSAGE_LIMIT
    assert len(Stall('y' * 100_000).args[0]) == MESSAGE_LIMIT
    error = BuildFailed(image_name='app:1', exit_code=3, log_tail='z' * 400_000 + '\nreturned a non-zero code: 3')
    assert len(error.message) == MESSAGE_LIMIT and error.message.endswith('returned a non-zero code: 3')


def test_status_messages_are_capped_on_assignment_and_on_load() -> None:
    status = PandaDeployStatus.model_validate({'message': 'm' * 5000, 'history': [_history('h' * 5000)]})
    assert len(status.message or '') == MESSAGE_LIMIT
    assert len(status.history[0].message) == HISTORY_MESSAGE_LIMIT
    record = StageRecord(number=1, name=StageName.build, result='Failed')
    record.message = 'r' * 5000  # what the Recorder does: assignment is validated too
    assert len(record.message) == MESSAGE_LIMIT
    conditions.set_condition(status, type='Ready', value='False', reason='BuildFailed', message='c' * 5000,
                             generation=1)
    assert len(conditions.get(status, 'Ready').message) == MESSAGE_LIMIT  # type: ignore[union-attr]


def _history(message: str) -> dict[str, Any]:
    return {'deploymentId': 'dep_abcdefghij', 'generation': 1, 'result': 'Failed', 'message': message,
            'startedAt': NOW.isoformat(), 'completedAt': NOW.isoformat(), 'durationSeconds': 1.0}


def _worst_status(*, history: int, char: str) -> PandaDeployStatus:
    """Every field at its longest: messages of 400 kB, URLs and names at their schema limits."""
    big = char * 400_000
    status = PandaDeployStatus(observed_generation=7, phase='Failed', deployment_id='dep_abcdefghij', message=big,
                               code_deploy_deployment_id='d-ABCDEFGHI', promotion='p' * 300,
                               blue_url='http://' + 'b' * 2040, green_url='http://' + 'g' * 2040,
                               started_at=NOW, completed_at=NOW, duration_seconds=12345.678,
                               active_color='green')
    status.set_stage(StageName.verify)
    status.set_revision('a' * 40)
    uri = '123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/' + 'r' * 256 + ':' + 'a' * 40
    status.image = ImageStatus(uri=uri, digest='sha256:' + '0' * 64, dockerfile='d' * 1024)
    status.task_definition_arn = 'arn:aws:ecs:ap-northeast-2:123456789012:task-definition/' + 'x' * 255 + ':99'
    status.health_check = HealthCheckStatus(url='http://' + 'h' * 2040, passed=100, failed=100, total=100,
                                            latency_median_ms=1.5, latency_max_ms=2.5, error_rate=0.5)
    status.stages = [StageRecord(number=n.number, name=n, result='Failed', started_at=NOW, completed_at=NOW,
                                 message=big, reason='BuildOutputTooLarge') for n in StageName]
    status.conditions = [Condition(type=t, status='False', reason='BuildOutputTooLarge', message=big,
                                   observed_generation=7, last_transition_time=NOW)
                         for t in ('Ready', 'Reconciling', 'Stalled', *conditions.STAGE_TYPES)]
    status.history = [HistoryEntry(deployment_id='dep_abcdefghij', generation=7, revision='a' * 40, result='Failed',
                                   reason='BuildOutputTooLarge', message=big, started_at=NOW, completed_at=NOW,
                                   duration_seconds=12345.678, image_uri=uri, active_color='green',
                                   service_deployment_id='i' * 64)] * history
    return status


@pytest.mark.parametrize(('history', 'char', 'limit'), [
    (10, 'x', 64 * 1024),  # the default historyLimit, ASCII text (36 KiB)
    (10, '\U0001F600', 128 * 1024),  # 4-byte characters (90 KiB)
    (100, '\U0001F600', 256 * 1024),  # the largest historyLimit (231 KiB)
])
def test_the_whole_status_stays_far_from_the_object_size_limit(history: int, char: str, limit: int) -> None:
    stored = json.dumps(_worst_status(history=history, char=char).dump(), ensure_ascii=False).encode()
    assert len(stored) < limit < 1.5 * 1024 ** 2


def test_an_event_message_gets_the_same_cap() -> None:
    kube = Kube(kubernetes.client.ApiClient())
    sent: list[dict[str, Any]] = []
    kube.core.create_namespaced_event = lambda namespace, body, **_: sent.append(body)  # type: ignore[method-assign]
    kube.post_event(ref={'namespace': 'default', 'name': 'app', 'uid': 'u'}, type='Warning', reason='BuildFailed',
                    message='e' * 400_000 + 'the-end')
    (body,) = sent
    assert body['message'] == cap_message('e' * 400_000 + 'the-end') and body['message'].endswith('the-end')


@pytest.mark.parametrize(('source', 'derived'), [
    ({'repo': 'Foo/-bar'}, 'foo--bar'),
    ({'url': 'file:///srv/repos/x..app.git'}, 'repos-x..app'),
    ({'url': 'https://git.example/' + 'a' * 300 + '/b.git'}, 'a' * 300 + '-b'),
])
def test_a_derived_repository_name_ecr_would_refuse_is_an_invalid_spec(source: dict[str, str], derived: str) -> None:
    spec = {'source': source, 'aws': {'region': 'ap-northeast-2'}}
    with pytest.raises(pydantic.ValidationError) as info:
        PandaDeploySpec.model_validate(spec)
    message = describe_validation_error(info.value)
    assert message.startswith('spec.image.repository: must be set: the name derived from spec.source.')
    assert f'{derived!r}' in message
    assert PandaDeploySpec.model_validate({**spec, 'image': {'repository': 'fine-name'}}).repository_name == \
        'fine-name'


def test_derived_names_ecr_accepts_pass() -> None:
    spec = PandaDeploySpec.model_validate({'source': {'repo': 'Your-Org/Sample_App'}, 'aws': {'region': 'us-east-1'}})
    assert spec.repository_name == 'your-org-sample_app'
