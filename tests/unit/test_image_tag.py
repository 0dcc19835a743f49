"""The image deployed is the image built from this spec (issue 12, item 3), without Docker or AWS.

The tag is a function of the commit and of what the spec builds from it; the
image's label names those inputs; the task definition names the image by
digest; and Push, under ECR's immutable tags, takes a tag pushed first by a
run with the same inputs as its own. The same against the real adapters:
tests/integration/test_image_identity.py.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import pathlib
import re
from typing import Any

from controller.adapters import Adapters, RegistryAuth
from controller.credentials import Credentials
from controller.errors import Reason, StageFailed
from controller.models import ImageStatus, PandaDeploySpec, PandaDeployStatus, RunResult, StageName
from controller.pipeline import Engine, Recorder, Run, default_stages
from controller.pipeline.build import build_identity_label, image_tag, local_tag
from controller.pipeline.service import pinned_image
from tests.fakes import FakeDocker, MemorySink, World, make_adapters

SHA = '0123456789abcdef0123456789abcdef01234567'
ECR_TAG = re.compile(r'[A-Za-z0-9_.-]{1,128}')


def spec(**source: Any) -> PandaDeploySpec:
    return PandaDeploySpec.model_validate({'source': {'repo': 'your-org/app', **source},
                                           'aws': {'region': 'us-east-1'}, 'image': {'repository': 'shared'}})


def test_all_defaults_keep_the_plain_commit_sha() -> None:
    assert image_tag(spec(), SHA) == SHA
    assert image_tag(spec(buildArgs={}), SHA) == SHA  # no build arguments is the default too
    assert local_tag(spec(), SHA) == f'shared:{SHA}'


def test_two_dockerfiles_of_one_commit_get_two_tags_that_begin_with_the_sha() -> None:
    a, b = image_tag(spec(dockerfile='svc-a/Dockerfile'), SHA), image_tag(spec(dockerfile='svc-b/Dockerfile'), SHA)
    assert a != b
    for tag in (a, b):
        assert re.fullmatch(rf'{SHA}-[0-9a-f]{{12}}', tag), tag
    assert local_tag(spec(dockerfile='svc-a/Dockerfile'), SHA) == f'shared:{a}'


def test_each_build_input_changes_the_tag() -> None:
    tags = {
        image_tag(spec(), SHA),
        image_tag(spec(dockerfile='app/Dockerfile'), SHA),
        image_tag(spec(context='app/Dockerfile'), SHA),  # the same text in another field is another build
        image_tag(spec(context='app'), SHA),
        image_tag(spec(buildArgs={'GREETING': 'one'}), SHA),
        image_tag(spec(buildArgs={'GREETING': 'two'}), SHA),
        image_tag(spec(buildArgs={'GREETING_': 'one'}), SHA),
        image_tag(spec(buildArgs={'GREETING': ''}), SHA),
    }
    assert len(tags) == 8


def test_spellings_of_the_same_build_share_a_tag() -> None:
    assert image_tag(spec(dockerfile='./svc-a//Dockerfile'), SHA) == image_tag(spec(dockerfile='svc-a/Dockerfile'), SHA)
    assert image_tag(spec(context='app/'), SHA) == image_tag(spec(context='app'), SHA)
    assert (image_tag(spec(buildArgs={'A': '1', 'B': '2'}), SHA)
            == image_tag(spec(buildArgs={'B': '2', 'A': '1'}), SHA))


def test_the_tag_is_stable_across_releases() -> None:
    """Changing the scheme would leave every image in ECR unfound: each spec would build again. The suffix is
    `printf '%s' '{"buildArgs":{"BASE_IMAGE":"base:1"},"context":null,"dockerfile":"svc-a/Dockerfile"}' | sha256sum`."""
    assert image_tag(spec(dockerfile='svc-a/Dockerfile', buildArgs={'BASE_IMAGE': 'base:1'}), SHA) == \
        f'{SHA}-4d83521219f3'


def test_the_longest_tag_fits_ecr() -> None:
    sha256_commit = 'f' * 64  # git's SHA-256 object format
    found = spec(dockerfile='d' * 1024, context='c' * 1024,
                 buildArgs={f'ARG{i}': 'v' * 4096 for i in range(64)})
    tag = image_tag(found, sha256_commit)
    assert ECR_TAG.fullmatch(tag) and len(tag) == 64 + 1 + 12


def test_the_label_names_the_build_inputs_but_not_the_argument_values() -> None:
    found = spec(dockerfile='svc-a/Dockerfile', buildArgs={'NPM_TOKEN': 'not-for-labels', 'BASE_IMAGE': 'base:1'})
    label = build_identity_label(found.source)
    assert 'not-for-labels' not in label
    document = json.loads(label)
    assert document['dockerfile'] == 'svc-a/Dockerfile' and document['context'] is None
    assert document['buildArgNames'] == ['BASE_IMAGE', 'NPM_TOKEN']
    assert image_tag(found, SHA).endswith('-' + document['sha256'][:12])


def test_the_task_definition_names_the_image_by_digest() -> None:
    digest = 'sha256:' + 'a' * 64
    image = ImageStatus(uri=f'123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:{SHA}-1f0f3b1c9d29', digest=digest)
    assert pinned_image(image) == f'123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app@{digest}'
    on_a_port = ImageStatus(uri=f'127.0.0.1:5000/app:{SHA}', digest=digest)
    assert pinned_image(on_a_port) == f'127.0.0.1:5000/app@{digest}'


# -- Push under immutable tags ------------------------------------------------------------------

class LosingTheRace(FakeDocker):
    """Another run with the same build inputs pushes the tag first; ECR refuses ours (its tags are immutable)."""
    THEIRS = 'sha256:' + 'b' * 64

    def push(self, *, tag: str, target: str, auth: RegistryAuth | None, log: Any) -> str:
        state = self.world.state()
        state['images'][target] = self.THEIRS
        self.world.save(state)
        raise StageFailed(f'push of {target} failed: tag invalid: the tag already exists and the repository is '
                          'immutable', reason=Reason.PUSH_FAILED)


class Refused(FakeDocker):
    def push(self, *, tag: str, target: str, auth: RegistryAuth | None, log: Any) -> str:
        raise StageFailed(f'push of {target} failed: denied', reason=Reason.PUSH_FAILED)


async def push_with(docker: type[FakeDocker], root: pathlib.Path) -> tuple[RunResult, Run, MemorySink]:
    def adapters(spec: PandaDeploySpec, credentials: Credentials, **_: Any) -> Adapters:
        made = make_adapters(spec, credentials, root=root)
        made.docker = docker(World(root))
        return made
    sink = MemorySink()
    recorder = Recorder(sink=sink, status=PandaDeployStatus(), generation=1)
    run = Run(spec=spec(buildArgs={'BASE_IMAGE': 'base:1'}), credentials=Credentials(), recorder=recorder,
              logger=logging.getLogger('test'))
    recorder.begin()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        engine = Engine(stages=default_stages(poll_seconds=0.05), adapters=adapters, pool=pool)
        result = await engine.drive(run, until=StageName.push)
    return result, run, sink


async def test_a_tag_pushed_first_by_a_run_with_the_same_inputs_is_taken_as_ours(tmp_path: pathlib.Path) -> None:
    result, run, sink = await push_with(LosingTheRace, tmp_path)

    assert result == RunResult.succeeded, sink.lines
    image = run.status.image
    assert image is not None and image.digest == LosingTheRace.THEIRS
    assert image.uri is not None and image.uri.endswith(':' + image_tag(run.spec, run.status.revision or ''))
    assert any('pushed meanwhile by a run with the same build inputs' in line for line in sink.lines), sink.lines


async def test_a_refused_push_with_nothing_under_the_tag_still_fails(tmp_path: pathlib.Path) -> None:
    result, run, sink = await push_with(Refused, tmp_path)

    assert result == RunResult.failed
    record = run.status.stage_record(StageName.push)
    assert record is not None and record.reason == Reason.PUSH_FAILED and 'denied' in record.message
