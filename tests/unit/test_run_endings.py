"""How a run ends: an open CodeDeploy deployment is never left behind, and each end has its own reason.

The engine with the fake adapters (tests/fakes.py), as in test_pipeline.py: a run that ends for any reason
while its deployment is open stops it with rollback (a stage timeout, a failed or crashed stage, a
supersede while the deployment is being created); retries that give up say the error's reason, how many
attempts and over how long; a plain `TimeoutError` from inside a stage is a call's timeout, not the
stage's; Verify with nothing to check says what to set.
"""
from __future__ import annotations

import asyncio
import re
import time

import pytest

from controller import conditions
from controller.adapters import Traffic
from controller.errors import Transient
from controller.models import RunResult, StageName
from controller.pipeline import Done
from tests.fakes import FakeLoadBalancer
from tests.unit.test_pipeline import SPEC, engine_for, make_run, new, pool, world  # noqa: F401 (fixtures)


def deployment_statuses(world) -> list[str]:
    return [d['status'] for d in world.state()['deployments'].values()]


async def test_a_stage_timeout_in_verify_stops_the_open_deployment(world, pool):
    # Manual promotion never given: Verify waits with the deployment open until the stage limit ends the run.
    run, sink = make_run({**SPEC, 'blueGreen': {'promotion': 'manual'}, 'timeouts': {'stageSeconds': 2}})
    result = await engine_for(world, pool).drive(new(run))

    assert result == RunResult.failed
    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'StageTimeout' and ready.message.startswith('Stage 5 (Verify) timed out')
    assert len(world.calls('codedeploy.stop_deployment')) == 1
    assert deployment_statuses(world) == ['Stopped']
    assert world.state()['active'] == 'blue'
    assert any(f'CodeDeploy deployment {run.status.code_deploy_deployment_id} stopped with rollback' in line
               for line in sink.lines)


async def test_a_failed_stage_after_the_deployment_was_created_stops_it(world, pool):
    world.set_script(fail={'codedeploy.continue_deployment': {
        'reason': 'BlueGreenFailed', 'message': 'CodeDeploy ContinueDeployment failed: AccessDenied'}})
    run, _ = make_run()
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed

    assert conditions.get(run.status, 'Ready').reason == 'BlueGreenFailed'
    assert deployment_statuses(world) == ['Stopped']


async def test_an_unexpected_error_with_the_deployment_open_stops_it(world, pool, monkeypatch):
    def broken(self, *, spec):
        raise KeyError('TargetGroups')  # an adapter's surprise
    monkeypatch.setattr(FakeLoadBalancer, 'traffic', broken)
    run, _ = make_run()
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed

    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'UnexpectedError' and "KeyError: 'TargetGroups'" in ready.message
    assert run.status.stage_record(StageName.verify).reason == 'UnexpectedError'
    assert deployment_statuses(world) == ['Stopped']


async def test_a_run_superseded_while_its_deployment_is_being_created_stops_it(world, pool):
    # The run is cancelled while CreateDeployment is in flight: its id never reaches status.
    world.set_script(delay={'codedeploy.create_deployment': 1.0})
    run, _ = make_run()
    run.cancel_result = RunResult.superseded
    task = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    for _ in range(200):
        await asyncio.sleep(0.02)
        if world.calls('codedeploy.create_deployment'):
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(1.2)  # whatever the call in flight does, it has done it now

    assert run.status.code_deploy_deployment_id is None
    assert deployment_statuses(world) == ['Stopped'], 'found by the run id and stopped'
    assert len(world.calls('codedeploy.stop_deployment')) == 1
    assert run.status.history[0].result == RunResult.superseded


async def test_retries_that_give_up_fail_with_the_stage_reason_attempts_and_seconds(world, pool, monkeypatch):
    monkeypatch.setattr('controller.pipeline.engine.TRANSIENT_BACKOFF', (0.1, 0.2, 600.0))

    class Unreachable:
        name = StageName.service

        def run(self, ctx):
            raise Transient('ECS endpoint unreachable: ConnectionResetError')  # no reason of its own

    run, sink = make_run()
    assert await engine_for(world, pool, stages=(Unreachable(),)).drive(new(run)) == RunResult.failed
    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'ServiceUpdateFailed'
    assert re.fullmatch(r'ECS endpoint unreachable: ConnectionResetError \(gave up after 3 attempts over '
                        r'0\.[3-9] seconds\)', ready.message), ready.message
    assert sink.events[-1][:2] == ('Warning', 'ServiceUpdateFailed')


