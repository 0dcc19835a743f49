"""Stages 3-6 with ECS's own deployments (spec.rollout BlueGreen, Canary, Linear), against fake adapters."""
from __future__ import annotations

import asyncio

import pytest

from controller import conditions
from controller.models import PandaDeploySpec, PandaDeployStatus, Phase, RunResult, StageName, StageResult
from tests.unit.test_pipeline import SPEC, engine_for, make_run, new, pool, world  # noqa: F401 (fixtures)

ARN = 'arn:aws:elasticloadbalancing:ap-northeast-2:123456789012'
LOAD_BALANCER = {
    'targetGroupArn': f'{ARN}:targetgroup/blue/1', 'alternateTargetGroupArn': f'{ARN}:targetgroup/green/2',
    'productionListenerRuleArn': f'{ARN}:listener-rule/app/lb/3/4/5',
    'testListenerRuleArn': f'{ARN}:listener-rule/app/lb/3/6/7',
    'roleArn': 'arn:aws:iam::123456789012:role/ecs-infrastructure'}
ECS_SPEC = {**SPEC, 'rollout': {'loadBalancer': LOAD_BALANCER}}


def ecs_spec(**rollout: object) -> dict[str, object]:
    return {**SPEC, 'rollout': {'loadBalancer': LOAD_BALANCER, **rollout}}


async def test_an_ecs_rollout_passes_the_hook_and_succeeds_within_codedeploys_write_budget(world, pool):
    run, sink = make_run(ECS_SPEC)
    assert await engine_for(world, pool).drive(new(run)) == RunResult.succeeded

    status = run.status
    assert all(r.result == StageResult.succeeded for r in status.stages), status.stages
    assert status.service_deployment_arn and status.service_deployment_arn.endswith('/sd1')
    assert status.code_deploy_deployment_id is None and world.calls('codedeploy.create_deployment') == []
    assert len(world.calls('ecs_deployments.deploy')) == 1 and len(world.calls('ecs_deployments.continue')) == 1
    assert status.active_color == 'green' and status.health_check.passed == 3
    # The ARN is in status from stage 3's end on, before any check or continue.
    first = next(i for i, s in enumerate(sink.saves) if s.get('serviceDeploymentArn'))
    assert sink.saves[first]['stageName'] in ('Service', 'BlueGreen')
    assert 'SUCCESSFUL' in status.stage_record(StageName.complete).message
    assert 'bake' in status.stage_record(StageName.complete).message
    # The same budget as a CodeDeploy rollout (test_pipeline): 9 status patches (one of them check 2/3's, shown
    # while it happens) and 7 Events (+2 of Kopf's: 18); tests/unit/test_progress_budget.py for more checks.
    assert len(sink.saves) <= 9 and len(sink.events) <= 7, (len(sink.saves), len(sink.events))


async def test_a_failed_check_at_the_hook_rolls_back_there(world, pool):
    world.set_script(health=[200, 503, 200])
    run, _ = make_run(ecs_spec(strategy='Canary', canary={'percent': 10, 'bakeMinutes': 1}))
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed

    assert len(world.calls('ecs_deployments.rollback')) == 1, 'ContinueServiceDeployment ROLLBACK at the hook'
    assert world.calls('ecs_deployments.continue') == [] and world.state()['active'] == 'blue'
    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'HealthCheckFailed' and '1/3' in ready.message
    assert ready.message.endswith('; rolled back, production traffic unchanged'), ready.message


async def test_a_failed_check_while_production_moves_stops_the_deployment(world, pool):
    world.set_script(health=[200, 200, 200, 200, 503], shift_after=30)
    run, _ = make_run(ecs_spec(strategy='Linear'))
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed

    assert len(world.calls('ecs_deployments.continue')) == 1 and len(world.calls('ecs_deployments.stop')) == 1
    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'HealthCheckFailed' and 'rolled back' in ready.message, ready.message


async def test_a_deployment_that_ecs_rolled_back_fails_in_ecss_words(world, pool):
    reason = 'ECS deployment circuit breaker: tasks failed to start (3 failures; last: CannotPullContainerError).'
    world.set_script(ecs_end={'status': 'ROLLBACK_SUCCESSFUL', 'reason': reason})
    run, sink = make_run(ECS_SPEC)
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed

    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'DeploymentRolledBack' and 'CannotPullContainerError' in ready.message
    assert run.status.stage_record(StageName.blue_green).result == StageResult.failed
    assert sink.events[-1][:2] == ('Warning', 'DeploymentRolledBack')


