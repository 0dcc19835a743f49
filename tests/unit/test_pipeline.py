"""The stage engine with fake adapters: order, records, failures, timeouts, resume, redaction."""
from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import functools
import logging
import pathlib
import re
import time
from typing import Any

import pytest

from controller import conditions, metrics
from controller.credentials import AwsKeys, Credentials
from controller.errors import Stall, Transient
from controller.models import PandaDeploySpec, PandaDeployStatus, Phase, RunResult, StageName, StageResult
from controller.pipeline import Done, Engine, Recorder, Run, Wait, default_stages
from tests.fakes import MemorySink, World, make_adapters

SPEC = {
    'source': {'repo': 'your-org/sample-app', 'branch': 'main'},
    'aws': {'region': 'ap-northeast-2'},
    'healthCheck': {'checks': 3, 'intervalSeconds': 0},
}



@pytest.fixture
def world(tmp_path: pathlib.Path) -> World:
    return World(tmp_path / 'world')


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


NO_CREDENTIALS = Credentials()


def make_run(spec: dict[str, Any] = SPEC, *, status: PandaDeployStatus | None = None,
             creds: Credentials = NO_CREDENTIALS, generation: int = 1) -> tuple[Run, MemorySink]:
    sink = MemorySink()
    recorder = Recorder(sink=sink, status=status or PandaDeployStatus(), generation=generation)
    run = Run(spec=PandaDeploySpec.model_validate(spec), credentials=creds, recorder=recorder,
              logger=logging.getLogger('test'))
    return run, sink


def engine_for(world: World, pool: concurrent.futures.Executor, **kwargs: Any) -> Engine:
    factory = functools.partial(make_adapters, root=world.root)
    return Engine(stages=kwargs.pop('stages', default_stages(poll_seconds=0.05)), adapters=factory,
                  pool=pool, **kwargs)


def new(run: Run) -> Run:
    run.recorder.begin()
    return run


async def test_a_run_passes_six_stages_in_order_and_records_each(world, pool):
    run, sink = make_run()
    result = await engine_for(world, pool).drive(new(run))

    assert result == RunResult.succeeded
    status = run.status
    assert [r.name for r in status.stages] == list(StageName)
    assert all(r.result == StageResult.succeeded for r in status.stages)
    assert status.phase == Phase.succeeded
    assert status.deployment_id and status.deployment_id.startswith('dep_') and len(status.deployment_id) == 14
    assert status.revision and len(status.revision) == 40
    assert status.image and status.image.uri.endswith(f'/your-org-sample-app:{status.revision}')
    assert status.image.digest.startswith('sha256:')
    assert status.task_definition_arn.endswith(':1')
    assert status.code_deploy_deployment_id == 'd-FAKE00001'
    assert status.active_color == 'green'
    assert status.health_check.passed == 3 and status.health_check.error_rate == 0
    ready = conditions.get(status, 'Ready')
    assert ready.status == 'True' and status.revision[:7] in ready.message
    assert conditions.get(status, 'Reconciling') is None and conditions.get(status, 'Stalled') is None
    assert [c.type for c in status.conditions] == ['Ready'] + [n.value for n in StageName]
    assert status.history[0].result == RunResult.succeeded
    reasons = [reason for _, reason, _ in sink.events]
    # The last stage's Event is the run's final one ("... deployed; green is active").
    assert reasons == ['Started', 'BuildSucceeded', 'PushSucceeded', 'ServiceSucceeded', 'BlueGreenSucceeded',
                       'VerifySucceeded', 'Succeeded']
    assert 'green is active' in sink.events[-1][2]
    assert any('[Stage 1] Dockerfile found: Dockerfile' in line for line in sink.lines)
    assert any('[Stage 5] HealthCheck in progress - Check 3/3' in line for line in sink.lines)
    # Build and Push, whose ends bring the image, are saved as done before the next stage appears in a save;
    # the other stages' ids were saved while they ran, and their ends travel with the next write.
    for k in (0, 1):
        done = next(i for i, s in enumerate(sink.saves)
                    if len(s['stages']) > k and s['stages'][k]['result'] == 'Succeeded')
        assert all(len(s['stages']) <= k + 1 for s in sink.saves[:done + 1]), k
    assert sink.saves[0]['revision'] == status.revision and sink.saves[0]['stageName'] == 'Build'
    td_saved = next(s for s in sink.saves if s.get('taskDefinitionArn'))
    assert td_saved['stageName'] == 'Service' and not td_saved.get('codeDeployDeploymentId')
    # The write budget (issue 7: at most 20 API writes per deployment, 2 of them Kopf's): the revision,
    # Build's and Push's ends, the task definition, the deployment, Verify's first wait, the checks' result
    # (before traffic moves), and the end; 7 Events. Plus the check count while the checks run (issue 14 item 7,
    # controller/pipeline/progress.py): check 1/3 rides Verify's first wait, 3/3 the checks' result, 2/3 is one
    # write of its own.
    assert len(sink.saves) == 9 and len(sink.events) == 7
    assert [s['message'] for s in sink.saves if 'Check' in s.get('message', '')] == [
        'HealthCheck in progress - Check 1/3', 'HealthCheck in progress - Check 2/3',
        'HealthCheck in progress - Check 3/3']


