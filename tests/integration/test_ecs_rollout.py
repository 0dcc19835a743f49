"""Stages 3 to 6 with ECS's own deployments, for real: the engine and the real adapters against the sandbox AWS.

As test_rollout.py does for CodeDeploy: each run starts with stages 1 and 2
recorded, the health checks hit a local HTTP server (`spec.healthCheck.url`),
and each test has its own cluster and load balancer, here with the resources
AWS documents for ECS blue/green, canary and linear deployments: production
(80) and test (8080) listeners, each with a rule forwarding to both target
groups (weights 100/0). The sandbox's ECS deployment simulator moves the
rules' weights and holds the deployment at the operator's PAUSE hook. A
simulated minute lasts one second, so a hook timed out after the stage
timeout (60 s → 2 minutes) does so in 2 seconds. Every ECS request and raw
answer is checked against botocore's model (tests/aws_contract.py).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3.session
import pytest

from controller import conditions
from controller.adapters import Adapters, AdapterSettings
from controller.adapters.wiring import make_adapters
from controller.credentials import Credentials
from controller.models import PandaDeploySpec, PandaDeployStatus, RunResult, StageName
from controller.pipeline import Engine, Recorder, Run, default_stages
from controller.sandbox.aws import AwsSandbox, Timings
from tests.aws_contract import ContractCheck
from tests.fakes import MemorySink
from tests.integration.awsworld import session  # noqa: F401 (session is a fixture)
from tests.integration.test_ecs_deployments_sandbox import REGION, build_world
from tests.integration.test_rollout import (  # noqa: F401 (health is a fixture)
    CREDENTIALS,
    Health,
    Rollout,
    commit,
    health,
    prepare,
)

CHECKS = 3
POLL_SECONDS = 0.1
ROLE = 'arn:aws:iam::123456789012:role/ecsInfrastructureRoleForLoadBalancers'
TIMINGS = Timings(step_seconds=0.05, minute_seconds=1.0, auto_hook_seconds=0.05, tick_seconds=0.02)
ENDED = ('SUCCESSFUL', 'STOPPED', 'ROLLBACK_SUCCESSFUL', 'ROLLBACK_FAILED')

pytestmark = pytest.mark.timeout(120)


def start_tasks(task_definition: str, image: str, port: int) -> None:
    """The sandbox's green task set: an image from a repository named broken-… never starts."""
    if '/broken-' in image:
        raise RuntimeError(f'CannotPullContainerError: pull image manifest has been retried 5 time(s): {image}')


@pytest.fixture(scope='module')
def aws_url() -> Iterator[str]:
    """Overrides awsworld's: the `session` fixture points AWS_ENDPOINT_URL here."""
    with AwsSandbox(port=0, timings=TIMINGS, on_green_task_set=start_tasks) as sandbox:
        yield sandbox.url


@pytest.fixture
def contract() -> Iterator[ContractCheck]:
    check = ContractCheck()
    yield check
    check.assert_clean()