@pytest.mark.parametrize(('end', 'reason'), [
    ({'status': 'STOPPED', 'reason': 'Service deployment stopped (ABORT).'}, 'DeploymentStopped'),
    ({'status': 'STOPPED', 'reason': 'The service deployment was superseded by arn:…/sd9.',
      'replaced_by': 'arn:aws:ecs:region:123456789012:service-deployment/c/s/sd9'}, 'DeploymentReplaced'),
])
async def test_a_stopped_or_replaced_deployment_is_not_a_success(world, pool, end, reason):
    world.set_script(ecs_end=end)
    run, _ = make_run(ECS_SPEC)
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed
    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == reason and end['reason'] in ready.message


async def test_a_service_on_the_codedeploy_controller_is_refused_unchanged(world, pool):
    world.set_script(controller='CODE_DEPLOY')
    run, _ = make_run(ECS_SPEC)
    assert await engine_for(world, pool).drive(new(run)) == RunResult.failed

    ready = conditions.get(run.status, 'Ready')
    assert ready.reason == 'DeploymentControllerMismatch'
    assert 'CODE_DEPLOY' in ready.message and 'spec.rollout.strategy: CodeDeploy' in ready.message
    assert 'Nothing was changed' in ready.message and world.state().get('service_deployments', {}) == {}


async def test_manual_promotion_waits_at_the_hook_for_an_approval_naming_this_run(world, pool):
    approval: list[str | None] = [None]
    run, _ = make_run(ecs_spec(promotion='manual'))
    run.approval = lambda: approval[0]
    task = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    await asyncio.sleep(1.2)
    assert not task.done() and run.status.stage_name == StageName.verify
    assert run.status.promotion and run.status.deployment_id in run.status.promotion
    assert world.calls('ecs_deployments.continue') == []
    approval[0] = run.status.deployment_id
    assert await asyncio.wait_for(task, 10) == RunResult.succeeded
    assert len(world.calls('ecs_deployments.continue')) == 1


async def test_a_restarted_operator_resumes_the_same_service_deployment(world, pool):
    world.set_script(ready_after=0.6)
    run, sink = make_run(ECS_SPEC)
    task = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if run.status.stage_name == StageName.blue_green and sink.saves[-1].get('serviceDeploymentArn'):
            break
    task.cancel()  # the operator stops: nothing recorded, the deployment left open to resume
    with pytest.raises(asyncio.CancelledError):
        await task
    arn = run.status.service_deployment_arn
    resumed, _ = make_run(ECS_SPEC, status=PandaDeployStatus.model_validate(sink.saves[-1]))
    assert await engine_for(world, pool).drive(resumed) == RunResult.succeeded
    assert resumed.status.service_deployment_arn == arn
    assert len(world.calls('ecs_deployments.deploy')) == 1 and len(world.state()['service_deployments']) == 1


async def test_a_superseded_run_stops_its_open_service_deployment(world, pool):
    world.set_script(ready_after=30)
    run, _ = make_run(ECS_SPEC)
    run.cancel_result = RunResult.superseded
    task = asyncio.create_task(engine_for(world, pool).drive(new(run)))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if run.status.service_deployment_arn:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(world.calls('ecs_deployments.stop')) == 1
    assert world.state()['service_deployments'][run.status.service_deployment_arn]['status'] == 'ROLLBACK_SUCCESSFUL'
    assert run.status.phase == Phase.pending


async def test_the_same_image_again_deploys_nothing(world, pool):
    first, _ = make_run(ECS_SPEC)
    assert await engine_for(world, pool).drive(new(first)) == RunResult.succeeded
    again, _ = make_run(ECS_SPEC, status=PandaDeployStatus.model_validate(first.status.dump()), generation=2)
    assert await engine_for(world, pool).drive(new(again)) == RunResult.succeeded
    assert len(world.state()['service_deployments']) == 1
    assert again.status.stage_record(StageName.blue_green).result == StageResult.skipped


def test_the_strategy_decides_the_path():
    assert PandaDeploySpec.model_validate(SPEC).strategy.value == 'CodeDeploy'
    assert PandaDeploySpec.model_validate(ECS_SPEC).ecs_native
