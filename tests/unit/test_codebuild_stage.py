"""Stage 1 on CodeBuild, with the engine and the fake adapters (tests/fakes.py), as in test_pipeline.py.

The build is started once and its id recorded at once; it is polled, not waited on in a thread; its image is
taken from the registry (Push skips); a failure names the phase and the log's last lines; the stage limit,
a failed run and a supersede stop the build; a restarted operator follows the recorded build, or finds the
one it started before the status write, and never starts a second; the source object is removed.
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controller import conditions
from controller.adapters import ImageBuild
from controller.credentials import Credentials
from controller.models import MESSAGE_LIMIT, PandaDeployStatus, RunResult, StageName, StageResult
from controller.pipeline.build import image_tag
from tests.fakes import FakeBuilds, FakeRegistry
from tests.unit.test_pipeline import SPEC, engine_for, make_run, new, pool, world  # noqa: F401 (fixtures)

ROLE = 'arn:aws:iam::123456789012:role/codebuild'
CODEBUILD_SPEC: dict[str, Any] = {**SPEC, 'build': {'engine': 'codeBuild', 'codeBuild': {'serviceRoleArn': ROLE}}}


def builds(world) -> dict[str, Any]:
    return world.state().get('builds', {})


async def test_a_codebuild_build_passes_and_push_finds_its_image(world, pool):
    world.set_script(codebuild={'polls': 3}, files={'Dockerfile': 'FROM scratch\n', 'app.py': 'print()\n',
                                                      'secret.env': 'x', '.dockerignore': '*.env\n'})
    run, sink = make_run({**CODEBUILD_SPEC, 'source': {**SPEC['source'], 'buildArgs': {'MODE': 'prod'}}})
    assert await engine_for(world, pool).drive(new(run)) == RunResult.succeeded

    assert len(world.calls('codebuild.start')) == 1 and not world.calls('docker.build')
    assert not world.calls('docker.push')
    (build_id, build), = builds(world).items()
    assert run.status.code_build_id == build_id
    assert build['status'] == 'SUCCEEDED' and build['source'] is False  # the uploaded source was removed
    assert build['files'] == ['.dockerignore', 'Dockerfile', 'app.py']  # .dockerignore honoured
    assert build['labels']['org.opencontainers.image.revision'] == run.status.revision
    assert build['labels']['dev.panda.deploy.deployment-id'] == run.status.deployment_id
    assert build['build_args'] == {'MODE': 'prod'}
    assert run.status.image is not None and run.status.image.digest and run.status.image.dockerfile == 'Dockerfile'
    assert run.status.image.uri.endswith(':' + image_tag(run.spec, run.status.revision))
    assert run.status.stage_record(StageName.push).result == StageResult.skipped
    assert len(world.calls('codebuild.get')) >= 4  # polled until it ended
    assert any(f'CodeBuild build {build_id} started' in line for line in sink.lines)


async def test_a_failed_build_names_its_phase_and_the_last_lines_of_its_log(world, pool):
    world.set_script(codebuild={'polls': 1, 'result': 'FAILED', 'failed_phase': 'BUILD',
                                'failure': 'Error while executing command: docker build. Reason: exit status 1',
                                'log': [f'step {n}' for n in range(30)] + ['RUN make: exit code 2']})
    run, _ = make_run(CODEBUILD_SPEC)
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed

    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'BuildFailed'
    assert 'FAILED in phase BUILD: Error while executing command: docker build' in ready.message
    assert ready.message.endswith('step 29 | RUN make: exit code 2') and 'step 20 ' not in ready.message
    assert not world.calls('codebuild.stop')  # it ended by itself
    assert all(b['source'] is False for b in builds(world).values())


async def test_a_stage_timeout_stops_the_build(world, pool):
    world.set_script(codebuild={'polls': 10_000})
    run, sink = make_run({**CODEBUILD_SPEC, 'timeouts': {'stageSeconds': 1}})
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed

    assert conditions.get(run.status, 'Ready').reason == 'StageTimeout'
    assert [c['id'] for c in world.calls('codebuild.stop')] == [run.status.code_build_id]
    assert [b['status'] for b in builds(world).values()] == ['STOPPED']
    assert any(f'CodeBuild build {run.status.code_build_id} stopped' in line for line in sink.lines)


async def test_a_superseded_run_stops_its_build(world, pool):
    world.set_script(codebuild={'polls': 10_000})
    run, _ = make_run(CODEBUILD_SPEC)
    driving = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    while not run.status.code_build_id:
        await asyncio.sleep(0.02)
    run.cancel_result = RunResult.superseded
    driving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await driving

    assert [b['status'] for b in builds(world).values()] == ['STOPPED']
    assert run.status.history[0].result == RunResult.superseded


async def test_a_restarted_operator_follows_the_recorded_build(world, pool):
    world.set_script(codebuild={'polls': 10_000})
    first, _ = make_run({**CODEBUILD_SPEC, 'timeouts': {'stageSeconds': 600}})
    driving = asyncio.create_task(engine_for(world, pool).drive(new(first)))
    while not first.status.code_build_id:
        await asyncio.sleep(0.02)
    driving.cancel()  # the operator stops: interrupted, nothing written, the build left running
    with pytest.raises(asyncio.CancelledError):
        await driving
    assert [b['status'] for b in builds(world).values()] == ['IN_PROGRESS']

    world.set_script(codebuild={'polls': 0})
    again, _ = make_run(CODEBUILD_SPEC, status=PandaDeployStatus.model_validate(first.status.dump()))
    assert await engine_for(world, pool).drive(again) == RunResult.succeeded
    assert len(world.calls('codebuild.start')) == 1 and again.status.code_build_id == first.status.code_build_id


async def test_a_build_started_before_a_lost_status_write_is_found_not_started_again(world, pool):
    run, _ = make_run(CODEBUILD_SPEC)
    new(run)
    revision = 'a' * 40
    run.status.set_revision(revision)
    # The operator died between StartBuild and the status write: only AWS knows the build.
    repository, tag = run.spec.repository_name, image_tag(run.spec, revision)
    target = f'{FakeRegistry(world, "ap-northeast-2").ensure_repository(repository)}:{tag}'
    started = FakeBuilds(world).start(build=ImageBuild(
        run_id=run.status.deployment_id or '', repository=repository, tag=tag, target=target), context=_context(world))
    world.set_script(codebuild={'polls': 0})
    assert await engine_for(world, pool).drive(run) == RunResult.succeeded
    assert len(world.calls('codebuild.start')) == 1 and run.status.code_build_id == started


async def test_an_image_already_in_the_registry_starts_no_build(world, pool):
    first, _ = make_run(CODEBUILD_SPEC)
    assert await engine_for(world, pool).drive(new(first)) == RunResult.succeeded
    again, _ = make_run(CODEBUILD_SPEC, generation=2)
    assert await engine_for(world, pool).drive(new(again)) == RunResult.succeeded
    assert len(world.calls('codebuild.start')) == 1
    assert again.status.stage_record(StageName.build).result == StageResult.skipped


def _context(world):
    path = world.root / 'context'
    path.mkdir(parents=True, exist_ok=True)
    (path / 'Dockerfile').write_text('FROM scratch\n')
    return path


async def test_a_run_superseded_while_its_build_is_being_started_stops_the_build(world, pool):
    # StartBuild is in flight when the run is cancelled: its id never reaches status (the stage was abandoned).
    world.set_script(delay={'codebuild.start': 1.0}, codebuild={'polls': 10_000})
    run, _ = make_run(CODEBUILD_SPEC)
    run.cancel_result = RunResult.superseded
    driving = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    for _ in range(200):
        await asyncio.sleep(0.02)
        if world.calls('codebuild.start'):
            break
    driving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await driving

    assert run.status.code_build_id is None
    assert [b['status'] for b in builds(world).values()] == ['STOPPED'], 'found by its source key and stopped'
    assert len(world.calls('codebuild.stop')) == 1


async def test_a_secret_in_the_build_log_is_blanked_in_status_and_the_message_is_capped(world, pool):
    token = 'ghp_secret0123456789abcdef'
    world.set_script(codebuild={'polls': 0, 'result': 'FAILED', 'failed_phase': 'BUILD', 'failure': 'x' * 5000,
                                'log': ['y' * 2000, f'echo {token}']})  # the token last: kept by the cap
    run, _ = make_run(CODEBUILD_SPEC, creds=Credentials(github_token=token))
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed

    ready = conditions.get(run.status, 'Ready')
    assert token not in ready.message and token not in (run.status.message or '')
    assert len(ready.message) <= MESSAGE_LIMIT and ready.message.endswith('echo ***')
