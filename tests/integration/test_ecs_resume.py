"""The ECS path's edges: an operator that dies between starting a service deployment and saving its ARN, and a
service that must change strategy (migrated) or controller (refused).

As test_ecs_rollout.py: the engine and the real adapters against the sandbox AWS, stages 1 and 2 recorded,
ECS requests and answers checked against botocore's model.

- Killed after CreateService / UpdateService reached ECS and before the status write that records
  `status.serviceDeploymentArn` (the call's answer is lost with the operator: a botocore `after-call` hook
  raises `OperatorKilled`, which no handler of the engine catches, so nothing more is written). The restarted
  operator resumes from the last saved status and must find the deployment the dead one started
  (ListServiceDeployments, matched to the run's task definition), whether it is still going (the run
  succeeds on it) or ended while nobody watched (ECS rolled it back at the hook's timeout: the run fails
  with ECS's words); it never starts a second.
- Migration, as AWS documents it: a service on the ECS controller deploying with ROLLING (said, or no strategy)
  is moved to BLUE_GREEN / LINEAR by the run's one UpdateService, which carries
  `deploymentConfiguration.strategy` and `loadBalancers[].advancedConfiguration` with the new task
  definition; the run succeeds through that deployment.
- Refused, never half-changed: a service on the ECS controller while the spec asks for CodeDeploy; the
  reason says what to do, and the service, its task definition and its deployments are as they were.
"""
from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import pytest

from controller import conditions
from controller.adapters import Adapters, AdapterSettings
from controller.adapters.wiring import make_adapters
from controller.credentials import Credentials
from controller.models import PandaDeploySpec, RunResult, StageName
from controller.pipeline import Engine, default_stages
from tests.aws_contract import ContractCheck
from tests.integration.awsworld import session  # noqa: F401 (session is a fixture)
from tests.integration.test_ecs_rollout import (  # noqa: F401 (fixtures: aws_url, contract, world, health)
    ENDED,
    POLL_SECONDS,
    World,
    aws_url,
    contract,
    ready,
    resume,
    rollout,
    world,
)
from tests.integration.test_rollout import Health, Rollout, commit, health, prepare  # noqa: F401

pytestmark = pytest.mark.timeout(120)


class OperatorKilled(BaseException):
    """The operator died: no handler of the engine catches it (a BaseException), so nothing more is written."""