async def test_a_run_that_finds_everything_done_writes_its_status_once_and_no_event(world, pool):
    first, _ = make_run()
    assert await engine_for(world, pool).drive(new(first)) == RunResult.succeeded
    builds, registered = len(world.calls('docker.build')), len(world.calls('ecs.registered'))
    checks = len(world.calls('http.get'))
    # generation 2: a spec change that leaves the commit, the image and the task definition as they are
    run, sink = make_run(status=PandaDeployStatus.model_validate(first.status.dump()), generation=2)
    assert await engine_for(world, pool).drive(new(run)) == RunResult.succeeded

    assert [r.result for r in run.status.stages] == [StageResult.skipped] * 5 + [StageResult.succeeded]
    assert len(sink.saves) == 1 and sink.events == []
    assert 'already deployed' in run.status.message and 'nothing to do' in run.status.message
    assert conditions.get(run.status, 'Ready').status == 'True'
    assert run.status.observed_generation == 2 and run.status.history[0].result == RunResult.succeeded
    assert len(world.calls('docker.build')) == builds and len(world.calls('ecs.registered')) == registered
    assert len(world.calls('http.get')) == checks  # that image passed its checks in the first run
    assert 'passed its checks in run' in run.status.stage_record(StageName.verify).message


async def test_a_queued_run_that_finds_everything_done_still_ends_with_an_event(world, pool):
    first, _ = make_run()
    assert await engine_for(world, pool).drive(new(first)) == RunResult.succeeded
    run, sink = make_run(status=PandaDeployStatus.model_validate(first.status.dump()), generation=2)
    recorder = new(run).recorder
    await recorder.queued(ahead=1)  # its Queued Event is out: the run's end is announced as well
    assert await engine_for(world, pool).drive(run) == RunResult.succeeded
    assert [reason for _, reason, _ in sink.events] == ['Queued', 'Started', 'BuildSkipped', 'PushSkipped',
                                                       'ServiceSkipped', 'BlueGreenSkipped', 'VerifySkipped',
                                                       'Succeeded']


async def test_a_stall_is_saved_each_time_and_announced_only_when_it_is_news():
    sink = MemorySink()
    recorder = Recorder(sink=sink, status=PandaDeployStatus(), generation=3)
    missing = Stall("spec.source.tokenSecretRef: Secret 'gh' not found", reason='SecretNotFound')
    await recorder.stalled(missing)
    await recorder.stalled(missing)  # looked again with backoff: the same news
    assert len(sink.saves) == 2 and [reason for _, reason, _ in sink.events] == ['SecretNotFound']
    stalled = conditions.get(recorder.status, 'Stalled')
    assert (stalled.status, stalled.reason, stalled.observed_generation) == ('True', 'SecretNotFound', 3)
    assert recorder.status.phase == Phase.pending and conditions.get(recorder.status, 'Reconciling') is None
    await recorder.stalled(Stall("spec.source.tokenSecretRef: Secret 'gh' has no key 'token'",
                                 reason='SecretKeyNotFound'))
    assert [reason for _, reason, _ in sink.events] == ['SecretNotFound', 'SecretKeyNotFound']
    assert not recorder.written  # written before the run could start: not the run's own writing