@dataclasses.dataclass
class World:
    """One service's ALB, target group pair, listener rules and cluster."""
    session: boto3.session.Session
    suffix: str
    blue_tg: str
    green_tg: str
    prod_rule: str
    test_rule: str

    def spec(self, health_url: str, *, strategy: str = 'BlueGreen', stage_seconds: int = 600, **rollout: Any
             ) -> PandaDeploySpec:
        load_balancer = {'targetGroupArn': self.blue_tg, 'alternateTargetGroupArn': self.green_tg,
                         'productionListenerRuleArn': self.prod_rule, 'testListenerRuleArn': self.test_rule,
                         'roleArn': ROLE}
        image = rollout.pop('image', 'panda-app')
        return PandaDeploySpec.model_validate({
            'source': {'repo': 'panda/app'}, 'aws': {'region': REGION}, 'image': {'repository': image},
            'ecs': {'cluster': f'cluster-{self.suffix}', 'service': f'svc-{self.suffix}', 'containerName': 'web',
                    'containerPort': 8080},
            'rollout': {'strategy': strategy, 'loadBalancer': load_balancer, **rollout},
            'healthCheck': {'url': health_url, 'checks': CHECKS, 'intervalSeconds': 0, 'timeoutSeconds': 2},
            'timeouts': {'stageSeconds': stage_seconds, 'totalSeconds': 1800}})

    def green_share(self, rule: str) -> float:
        """The percent of a rule's traffic that goes to the alternate (green) target group."""
        weights = self.weights(rule)
        return 100.0 * weights.get(self.green_tg, 0) / sum(weights.values())

    def weights(self, rule: str) -> dict[str, int]:
        actions = self.session.client('elbv2').describe_rules(RuleArns=[rule])['Rules'][0]['Actions']
        return {g['TargetGroupArn']: g['Weight'] for g in actions[0]['ForwardConfig']['TargetGroups']}

    def deployments(self, spec: PandaDeploySpec) -> list[dict[str, Any]]:
        """The service's deployments, oldest first."""
        ecs = self.session.client('ecs')
        briefs = ecs.list_service_deployments(cluster=spec.ecs.cluster, service=spec.ecs.service,
                                              maxResults=100)['serviceDeployments']
        return sorted(briefs, key=lambda b: b['createdAt'])

    def deployment(self, arn: str) -> dict[str, Any]:
        ecs = self.session.client('ecs')
        return dict(ecs.describe_service_deployments(serviceDeploymentArns=[arn])['serviceDeployments'][0])


class _Clients:
    """What test_ecs_deployments_sandbox's `build_world` asks of its sandbox: clients (here through the
    `session` fixture's AWS_ENDPOINT_URL, in that module's region)."""

    def __init__(self) -> None:
        self.session = boto3.session.Session(aws_access_key_id='testing', aws_secret_access_key='testing',
                                             region_name=REGION)

    def client(self, name: str) -> Any:
        return self.session.client(name)


@pytest.fixture
def world(session: boto3.session.Session) -> World:  # noqa: F811 (awsworld's session sets the endpoint)
    clients = _Clients()
    found = build_world(clients)  # type: ignore[arg-type]  # (duck-typed: only .client is used)
    return World(session=clients.session, suffix=found.suffix, blue_tg=found.blue_tg, green_tg=found.green_tg,
                 prod_rule=found.prod_rule, test_rule=found.test_rule)


# -- driving the engine -------------------------------------------------------------------------


def ready(rollout: Rollout) -> tuple[str, str]:
    """The Ready condition's reason and message."""
    found = conditions.get(rollout.status, 'Ready')
    assert found is not None
    return found.reason, found.message


def engine(pool: concurrent.futures.ThreadPoolExecutor, contract: ContractCheck) -> Engine:
    """The real adapters, their ECS clients watched by the contract check."""
    def adapters(spec: PandaDeploySpec, credentials: Credentials, *,
                 settings: AdapterSettings | None = None) -> Adapters:
        made = make_adapters(spec, credentials, settings=settings)
        for adapter in (made.ecs, made.ecs_deployments):
            contract.watch(adapter._client('ecs'))  # type: ignore[attr-defined]
        return made
    return Engine(stages=default_stages(poll_seconds=POLL_SECONDS), adapters=adapters, pool=pool)


async def rollout(spec: PandaDeploySpec, revision: str, contract: ContractCheck, *, after: Rollout | None = None,
                  approval: Callable[[], str | None] = lambda: None, self_approved: bool = False,
                  until: Callable[[Run], bool] | None = None) -> Rollout:
    """One run of stages 3-6 for `revision` after the run `after`; with `until`, the operator stops (a shutdown:
    nothing recorded) as soon as `until(run)` holds; `self_approved`: the promote annotation names the run."""
    status = after.status.model_copy(deep=True) if after else None
    run, sink = prepare(spec, revision=revision, status=status, generation=after.run.generation + 1 if after else 1,
                        approval=approval)
    if self_approved:  # manual promotion, approved for this run from the start
        run.approval = lambda: run.status.deployment_id
    return await drive(run, sink, contract, until=until)


async def drive(run: Run, sink: MemorySink, contract: ContractCheck, *,
                until: Callable[[Run], bool] | None = None) -> Rollout:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        task = asyncio.create_task(engine(pool, contract).drive(run))
        while until is not None and not task.done():
            await asyncio.sleep(0.05)
            if until(run):
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                return Rollout(result=RunResult.cancelled, run=run, sink=sink)
        return Rollout(result=await task, run=run, sink=sink)