def dying_after(operation: str, contract: ContractCheck) -> Callable[..., Adapters]:
    """Adapters whose ECS client kills the operator once `operation` has been answered (the answer is lost)."""
    armed = [True]

    def kill(**_: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise OperatorKilled(f'killed after {operation} reached ECS')

    def adapters(spec: PandaDeploySpec, credentials: Credentials, *,
                 settings: AdapterSettings | None = None) -> Adapters:
        made = make_adapters(spec, credentials, settings=settings)
        for adapter in (made.ecs, made.ecs_deployments):
            client = adapter._client('ecs')  # type: ignore[attr-defined]
            contract.watch(client)
            client.meta.events.register(f'after-call.ecs.{operation}', kill)
        return made
    return adapters


async def killed_after(operation: str, spec: PandaDeploySpec, revision: str, contract: ContractCheck, *,
                       after: Rollout | None = None) -> Rollout:
    """A run whose operator dies as soon as `operation` reached ECS; what it left is its last saved status."""
    status = after.status.model_copy(deep=True) if after else None
    run, sink = prepare(spec, revision=revision, status=status, generation=after.run.generation + 1 if after else 1)
    run.status.started_at = conditions.now()  # the run's start and stages 1-2 saved, as before stage 3
    await sink.save(run.status)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        engine = Engine(stages=default_stages(poll_seconds=POLL_SECONDS), adapters=dying_after(operation, contract),
                        pool=pool)
        with pytest.raises(OperatorKilled):
            await engine.drive(run)
    return Rollout(result=RunResult.cancelled, run=run, sink=sink)


def wait_ended(world: World, arn: str, seconds: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while (found := world.deployment(arn))['status'] not in ENDED and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


# -- killed between starting the service deployment and saving its ARN ----------------------------------


@pytest.mark.parametrize('operation', ['CreateService', 'UpdateService'])
async def test_killed_before_the_arn_was_saved_the_restarted_operator_resumes_that_deployment(
        world: World, health: Callable[..., Health], contract: ContractCheck, operation: str) -> None:
    spec = world.spec(health().url)
    first = None
    if operation == 'UpdateService':
        first = await rollout(spec, commit('a'), contract)
        assert first.result == RunResult.succeeded, first.sink.lines

    stopped = await killed_after(operation, spec, commit('b'), contract, after=first)

    assert contract.requests[operation] == 1
    saved = stopped.sink.saves[-1] if stopped.sink.saves else {}
    assert not saved.get('serviceDeploymentArn'), 'the kill came before the ARN was saved'
    [started] = [d['serviceDeploymentArn'] for d in world.deployments(spec)][1 if first else 0:]
    resumed = await resume(spec, stopped, contract)

    assert resumed.result == RunResult.succeeded, resumed.sink.lines
    assert resumed.status.service_deployment_arn == started
    assert len(world.deployments(spec)) == (2 if first else 1), 'no second deployment for the run'
    assert contract.requests['UpdateService'] == (1 if first else 0) and contract.requests['CreateService'] == 1
    assert world.deployment(started)['status'] == 'SUCCESSFUL'
    assert any('Service deployment' in line and 'found' in line for line in resumed.sink.lines), resumed.sink.lines


async def test_killed_before_the_arn_was_saved_a_deployment_ecs_rolled_back_meanwhile_is_not_started_again(
        world: World, health: Callable[..., Health], contract: ContractCheck) -> None:
    # The hook times out after 2 minutes (stage 60 s): 2 s here, while the operator is down.
    spec = world.spec(health().url, stage_seconds=60)
    first = await rollout(spec, commit('a'), contract)
    assert first.result == RunResult.succeeded, first.sink.lines
    stopped = await killed_after('UpdateService', spec, commit('b'), contract, after=first)
    [_, started] = [d['serviceDeploymentArn'] for d in world.deployments(spec)]
    found = wait_ended(world, started)
    assert found['status'] == 'ROLLBACK_SUCCESSFUL' and 'timed out' in found['statusReason'], found
    ecs = world.session.client('ecs')
    service = ecs.describe_services(cluster=spec.ecs.cluster, services=[spec.ecs.service])['services'][0]
    assert service['taskDefinition'] == first.status.task_definition_arn  # ECS put the old revision back

    resumed = await resume(spec, stopped, contract)

    assert [d['serviceDeploymentArn'] for d in world.deployments(spec)][1:] == [started], 'no second deployment'
    assert contract.requests['UpdateService'] == 1
    assert resumed.result == RunResult.failed and ready(resumed)[0] == 'DeploymentRolledBack', resumed.sink.lines
    assert resumed.status.service_deployment_arn == started
    assert 'timed out' in ready(resumed)[1] and 'ROLLBACK_SUCCESSFUL' in ready(resumed)[1]


async def test_a_retry_of_a_rolled_back_image_at_once_starts_its_own_deployment(
        world: World, health: Callable[..., Health], contract: ContractCheck) -> None:
    """The run before deployed the same task definition moments ago and ECS rolled it back: that deployment is
    the run before's (created before it ended), not this one's to resume."""
    endpoint = health()
    spec = world.spec(endpoint.url)
    first = await rollout(spec, commit('a'), contract)
    assert first.result == RunResult.succeeded, first.sink.lines
    endpoint.fail_after = endpoint.hits + 1
    failed = await rollout(spec, commit('b'), contract, after=first)
    assert failed.result == RunResult.failed and ready(failed)[0] == 'HealthCheckFailed', failed.sink.lines
    assert wait_ended(world, str(failed.status.service_deployment_arn))['status'] == 'ROLLBACK_SUCCESSFUL'
    endpoint.fail_after = None

    retried = await rollout(spec, commit('b'), contract, after=failed)

    assert retried.result == RunResult.succeeded, retried.sink.lines
    assert retried.status.task_definition_arn == failed.status.task_definition_arn  # the same revision again
    runs = [d['serviceDeploymentArn'] for d in world.deployments(spec)]
    assert runs == [first.status.service_deployment_arn, failed.status.service_deployment_arn,
                    retried.status.service_deployment_arn], runs
    assert world.deployment(runs[-1])['status'] == 'SUCCESSFUL' and world.green_share(world.prod_rule) == 100.0


# -- migration and refusal ---------------------------------------------------------------------------


def rolling_service(world: World, spec: PandaDeploySpec, *, strategy: str | None = None) -> str:
    """A service deploying with ECS's ROLLING updates (`strategy` ROLLING, or none: the same) behind the blue
    target group; its task definition."""
    ecs = world.session.client('ecs')
    definition = ecs.register_task_definition(family=spec.ecs.service, containerDefinitions=[
        {'name': 'web', 'image': 'registry.local/web:v0', 'memory': 512}])['taskDefinition']['taskDefinitionArn']
    ecs.create_service(cluster=spec.ecs.cluster, serviceName=spec.ecs.service, taskDefinition=definition,
                       desiredCount=1, deploymentController={'type': 'ECS'},
                       deploymentConfiguration={'maximumPercent': 200, 'minimumHealthyPercent': 100,
                                                **({'strategy': strategy} if strategy else {})},
                       loadBalancers=[{'targetGroupArn': world.blue_tg, 'containerName': 'web', 'containerPort': 8080}])
    return str(definition)


@pytest.mark.parametrize(('rolling', 'strategy', 'steps', 'ecs_name'), [
    (None, 'BlueGreen', {}, 'BLUE_GREEN'),
    ('ROLLING', 'Linear', {'linear': {'stepPercent': 50, 'stepBakeMinutes': 1}}, 'LINEAR'),
])
async def test_a_rolling_service_is_migrated_to_the_strategy_by_the_runs_one_update(
        world: World, health: Callable[..., Health], contract: ContractCheck, rolling: str | None, strategy: str,
        steps: dict[str, Any], ecs_name: str) -> None:
    spec = world.spec(health().url, strategy=strategy, **steps)
    before = rolling_service(world, spec, strategy=rolling)

    done = await rollout(spec, commit('a'), contract)

    assert done.result == RunResult.succeeded, done.sink.lines
    ecs = world.session.client('ecs')
    service = ecs.describe_services(cluster=spec.ecs.cluster, services=[spec.ecs.service])['services'][0]
    assert service['deploymentController'] == {'type': 'ECS'}
    assert service['deploymentConfiguration']['strategy'] == ecs_name
    [balancer] = service['loadBalancers']
    assert balancer['advancedConfiguration'] == {
        'alternateTargetGroupArn': world.green_tg, 'productionListenerRule': world.prod_rule,
        'testListenerRule': world.test_rule, 'roleArn': spec.rollout.load_balancer.role_arn}  # type: ignore[union-attr]
    assert service['taskDefinition'] == done.status.task_definition_arn != before
    [deployment] = world.deployments(spec)  # the migration and the new revision: one deployment
    assert deployment['serviceDeploymentArn'] == done.status.service_deployment_arn
    assert world.deployment(deployment['serviceDeploymentArn'])['status'] == 'SUCCESSFUL'
    assert contract.requests['UpdateService'] == 1 and contract.requests['CreateService'] == 0
    assert any('waits at the PAUSE hook' in line for line in done.sink.lines), done.sink.lines
    assert world.green_share(world.prod_rule) == 100.0  # production moved through the rules, as ECS does


def code_deploy_spec(spec: PandaDeploySpec) -> PandaDeploySpec:
    """The same service, asked to deploy through CodeDeploy (spec.blueGreen, no spec.rollout)."""
    document = spec.dump()
    document.pop('rollout')
    document['blueGreen'] = {'codeDeploy': {'application': f'app-{spec.ecs.service}',
                                            'deploymentGroup': f'dg-{spec.ecs.service}'}}
    return PandaDeploySpec.model_validate(document)


@pytest.mark.parametrize('existing', ['rolling', 'BlueGreen'])
async def test_an_ecs_controlled_service_is_refused_for_codedeploy_and_left_as_it_was(
        world: World, health: Callable[..., Health], contract: ContractCheck, existing: str) -> None:
    ecs_spec = world.spec(health().url)
    if existing == 'rolling':
        rolling_service(world, ecs_spec)
    else:
        done = await rollout(ecs_spec, commit('a'), contract)
        assert done.result == RunResult.succeeded, done.sink.lines
    ecs = world.session.client('ecs')
    before = ecs.describe_services(cluster=ecs_spec.ecs.cluster, services=[ecs_spec.ecs.service])['services'][0]
    deployments = world.deployments(ecs_spec)
    spec = code_deploy_spec(ecs_spec)

    refused = await rollout(spec, commit('b'), contract)

    assert refused.result == RunResult.failed and ready(refused)[0] == 'DeploymentControllerMismatch'
    message = ready(refused)[1]
    assert 'uses the ECS deployment controller' in message and 'Nothing was changed' in message, message
    assert 'spec.rollout.strategy BlueGreen, Canary or Linear' in message, message
    assert refused.status.stage_record(StageName.service).reason == 'DeploymentControllerMismatch'
    after = ecs.describe_services(cluster=ecs_spec.ecs.cluster, services=[ecs_spec.ecs.service])['services'][0]
    for key in ('taskDefinition', 'deploymentController', 'deploymentConfiguration', 'loadBalancers'):
        assert after.get(key) == before.get(key), key
    assert world.deployments(ecs_spec) == deployments
    assert contract.requests['UpdateService'] == 0
    codedeploy = world.session.client('codedeploy')
    assert f'app-{ecs_spec.ecs.service}' not in codedeploy.list_applications()['applications']

