"""The CodeBuild adapter against the AWS sandbox, whose runner builds for real on the local Docker engine.

One sandbox for the module. Each build's source goes to moto's S3, the runner
executes the buildspec (docker build, docker push to the test registry),
records the push in moto's ECR and writes the log to moto's CloudWatch Logs;
every request the adapter sends and every answer the sandbox gives is checked
against botocore's model (tests/aws_contract.py). Shown: a build that passes,
one that fails (phase and log tail), one stopped mid-build, one over its
timeout, the run's build found again by a new adapter (a restarted
operator), 20 builds at once, and hostile source zips refused.
"""
from __future__ import annotations

import io
import itertools
import pathlib
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3.session
import pytest
from botocore.exceptions import ClientError

from controller.adapters import ImageBuild, RemoteBuildState
from controller.adapters.codebuild import CodeBuildBuilds, source_key
from controller.adapters.plain_registry import PlainRegistry
from controller.models import CodeBuild
from controller.sandbox.aws import AwsSandbox
from tests.aws_contract import ContractCheck

REGION = 'eu-west-1'
ROLE = 'arn:aws:iam::123456789012:role/codebuild-panda'
pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]
_serial = itertools.count(1)


@pytest.fixture(scope='module')
def sandbox() -> Iterator[AwsSandbox]:
    with AwsSandbox() as box:
        yield box


@pytest.fixture
def contract() -> Iterator[ContractCheck]:
    check = ContractCheck()
    yield check
    check.assert_clean()


def clients(box: AwsSandbox, contract: ContractCheck) -> dict[str, Any]:
    session = boto3.session.Session(aws_access_key_id='sandbox', aws_secret_access_key='sandbox', region_name=REGION)
    made = {name: session.client(name, endpoint_url=box.url) for name in ('codebuild', 's3', 'sts', 'logs', 'ecr')}
    for name in ('codebuild', 'logs'):
        contract.watch(made[name])
    return made


class Builder:
    def __init__(self, box: AwsSandbox, contract: ContractCheck, registry: str) -> None:
        self.clients = clients(box, contract)
        self.builds = CodeBuildBuilds(settings=CodeBuild(service_role_arn=ROLE), region=REGION,
                                      max_context_bytes=64 * 1024 ** 2, clients=self.clients)
        self.registry = PlainRegistry(address=registry, session=boto3.session.Session(region_name=REGION))
        self.registry._clients.update(ecr=self.clients['ecr'], sts=self.clients['sts'])  # the sandbox's

    def image(self, repository: str, run_id: str, **fields: Any) -> ImageBuild:
        uri = self.registry.ensure_repository(repository)
        return ImageBuild(run_id=run_id, repository=repository, tag='t1',
                          target=self.registry.push_target(repository_uri=uri, tag='t1'), **fields)

    def wait(self, build_id: str, *, seconds: float = 240) -> RemoteBuildState:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            state = self.builds.get(build_id)
            if state.ended:
                return state
            time.sleep(0.5)
        raise AssertionError(f'build {build_id} still running after {seconds}s')


@pytest.fixture
def builder(sandbox: AwsSandbox, contract: ContractCheck, registry: str) -> Builder:
    return Builder(sandbox, contract, registry)


def context(tmp_path: pathlib.Path, base_image: str, run: str) -> pathlib.Path:
    root = tmp_path / f'ctx{next(_serial)}'
    root.mkdir()
    (root / 'Dockerfile').write_text(f'FROM {base_image}\nARG MODE\nCOPY app.txt /app.txt\n{run}\n')
    (root / 'app.txt').write_text('hello\n')
    return root


def repository() -> str:
    return f'cb-app-{next(_serial)}-{int(time.time() * 1000) % 100000}'


def test_a_build_passes_pushes_and_its_source_is_removed(builder, contract, tmp_path, base_image):
    image = builder.image(repository(), 'dep_pass000001', build_args={'MODE': 'prod'},
                          labels={'org.opencontainers.image.revision': 'c0ffee'})
    build_id = builder.builds.start(build=image, context=context(tmp_path, base_image, 'RUN echo built-$MODE'))
    state = builder.wait(build_id)

    assert state.succeeded, (state, builder.builds.log_tail(build_id))
    assert builder.registry.find_image(repository=image.repository, tag=image.tag), 'the push is recorded in ECR'
    log = builder.builds.get(build_id) and builder.builds.log_tail(build_id)
    assert log, 'the build wrote its log to CloudWatch Logs'
    answer = builder.clients['codebuild'].batch_get_builds(ids=[build_id])['builds'][0]
    assert [p['phaseType'] for p in answer['phases']] == [
        'SUBMITTED', 'QUEUED', 'PROVISIONING', 'DOWNLOAD_SOURCE', 'INSTALL', 'PRE_BUILD', 'BUILD', 'POST_BUILD',
        'UPLOAD_ARTIFACTS', 'FINALIZING', 'COMPLETED']
    assert answer['environment']['privilegedMode'] is True
    builder.builds.remove_source(build_id)
    bucket = answer['source']['location'].split('/', 1)[0]
    with pytest.raises(ClientError):
        builder.clients['s3'].head_object(Bucket=bucket, Key=source_key(image))
    rules = builder.clients['s3'].get_bucket_lifecycle_configuration(Bucket=bucket)['Rules']
    assert rules[0]['Expiration']['Days'] == 1 and rules[0]['Status'] == 'Enabled'
    checked = {name for name in ('CreateProject', 'StartBuild', 'BatchGetBuilds', 'GetLogEvents')
               if contract.requests[name] and contract.answers[name]}
    assert checked == {'CreateProject', 'StartBuild', 'BatchGetBuilds', 'GetLogEvents'}