async def test_checks_run_again_when_the_last_run_did_not_succeed(world, pool):
    first, _ = make_run()
    assert await engine_for(world, pool).drive(new(first)) == RunResult.succeeded
    status = PandaDeployStatus.model_validate(first.status.dump())
    status.history[0].result = RunResult.failed  # e.g. the previous run failed its checks
    run, sink = make_run(status=status, generation=2)
    checks = len(world.calls('http.get'))
    assert await engine_for(world, pool).drive(new(run)) == RunResult.succeeded
    assert run.status.stage_record(StageName.verify).result == StageResult.succeeded
    assert len(world.calls('http.get')) == checks + 3 and sink.events[-1][1] == 'Succeeded'


async def test_the_temporary_clone_is_removed(world, pool):
    run, _ = make_run()
    await engine_for(world, pool).drive(new(run))
    clone = pathlib.Path(world.calls('git.checkout.dir')[0]['path'])
    assert not clone.exists() and not clone.parent.exists()


async def test_a_failing_stage_ends_the_run_failed_with_its_reason(world, pool):
    world.set_script(fail={'ecs.ensure_service': 'cluster panda-cluster not found'})
    before = metrics.STAGE_FAILURES.labels(stage='Service', reason='ServiceUpdateFailed')._value.get()
    run, sink = make_run()
    result = await engine_for(world, pool).drive(new(run))

    assert result == RunResult.failed
    status = run.status
    assert status.phase == Phase.failed
    assert [r.result for r in status.stages] == [StageResult.succeeded] * 2 + [StageResult.failed]
    ready = conditions.get(status, 'Ready')
    assert (ready.status, ready.reason) == ('False', 'ServiceUpdateFailed')
    assert 'panda-service' in ready.message and 'panda-cluster' in ready.message
    assert conditions.get(status, 'Service').status == 'False'
    assert sink.events[-1][:2] == ('Warning', 'ServiceUpdateFailed')
    assert metrics.STAGE_FAILURES.labels(stage='Service', reason='ServiceUpdateFailed')._value.get() == before + 1
    assert world.calls('codedeploy.create_deployment') == []


async def test_a_failed_health_check_stops_the_deployment_and_keeps_blue(world, pool):
    world.set_script(health=[200, 503, 200])
    run, sink = make_run()
    result = await engine_for(world, pool).drive(new(run))

    assert result == RunResult.failed
    assert len(world.calls('codedeploy.stop_deployment')) == 1
    assert world.calls('codedeploy.continue_deployment') == []
    assert world.state()['active'] == 'blue'
    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'HealthCheckFailed' and '1/3' in ready.message and 'green.example.test' in ready.message
    assert ready.message.endswith('(HTTP 503); rolled back, production traffic unchanged'), ready.message
    assert run.status.health_check.failed == 1


async def test_a_stage_over_its_limit_fails_with_stage_timeout(world, pool):
    world.set_script(delay={'docker.build': 30})
    run, sink = make_run({**SPEC, 'timeouts': {'stageSeconds': 1}})
    result = await engine_for(world, pool).drive(new(run))

    assert result == RunResult.failed
    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'StageTimeout'
    assert ready.message.startswith('Stage 1 (Build) timed out after 1 seconds (timeout: 1 seconds)')
    assert world.calls('docker.build:cancelled'), 'the build was told to stop'