async def test_retries_that_give_up_keep_the_reason_the_error_named(world, pool, monkeypatch):
    monkeypatch.setattr('controller.pipeline.engine.TRANSIENT_BACKOFF', (0.05, 600.0))

    class Throttled:
        name = StageName.push

        def run(self, ctx):
            raise Transient('ECR GetAuthorizationToken failed: ThrottlingException', reason='PushFailed')

    run, _ = make_run()
    assert await engine_for(world, pool, stages=(Throttled(),)).drive(new(run)) == RunResult.failed
    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'PushFailed' and 'gave up after 2 attempts over 0.' in ready.message


async def test_a_timeout_error_raised_inside_a_stage_is_a_call_timeout_not_the_stage_limit(world, pool, monkeypatch):
    monkeypatch.setattr('controller.pipeline.engine.TRANSIENT_BACKOFF', (0.05, 0.05, 600.0))
    calls: list[float] = []

    class SocketTimeout:
        name = StageName.build

        def run(self, ctx):
            calls.append(time.monotonic())
            raise TimeoutError('The read operation timed out')  # e.g. from urllib3 or a socket

    run, _ = make_run()  # the stage limit is 600 s, far away
    assert await engine_for(world, pool, stages=(SocketTimeout(),)).drive(new(run)) == RunResult.failed
    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'CallTimeout', ready.message
    assert ready.message.startswith('A call timed out (TimeoutError: The read operation timed out)')
    assert 'gave up after 3 attempts' in ready.message and 'Stage 1 (Build) timed out' not in ready.message
    assert len(calls) == 3, 'retried with backoff like any timeout of a call'


async def test_a_timeout_error_then_success_is_retried(world, pool, monkeypatch):
    monkeypatch.setattr('controller.pipeline.engine.TRANSIENT_BACKOFF', (0.05,))
    calls: list[int] = []

    class FlakySocket:
        name = StageName.build

        def run(self, ctx):
            calls.append(1)
            if len(calls) == 1:
                raise TimeoutError('timed out')
            return Done('built')

    run, _ = make_run()
    assert await engine_for(world, pool, stages=(FlakySocket(),)).drive(new(run)) == RunResult.succeeded
    assert len(calls) == 2


async def test_verify_with_no_test_listener_and_no_url_says_what_to_set(world, pool, monkeypatch):
    def no_test_listener(self, *, spec):
        return Traffic(active_color='blue', blue_url='http://blue.example.test/', green_url=None)
    monkeypatch.setattr(FakeLoadBalancer, 'traffic', no_test_listener)
    run, sink = make_run()  # SPEC has no healthCheck.url
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed

    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'NoHealthCheckTarget', ready.message
    assert 'spec.healthCheck.url' in ready.message and 'testListenerArn' in ready.message
    assert world.calls('http.get') == [], 'nothing was checked'
    assert deployment_statuses(world) == ['Stopped'], 'and the deployment did not stay open'
    assert sink.events[-1][:2] == ('Warning', 'NoHealthCheckTarget')


async def test_a_run_cancelled_after_its_end_was_saved_keeps_that_end(world, pool):
    # The supersede comes while the succeeded run posts its final Event (its status write is done): the end
    # stands, once in history; the run is not recorded a second time as Superseded.
    run, sink = make_run()
    saved_end = asyncio.Event()
    posted = sink.event

    async def slow_final_event(*, type: str, reason: str, message: str) -> None:
        if reason == 'Succeeded':
            saved_end.set()
            await asyncio.sleep(1.0)
        await posted(type=type, reason=reason, message=message)
    sink.event = slow_final_event  # type: ignore[method-assign]
    task = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    await asyncio.wait_for(saved_end.wait(), timeout=30)
    run.cancel_result = RunResult.superseded
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert [(h.deployment_id, h.result) for h in run.status.history] == [
        (run.status.deployment_id, RunResult.succeeded)]
    assert run.status.phase.value == 'Succeeded'
    assert [s['history'][0]['result'] for s in sink.saves if s.get('history')][-1] == 'Succeeded'
    assert [e[1] for e in sink.events].count('Succeeded') == 1 and 'Superseded' not in [e[1] for e in sink.events]