def test_a_failed_build_says_its_phase_and_its_log_ends_with_the_failure(builder, tmp_path, base_image):
    image = builder.image(repository(), 'dep_fail000001')
    build_id = builder.builds.start(build=image, context=context(
        tmp_path, base_image, 'RUN echo broken-step-output && exit 3'))
    state = builder.wait(build_id)

    assert (state.status, state.failed_phase) == ('FAILED', 'BUILD')
    assert state.failure and 'Error while executing command: docker build' in state.failure
    tail = builder.builds.log_tail(build_id)
    assert any('broken-step-output' in line for line in tail), tail
    assert builder.registry.find_image(repository=image.repository, tag=image.tag) is None


def test_a_stopped_build_stops(builder, tmp_path, base_image):
    image = builder.image(repository(), 'dep_stop000001')
    build_id = builder.builds.start(build=image, context=context(tmp_path, base_image, 'RUN sleep 120'))
    deadline = time.monotonic() + 120
    while builder.builds.get(build_id).phase != 'BUILD' and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    builder.builds.stop(build_id)
    state = builder.wait(build_id, seconds=30)
    assert (state.status, state.failed_phase) == ('STOPPED', 'BUILD')


def test_a_restarted_operator_finds_the_runs_build(builder, sandbox, contract, registry, tmp_path, base_image):
    image = builder.image(repository(), 'dep_find000001')
    build_id = builder.builds.start(build=image, context=context(tmp_path, base_image, 'RUN true'))
    restarted = Builder(sandbox, contract, registry)  # nothing in memory: only AWS knows the build
    assert restarted.builds.find(build=image) == build_id
    other_run = ImageBuild(run_id='dep_other00001', repository=image.repository, tag=image.tag, target=image.target)
    assert restarted.builds.find(build=other_run) is None
    assert restarted.wait(build_id).succeeded


def test_twenty_builds_at_once(builder, tmp_path, base_image):
    images = [builder.image(repository(), f'dep_many{n:06d}') for n in range(20)]
    started = [builder.builds.start(build=image, context=context(tmp_path, base_image, f'RUN echo {n}'))
               for n, image in enumerate(images)]
    assert len(set(started)) == 20
    states = [builder.wait(build_id) for build_id in started]
    assert [s.status for s in states] == ['SUCCEEDED'] * 20
    assert all(builder.registry.find_image(repository=i.repository, tag=i.tag) for i in images)


def test_a_build_over_its_timeout_is_timed_out(builder, sandbox, tmp_path, base_image, monkeypatch):
    # CodeBuild's timeoutInMinutes (60) in the sandbox's minutes: 0.05 s each, so 3 s.
    monkeypatch.setattr(sandbox.app.codebuild, 'minute_seconds', 0.05)
    image = builder.image(repository(), 'dep_time000001')
    build_id = builder.builds.start(build=image, context=context(tmp_path, base_image, 'RUN sleep 120'))
    state = builder.wait(build_id, seconds=60)
    assert (state.status, state.failed_phase) == ('TIMED_OUT', 'BUILD')
    assert state.failure == 'Build timed out after 60 minutes'


@pytest.mark.parametrize('entries', [
    [('../escaped.txt', b'x', 0o100644)],
    [('link', b'/tmp', 0o120777), ('link/escaped.txt', b'x', 0o100644)],
], ids=['dot-dot', 'through-a-symlink'])
def test_a_source_zip_cannot_write_outside_the_build_directory(builder, tmp_path, entries):
    """The runner plays CodeBuild for whoever uploads a source: a hostile zip fails DOWNLOAD_SOURCE, writing nothing."""
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, 'w') as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, data)
    s3, codebuild = builder.clients['s3'], builder.clients['codebuild']
    bucket = f'hostile-{next(_serial)}'
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={'LocationConstraint': REGION})
    s3.put_object(Bucket=bucket, Key='src.zip', Body=packed.getvalue())
    project = f'hostile-{next(_serial)}'
    codebuild.create_project(name=project, source={'type': 'S3', 'location': f'{bucket}/src.zip'},
                             artifacts={'type': 'NO_ARTIFACTS'}, serviceRole=ROLE,
                             environment={'type': 'LINUX_CONTAINER', 'image': 'i', 'computeType': 'BUILD_GENERAL1_SMALL'})
    marker = pathlib.Path('/tmp/escaped.txt')
    before = marker.exists()
    build_id = codebuild.start_build(projectName=project, buildspecOverride='version: 0.2\n')['build']['id']
    state = builder.wait(build_id, seconds=30)
    assert (state.status, state.failed_phase) == ('FAILED', 'DOWNLOAD_SOURCE')
    assert 'outside the build directory' in (state.failure or '')
    assert marker.exists() == before