class SlowToStop:
    """Stage 1 that works until the engine gives up on it, then takes `stopping` seconds to stop (a git tree
    killed at its next poll, a checkout removed)."""
    name = StageName.build

    def __init__(self, stopping: float) -> None:
        self.stopping, self.order = stopping, []

    def run(self, ctx):
        ctx.cancel.wait(30)
        time.sleep(self.stopping)
        self.order.append('stopped')
        return Done('never used')


class OrderSink(MemorySink):
    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.order = order

    async def save(self, status: PandaDeployStatus) -> None:
        await super().save(status)
        self.order.append(f'saved {status.phase.value if status.phase else None}')


async def test_a_timed_out_stage_has_stopped_its_work_before_the_run_is_recorded_failed(world, pool):
    stage = SlowToStop(stopping=0.5)
    run, _ = make_run({**SPEC, 'timeouts': {'stageSeconds': 1}})
    run.recorder.sink = OrderSink(stage.order)
    result = await engine_for(world, pool, stages=[stage]).drive(new(run))
    assert result == RunResult.failed
    assert conditions.get(run.status, 'Ready').reason == 'StageTimeout'
    assert 'stopped' in stage.order and stage.order.index('stopped') < stage.order.index('saved Failed'), stage.order


async def test_a_stage_that_does_not_stop_delays_the_failure_no_longer_than_the_grace(world, pool, monkeypatch):
    monkeypatch.setattr('controller.pipeline.engine.STOP_GRACE_SECONDS', 0.3)
    stage = SlowToStop(stopping=5)
    run, _ = make_run({**SPEC, 'timeouts': {'stageSeconds': 1}})
    run.recorder.sink = OrderSink(stage.order)
    started = time.monotonic()
    result = await engine_for(world, pool, stages=[stage]).drive(new(run))
    took = time.monotonic() - started
    assert result == RunResult.failed and 'stopped' not in stage.order, stage.order
    assert took < 3, f'{took:.1f}s'


async def test_the_total_limit_ends_the_run_at_whichever_stage(world, pool):
    run, _ = make_run({**SPEC, 'timeouts': {'stageSeconds': 600, 'totalSeconds': 5}})
    world.set_script(delay={'docker.build': 3})
    run.recorder.begin()
    run.status.started_at = conditions.now() - datetime.timedelta(seconds=4)
    result = await engine_for(world, pool).drive(run)
    assert result == RunResult.failed
    message = conditions.get(run.status, 'Ready').message
    assert message.startswith('Deployment timed out at stage 1 (Build) after')
    assert message.endswith('(timeout: 5 seconds)')


async def test_a_resumed_run_skips_recorded_stages_and_reruns_the_interrupted_one(world, pool):
    run, _ = make_run()
    await engine_for(world, pool, stages=default_stages(poll_seconds=0.05)).drive(new(run), until=StageName.push)
    builds = len(world.calls('docker.build'))
    # As if the operator died during stage 3: stages 1-2 recorded, 3 running.
    status = PandaDeployStatus.model_validate(run.status.dump())
    status.phase = Phase.progressing
    status.stages = status.stages[:2]
    resumed, sink = make_run(status=status)
    result = await engine_for(world, pool).drive(resumed)

    assert result == RunResult.succeeded
    assert len(world.calls('docker.build')) == builds == 1
    assert len(world.calls('docker.push')) == 1
    assert resumed.status.deployment_id == run.status.deployment_id
    assert sink.events[0][1] == 'Resumed'


async def test_an_image_already_in_the_registry_skips_clone_and_build(world, pool):
    first, _ = make_run()
    await engine_for(world, pool).drive(new(first))
    second, sink = make_run()
    await engine_for(world, pool).drive(new(second))

    assert len(world.calls('docker.build')) == 1 and len(world.calls('git.checkout')) == 1
    assert [r.result for r in second.status.stages[:2]] == [StageResult.skipped] * 2
    assert 'already in the registry' in second.status.stages[0].message
    assert len(world.calls('ecs.registered')) == 1, 'same task definition: no new revision'