async def resume(spec: PandaDeploySpec, stopped: Rollout, contract: ContractCheck, *,
                 approval: Callable[[], str | None] = lambda: None) -> Rollout:
    """A new operator picks the run up from the status its predecessor last saved (no new run begins)."""
    sink = MemorySink()
    recorder = Recorder(sink=sink, status=PandaDeployStatus.model_validate(stopped.sink.saves[-1]),
                        generation=stopped.run.generation)
    run = Run(spec=spec, credentials=CREDENTIALS, recorder=recorder, logger=logging.getLogger('test.ecs'),
              approval=approval)
    return await drive(run, sink, contract)


def at_the_hook(world: World) -> Callable[[Run], bool]:
    """The run's service deployment waits at the PAUSE hook and Verify has begun."""
    def holds(run: Run) -> bool:
        arn = run.status.service_deployment_arn
        if not arn or run.status.stage_name != StageName.verify:
            return False
        hooks = world.deployment(arn).get('lifecycleHookDetails') or []
        return any(h['status'] == 'AWAITING_ACTION' for h in hooks)
    return holds


async def first_and_second(world: World, spec: PandaDeploySpec, contract: ContractCheck) -> tuple[Rollout, Rollout]:
    first = await rollout(spec, commit('a'), contract)
    assert first.result == RunResult.succeeded, first.sink.lines
    second = await rollout(spec, commit('b'), contract, after=first)
    return first, second


# -- the strategies -------------------------------------------------------------------------------


@pytest.mark.parametrize(('strategy', 'steps', 'shares'), [
    ('BlueGreen', {}, []),
    ('Canary', {'canary': {'percent': 10, 'bakeMinutes': 1}}, ['10%']),
    ('Linear', {'linear': {'stepPercent': 50, 'stepBakeMinutes': 1}}, ['50%']),
])
async def test_each_strategy_creates_then_deploys_through_one_service_deployment_per_run(
        world: World, health: Callable[..., Health], contract: ContractCheck, strategy: str,
        steps: dict[str, Any], shares: list[str]) -> None:
    endpoint = health()
    spec = world.spec(endpoint.url, strategy=strategy, **steps)
    first, second = await first_and_second(world, spec, contract)

    assert second.result == RunResult.succeeded, second.sink.lines
    runs = world.deployments(spec)
    assert [d['serviceDeploymentArn'] for d in runs] == [first.status.service_deployment_arn,
                                                         second.status.service_deployment_arn]
    assert [d['status'] for d in runs] == ['SUCCESSFUL', 'SUCCESSFUL']
    assert world.green_share(world.prod_rule) == 100.0  # production moved to the other target group
    assert (first.status.active_color, second.status.active_color) == ('blue', 'green')
    service = world.session.client('ecs').describe_services(cluster=spec.ecs.cluster,
                                                            services=[spec.ecs.service])['services'][0]
    assert service['deploymentController'] == {'type': 'ECS'}
    assert service['deploymentConfiguration']['strategy'] == {'BlueGreen': 'BLUE_GREEN', 'Canary': 'CANARY',
                                                              'Linear': 'LINEAR'}[strategy]
    assert service['taskDefinition'] == second.status.task_definition_arn
    lines = second.sink.lines
    assert any('waits at the PAUSE hook (POST_TEST_TRAFFIC_SHIFT)' in line for line in lines), lines
    for share in shares:  # the checks went on through the step
        assert any(f'{share} of production on the new revision' in line for line in lines), lines
    assert 'SUCCESSFUL' in second.status.stage_record(StageName.complete).message
    assert second.status.health_check is not None and second.status.health_check.passed == CHECKS
    assert contract.requests['ContinueServiceDeployment'] == 2 and contract.requests['UpdateService'] == 1
    assert contract.requests['CreateService'] == 1


