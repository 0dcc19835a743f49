"""Stages 1-2 on CodeBuild with the real adapters: the engine, real git (a token-guarded HTTP server), the AWS
sandbox whose runner builds on the local engine, and the test registry (PANDA_DEPLOY_REGISTRY).

One sandbox for the module. Shown: a run that passes (the build id in status,
Push skipped, and neither the GitHub token nor the AWS keys anywhere in the
build: its environment, buildspec, source or log); one that fails (phase and
log tail in the message); a stage timeout that stops the build; an operator
stopped mid-build whose successor follows the same build (one build in all);
and 20 resources building at once on a pool of 4 workers (the waits hold none).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import io
import logging
import pathlib
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from moto.backends import get_backend

from controller import conditions
from controller.adapters import AdapterSettings
from controller.adapters.codebuild import CodeBuildBuilds
from controller.adapters.wiring import make_adapters
from controller.credentials import AwsKeys, Credentials
from controller.egress import GitHosts
from controller.models import PandaDeploySpec, PandaDeployStatus, RunResult, StageName, StageResult
from controller.pipeline import Engine, Recorder, Run, default_stages
from controller.sandbox.aws import AwsSandbox
from tests.fakes import MemorySink
from tests.integration.githttp import serving

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = 'cb-token-5f1e9a2c7d3b'
ACCESS_KEY, SECRET_KEY = 'AKIDCODEBUILDTEST', 'cb-secret-8h6j4k2l0m'
ROLE = 'arn:aws:iam::123456789012:role/codebuild-panda'
pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]


@pytest.fixture(scope='module')
def sandbox() -> Iterator[AwsSandbox]:
    with AwsSandbox() as box:
        yield box


@pytest.fixture(scope='module')
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp('git')
    for name, extra in (('good', ''), ('broken', 'RUN echo compiling-fails-here && exit 7\n'),
                        ('slow', 'RUN sleep 120\n')):
        _repository(root, name, extra)
    with serving(root / 'repos', token=TOKEN) as server:
        yield server


def _repository(root: pathlib.Path, name: str, extra: str) -> None:
    work = root / 'work' / name
    shutil.copytree(ROOT / 'examples' / 'sample-app', work)
    with (work / 'Dockerfile').open('a') as dockerfile:
        dockerfile.write(extra)
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.test', '-C', str(work)]
    subprocess.run(['git', 'init', '-q', '-b', 'main', str(work)], check=True)
    subprocess.run([*git, 'add', '.'], check=True)
    subprocess.run([*git, 'commit', '-qm', name], check=True)
    subprocess.run(['git', 'clone', '-q', '--bare', str(work), str(root / 'repos' / f'{name}.git')], check=True)


@pytest.fixture
def env(sandbox: AwsSandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('AWS_ENDPOINT_URL', sandbox.url)
    monkeypatch.setenv('AWS_EC2_METADATA_DISABLED', 'true')


def engine(registry: str, pool: concurrent.futures.Executor) -> Engine:
    settings = AdapterSettings(registry=registry, git_hosts=GitHosts.parse('http://127.0.0.1:*'))
    return Engine(stages=default_stages(poll_seconds=0.5), adapters=functools.partial(make_adapters, settings=settings),
                  pool=pool)


def make_run(git_server: Any, name: str, base_image: str, *, status: PandaDeployStatus | None = None,
             **spec: Any) -> tuple[Run, MemorySink]:
    document = {'source': {'url': git_server.url(f'{name}.git'), 'tokenSecretRef': {'name': 'gh'},
                           'buildArgs': {'BASE_IMAGE': base_image}},
                'aws': {'region': 'eu-west-1', 'credentialsSecretRef': {'name': 'aws'}},
                'image': {'repository': spec.pop('repository', f'cb-{name}')},
                'build': {'engine': 'codeBuild', 'codeBuild': {'serviceRoleArn': ROLE}}, **spec}
    sink = MemorySink()
    recorder = Recorder(sink=sink, status=status or PandaDeployStatus(), generation=1)
    credentials = Credentials(github_token=TOKEN, aws=AwsKeys(access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY))
    run = Run(spec=PandaDeploySpec.model_validate(document), credentials=credentials, recorder=recorder,
              logger=logging.getLogger('test'))
    if status is None:
        recorder.begin()
    return run, sink


def sandbox_builds(sandbox: AwsSandbox, repository: str) -> list[Any]:
    return [b for b in sandbox.app.codebuild.builds.values() if b.project == f'panda-deploy-{repository}']


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


async def test_a_run_builds_on_codebuild_and_no_credential_reaches_the_build(
        env, sandbox, git_server, registry, base_image, pool, monkeypatch):
    uploaded: list[str] = []
    remove = CodeBuildBuilds.remove_source

    def look_then_remove(self: CodeBuildBuilds, build_id: str) -> None:
        uploaded.append(_source_listing(sandbox, sandbox.app.codebuild.builds[build_id]))
        remove(self, build_id)
    monkeypatch.setattr(CodeBuildBuilds, 'remove_source', look_then_remove)
    run, sink = make_run(git_server, 'good', base_image)
    assert await engine(registry, pool).drive(run, until=StageName.push) == RunResult.succeeded, sink.lines

    status = run.status
    (build,) = sandbox_builds(sandbox, 'cb-good')
    assert status.code_build_id == build.id and build.status == 'SUCCEEDED'
    assert status.image is not None and status.image.digest and status.image.dockerfile == 'Dockerfile'
    assert status.stage_record(StageName.push).result == StageResult.skipped
    assert uploaded and 'Dockerfile' in uploaded[0] and 'www/index.html' in uploaded[0]
    seen = [repr(build.environment), str(build.source.get('buildspec')), _log(build), *uploaded]
    for secret in (TOKEN, ACCESS_KEY, SECRET_KEY):
        assert not any(secret in text for text in seen)
    assert not _source_exists(sandbox, build), 'the source is deleted after the build'


async def test_a_failed_build_fails_the_run_with_its_phase_and_log(env, sandbox, git_server, registry, base_image,
                                                                  pool):
    run, _ = make_run(git_server, 'broken', base_image)
    assert await engine(registry, pool).drive(run, until=StageName.push) == RunResult.failed

    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'BuildFailed'
    assert 'FAILED in phase BUILD: Error while executing command: docker build' in ready.message
    assert 'compiling-fails-here' in ready.message


async def test_a_stage_timeout_stops_the_build(env, sandbox, git_server, registry, base_image, pool):
    run, _ = make_run(git_server, 'slow', base_image, timeouts={'stageSeconds': 8})
    assert await engine(registry, pool).drive(run, until=StageName.push) == RunResult.failed

    assert conditions.get(run.status, 'Ready').reason == 'StageTimeout'
    (build,) = sandbox_builds(sandbox, 'cb-slow')
    for _ in range(100):
        if build.status != 'IN_PROGRESS':
            break
        await asyncio.sleep(0.1)
    assert build.status == 'STOPPED' and build.id == run.status.code_build_id


async def test_an_operator_stopped_mid_build_is_followed_by_one_that_resumes_the_same_build(
        env, sandbox, git_server, registry, base_image, pool):
    first, _ = make_run(git_server, 'good', base_image, repository='cb-resume')
    driving = asyncio.create_task(engine(registry, pool).drive(first, until=StageName.push))
    while not first.status.code_build_id:
        await asyncio.sleep(0.05)
    driving.cancel()  # shutdown: nothing more is written, the build goes on in AWS
    with pytest.raises(asyncio.CancelledError):
        await driving

    again, _ = make_run(git_server, 'good', base_image, repository='cb-resume',
                        status=PandaDeployStatus.model_validate(first.status.dump()))
    assert await engine(registry, pool).drive(again, until=StageName.push) == RunResult.succeeded
    assert [b.id for b in sandbox_builds(sandbox, 'cb-resume')] == [first.status.code_build_id]


async def test_twenty_resources_build_at_once_on_four_workers(env, sandbox, git_server, registry, base_image, pool):
    runs = [make_run(git_server, 'good', base_image, repository=f'cb-many-{n}')[0] for n in range(20)]
    results = await asyncio.gather(*(engine(registry, pool).drive(run, until=StageName.push) for run in runs))
    assert results == [RunResult.succeeded] * 20
    assert len({run.status.code_build_id for run in runs}) == 20


def _log(build: Any) -> str:
    logs = get_backend('logs')[build.account][build.region]
    stream = logs.groups[build.log_group].streams[build.log_stream]
    return '\n'.join(str(event.message) for event in stream.events)


def _source_object(sandbox: AwsSandbox, build: Any) -> Any:
    bucket, _, key = build.source['location'].partition('/')
    return get_backend('s3')[build.account]['aws'].get_bucket(bucket).keys.get(key)


def _source_exists(sandbox: AwsSandbox, build: Any) -> bool:
    return _source_object(sandbox, build) is not None


def _source_listing(sandbox: AwsSandbox, build: Any) -> str:
    """The uploaded zip's names and contents, when it is still there (it is deleted after the build)."""
    found = _source_object(sandbox, build)
    if found is None:
        return ''
    with zipfile.ZipFile(io.BytesIO(found.value)) as archive:
        return '\n'.join(f'{n}\n{archive.read(n)!r}' for n in archive.namelist())