async def test_transient_errors_are_retried_with_backoff(world, pool, monkeypatch):
    monkeypatch.setattr('controller.pipeline.engine.TRANSIENT_BACKOFF', (0.1, 0.2))
    calls: list[float] = []

    class Flaky:
        name = StageName.build

        def run(self, ctx):
            calls.append(time.monotonic())
            if len(calls) < 3:
                raise Transient('ThrottlingException: Rate exceeded', reason='PushFailed')
            return Done('ok')

    run, _ = make_run()
    result = await engine_for(world, pool, stages=(Flaky(),)).drive(new(run))
    assert result == RunResult.succeeded
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.1 and calls[2] - calls[1] >= 0.2


async def test_a_timeout_after_retried_errors_names_the_last_error(world, pool, monkeypatch):
    monkeypatch.setattr('controller.pipeline.engine.TRANSIENT_BACKOFF', (0.1,))
    calls: list[float] = []

    class ThrottledThenHung:
        name = StageName.service

        def run(self, ctx):
            calls.append(time.monotonic())
            if len(calls) == 1:
                raise Transient('ECS RegisterTaskDefinition failed: ThrottlingException: Rate exceeded',
                                reason='ServiceUpdateFailed')
            time.sleep(5)  # the retry hangs past the stage limit
            return Done('too late')

    # Stage starts are kept to the second, so a 3 s limit leaves 2 s or more for the retry after 0.1 s.
    run, _ = make_run({**SPEC, 'timeouts': {'stageSeconds': 3}})
    result = await engine_for(world, pool, stages=(ThrottledThenHung(),)).drive(new(run))
    assert result == RunResult.failed and len(calls) == 2
    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'StageTimeout'
    assert re.fullmatch(r'Stage 3 \(Service\) timed out after [34] seconds \(timeout: 3 seconds\); last error: '
                        r'ECS RegisterTaskDefinition failed: ThrottlingException: Rate exceeded', ready.message)


async def test_waits_poll_without_holding_a_thread(world):
    polls: list[int] = []

    class Slow:
        name = StageName.build

        def run(self, ctx):
            polls.append(1)
            ctx.scratch['polls'] = ctx.scratch.get('polls', 0) + 1
            return Done('ready') if ctx.scratch['polls'] == 3 else Wait(0.05)

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as one_thread:
        engine = engine_for(world, one_thread, stages=(Slow(),))
        runs = [make_run()[0] for _ in range(2)]
        results = await asyncio.gather(*(engine.drive(new(r)) for r in runs))
    assert results == [RunResult.succeeded] * 2 and len(polls) == 6


async def test_secrets_never_reach_status_events_or_progress(world, pool):
    token, secret = 'tok-3f9a8b7c6d5e', 'aws-secret-9q8w7e6r5t'
    world.set_script(fail={'ecs.register_task_definition': {
        'reason': 'ServiceUpdateFailed', 'message': f'denied for {token} and {secret}'}})
    run, sink = make_run(creds=Credentials(github_token=token, aws=AwsKeys('AKIDFAKE', secret)))
    await engine_for(world, pool).drive(new(run))
    text = repr(sink.saves) + repr(sink.events) + repr(sink.lines) + repr(run.credentials)
    assert token not in text and secret not in text
    assert 'denied for *** and ***' in conditions.get(run.status, 'Ready').message


async def test_cancellation_is_recorded_as_superseded(world, pool):
    world.set_script(delay={'docker.build': 10})
    run, sink = make_run()
    run.cancel_result = RunResult.superseded
    task = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert run.status.stages[0].result == StageResult.cancelled
    assert run.status.history[0].result == RunResult.superseded
    assert run.status.phase == Phase.pending


async def test_a_first_rollout_creates_the_service_and_checks_production_without_a_deployment(world, pool):
    state = world.state()
    state['services'] = {}
    world.save(state)
    run, sink = make_run()
    result = await engine_for(world, pool).drive(new(run))

    assert result == RunResult.succeeded
    records = {r.name: r for r in run.status.stages}
    assert records[StageName.blue_green].result == StageResult.skipped
    assert 'no deployment needed' in records[StageName.blue_green].message
    assert world.calls('codedeploy.create_deployment') == []
    assert run.status.code_deploy_deployment_id is None
    assert run.status.health_check.url == 'http://blue.example.test/'  # production: blue is active
    assert run.status.active_color == 'blue'