@pytest.mark.parametrize(('strategy', 'passing', 'rolled_back_by'), [
    ('BlueGreen', 1, 'ContinueServiceDeployment'),  # check 2 at the hook fails: ROLLBACK at the hook
    ('Canary', CHECKS, 'StopServiceDeployment'),  # the first check with 10% of production on green fails
])
async def test_a_failing_check_rolls_back_and_production_stays_on_blue(
        world: World, health: Callable[..., Health], contract: ContractCheck, strategy: str, passing: int,
        rolled_back_by: str) -> None:
    endpoint = health()
    spec = world.spec(endpoint.url, strategy=strategy, **({'canary': {'percent': 10, 'bakeMinutes': 5}}
                                                          if strategy == 'Canary' else {}))
    first = await rollout(spec, commit('a'), contract)
    assert first.result == RunResult.succeeded, first.sink.lines
    endpoint.fail_after = endpoint.hits + passing
    second = await rollout(spec, commit('b'), contract, after=first)

    assert second.result == RunResult.failed and ready(second)[0] == 'HealthCheckFailed', second.sink.lines
    arn = second.status.service_deployment_arn
    assert arn
    deadline = time.monotonic() + 10
    while (found := world.deployment(arn))['status'] not in ENDED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found['status'] == 'ROLLBACK_SUCCESSFUL' and rolled_back_by in found['statusReason'], found
    assert world.green_share(world.prod_rule) == 0.0  # production still (again) all on blue
    assert endpoint.url in ready(second)[1]


async def _promoted(spec: PandaDeploySpec, revision: str, world: World, contract: ContractCheck,
                    after: Rollout | None = None) -> Rollout:
    """A manual rollout: waits at the hook (production untouched, the deployment AWAITING_ACTION) while the
    annotation names another run, then goes on once it names this one."""
    approval: list[str | None] = ['dep_0ther0run0']
    status = after.status.model_copy(deep=True) if after else None
    run, sink = prepare(spec, revision=revision, status=status, generation=after.run.generation + 1 if after else 1,
                        approval=lambda: approval[0])
    task = asyncio.create_task(drive(run, sink, contract))
    deadline = time.monotonic() + 30
    while not (run.status.promotion and at_the_hook(world)(run)):
        assert time.monotonic() < deadline and not task.done(), sink.lines
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert not task.done() and 'names dep_0ther0run0, not this run' in (run.status.promotion or '')
    assert contract.requests['ContinueServiceDeployment'] == (1 if after else 0)
    assert world.green_share(world.prod_rule) == 0.0  # production untouched while it waits
    approval[0] = run.status.deployment_id
    return await task


async def test_manual_promotion_waits_at_the_hook_until_the_annotation_names_the_run(
        world: World, health: Callable[..., Health], contract: ContractCheck) -> None:
    spec = world.spec(health().url, promotion='manual')
    first = await _promoted(spec, commit('a'), world, contract)
    assert first.result == RunResult.succeeded, first.sink.lines
    second = await _promoted(spec, commit('b'), world, contract, after=first)

    assert second.result == RunResult.succeeded, second.sink.lines
    assert world.green_share(world.prod_rule) == 100.0 and second.status.promotion is None
    assert contract.requests['ContinueServiceDeployment'] == 2


# -- an operator that dies at the hook ------------------------------------------------------------


async def test_a_restarted_operator_resumes_the_same_service_deployment(
        world: World, health: Callable[..., Health], contract: ContractCheck) -> None:
    # Manual promotion holds the run at the hook, so the operator surely stops there.
    spec = world.spec(health().url, promotion='manual')
    first = await rollout(spec, commit('a'), contract, self_approved=True)
    stopped = await rollout(spec, commit('b'), contract, after=first, until=at_the_hook(world))
    arn = stopped.status.service_deployment_arn
    assert stopped.result == RunResult.cancelled and arn and stopped.sink.saves[-1]['serviceDeploymentArn'] == arn

    # The promote annotation, set while the operator was down, names the run.
    resumed = await resume(spec, stopped, contract, approval=lambda: stopped.status.deployment_id)

    assert resumed.result == RunResult.succeeded, resumed.sink.lines
    assert resumed.status.service_deployment_arn == arn
    assert [d['serviceDeploymentArn'] for d in world.deployments(spec)][-1] == arn
    assert len(world.deployments(spec)) == 2 and contract.requests['UpdateService'] == 1
    assert world.deployment(arn)['status'] == 'SUCCESSFUL' and world.green_share(world.prod_rule) == 100.0