async def test_the_same_image_again_makes_no_new_revision_and_no_new_deployment(world, pool):
    first, _ = make_run()
    await engine_for(world, pool).drive(new(first))
    again, _ = make_run({**SPEC, 'healthCheck': {'checks': 2, 'intervalSeconds': 0}})
    result = await engine_for(world, pool).drive(new(again))

    assert result == RunResult.succeeded
    assert len(world.calls('ecs.registered')) == 1
    assert len(world.calls('codedeploy.create_deployment')) == 1
    assert again.status.stage_record(StageName.blue_green).result == StageResult.skipped


async def test_manual_promotion_waits_for_an_approval_naming_this_run(world, pool):
    approval: list[str | None] = [None]  # the promote annotation's value
    run, sink = make_run({**SPEC, 'blueGreen': {'promotion': 'manual'}})
    run.approval = lambda: approval[0]
    task = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    await asyncio.sleep(1.5)
    assert not task.done()
    assert run.status.stage_name == StageName.verify
    this_run = run.status.deployment_id
    promote = 'deploy.panda.dev/promote'
    assert run.status.promotion == f'Green passed 3/3 checks; annotate {promote}={this_run} to shift traffic'
    for approval[0], says in [('true', f'{promote}=true names no run (it takes a deploymentId)'),
                              ('dep_0ther0run0', f'{promote} names dep_0ther0run0, not this run {this_run}')]:
        await asyncio.sleep(0.3)
        assert run.status.promotion == f'Green passed 3/3 checks; {says}; annotate with {this_run} to shift traffic'
    assert world.calls('codedeploy.continue_deployment') == []
    assert [save.get('promotion') is not None for save in sink.saves].count(True) == 3, 'each refusal written once'
    approval[0] = this_run
    assert await asyncio.wait_for(task, 10) == RunResult.succeeded
    assert run.status.promotion is None and len(world.calls('codedeploy.continue_deployment')) == 1


async def test_a_run_interrupted_by_shutdown_records_nothing_and_resumes(world, pool):
    world.set_script(delay={'docker.push': 10})
    run, sink = make_run()
    task = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    await asyncio.sleep(0.5)
    saves = len(sink.saves)
    task.cancel()  # cancel_result None: the operator is stopping
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(sink.saves) == saves and run.status.phase == Phase.progressing and run.status.history == []
    world.set_script()
    resumed, _ = make_run(status=PandaDeployStatus.model_validate(run.status.dump()))
    assert await engine_for(world, pool).drive(resumed) == RunResult.succeeded
    assert len(world.calls('docker.build')) == 1


async def test_a_superseded_run_stops_its_open_deployment_with_rollback(world, pool):
    world.set_script(ready_after=30)
    run, _ = make_run()
    run.cancel_result = RunResult.superseded
    task = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if run.status.code_deploy_deployment_id:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(world.calls('codedeploy.stop_deployment')) == 1
    assert world.state()['deployments'][run.status.code_deploy_deployment_id]['status'] == 'Stopped'


async def test_a_new_service_is_checked_once_it_first_answers(world, pool):
    state = world.state()
    state['services'] = {}
    world.save(state)
    world.set_script(health=[503, 503, 200, 200, 200])  # tasks starting, then healthy
    run, sink = make_run()
    result = await engine_for(world, pool).drive(new(run))

    assert result == RunResult.succeeded
    assert sum('Waiting for http://blue.example.test/ to answer (HTTP 503)' in line for line in sink.lines) == 2
    assert run.status.health_check.passed == 3 and run.status.health_check.failed == 0
    assert len(world.calls('http.get')) == 5, 'two waits, then the first good answer counts as check 1'