async def test_with_the_operator_down_the_hook_times_out_and_ecs_rolls_back_by_itself(
        world: World, health: Callable[..., Health], contract: ContractCheck) -> None:
    # The hook times out after 2 minutes: 2 s here. Manual promotion holds the run at the hook for the stop.
    spec = world.spec(health().url, stage_seconds=60, promotion='manual')
    first = await rollout(spec, commit('a'), contract, self_approved=True)
    stopped = await rollout(spec, commit('b'), contract, after=first, until=at_the_hook(world))
    arn = stopped.status.service_deployment_arn
    assert arn
    hook = world.deployment(arn)['lifecycleHookDetails'][0]
    assert (hook['timeoutAction'], hook['status']) == ('ROLLBACK', 'AWAITING_ACTION')
    deadline = time.monotonic() + 10
    while (found := world.deployment(arn))['status'] not in ENDED and time.monotonic() < deadline:
        time.sleep(0.1)
    assert found['status'] == 'ROLLBACK_SUCCESSFUL' and 'timed out' in found['statusReason'], found
    assert world.green_share(world.prod_rule) == 0.0

    resumed = await resume(spec, stopped, contract)  # the operator comes back: the run ends honestly

    assert resumed.result == RunResult.failed and ready(resumed)[0] == 'DeploymentRolledBack'
    assert 'timed out' in ready(resumed)[1] and 'ROLLBACK_SUCCESSFUL' in ready(resumed)[1]
    assert len(world.deployments(spec)) == 2, 'no second deployment for the run'


# -- refusals and honest outcomes ------------------------------------------------------------------


async def test_a_service_on_the_codedeploy_controller_is_refused_and_left_as_it_was(
        world: World, health: Callable[..., Health], contract: ContractCheck) -> None:
    spec = world.spec(health().url)
    ecs = world.session.client('ecs')
    definition = ecs.register_task_definition(family=spec.ecs.service, containerDefinitions=[
        {'name': 'web', 'image': 'registry.local/web:v0', 'memory': 512}])['taskDefinition']['taskDefinitionArn']
    ecs.create_service(cluster=spec.ecs.cluster, serviceName=spec.ecs.service, taskDefinition=definition,
                       desiredCount=1, deploymentController={'type': 'CODE_DEPLOY'},
                       loadBalancers=[{'targetGroupArn': world.blue_tg, 'containerName': 'web', 'containerPort': 8080}])

    refused = await rollout(spec, commit('a'), contract)

    assert refused.result == RunResult.failed and ready(refused)[0] == 'DeploymentControllerMismatch'
    assert 'CODE_DEPLOY' in ready(refused)[1] and 'spec.rollout.strategy: CodeDeploy' in ready(refused)[1]
    service = ecs.describe_services(cluster=spec.ecs.cluster, services=[spec.ecs.service])['services'][0]
    assert service['deploymentController'] == {'type': 'CODE_DEPLOY'} and service['taskDefinition'] == definition
    assert world.deployments(spec) == [] and contract.requests['UpdateService'] == 0


async def test_tasks_that_never_start_trip_the_circuit_breaker_and_the_run_fails_in_ecss_words(
        world: World, health: Callable[..., Health], contract: ContractCheck) -> None:
    url = health().url
    first = await rollout(world.spec(url), commit('a'), contract)
    assert first.result == RunResult.succeeded, first.sink.lines

    broken = await rollout(world.spec(url, image='broken-app'), commit('b'), contract, after=first)

    assert broken.result == RunResult.failed and ready(broken)[0] == 'DeploymentRolledBack', broken.sink.lines
    message = ready(broken)[1]
    assert 'ROLLBACK_SUCCESSFUL' in message and 'circuit breaker' in message, message
    assert 'CannotPullContainerError' in message and 'service events:' in message, message
    assert broken.status.stage_record(StageName.blue_green).reason == 'DeploymentRolledBack'
    assert world.green_share(world.prod_rule) == 0.0 and first.status.active_color == 'blue'
