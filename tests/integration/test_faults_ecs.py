"""Faults on the way to ECS while it deploys by itself (spec.rollout BlueGreen, Canary, Linear), and what a run
makes of them: test_faults.py's AWS half, for the ECS service deployment calls.

The ECS sandbox of test_ecs_rollout.py (moto plus the ECS deployment simulator; a simulated minute is 10 s)
is served behind `tests.faultproxy.FaultProxy`; each test's first rollout creates the service without faults,
then the operator's adapters reach AWS through the proxy (AWS_ENDPOINT_URL) for the rollout under test. The
calls: CreateService / UpdateService with the strategy, DescribeServices, ListServiceDeployments (stage 3
looks for the run's deployment before it starts one), DescribeServiceDeployments, ContinueServiceDeployment
and StopServiceDeployment.
- Transient faults (throttling, 500, 503, dropped connections, slow answers): botocore retries within a call,
  the engine retries the stage past that; the run succeeds through ONE service deployment (a retried request
  never reached ECS twice) and production moves.
- Persistent faults: the run ends Failed naming the AWS error code and the ECS operation, within the stage
  timeout, and the requests show no hot loop (at most 5 per call, calls spaced by the engine's backoff;
  the last may be the engine's best-effort stop of the run's open deployment as the run fails).
  AccessDenied is not retried at all. DescribeServiceRevisions (asked by a run restarted before it saved its
  deployment's ARN) is retried, or fails the run naming it.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3.session
import pytest

from controller.models import PandaDeploySpec, RunResult, StageName
from controller.pipeline.engine import TRANSIENT_BACKOFF
from controller.sandbox.aws import AwsSandbox, Timings
from tests.aws_contract import ContractCheck
from tests.faultproxy import Fault, FaultProxy, gaps
from tests.integration.awsworld import session  # noqa: F401 (session is a fixture)
from tests.integration.test_ecs_deployments_sandbox import build_world
from tests.integration.test_ecs_resume import killed_after
from tests.integration.test_ecs_rollout import (  # noqa: F401 (fixtures: contract, world, health)
    World,
    _Clients,
    contract,
    ready,
    resume,
    rollout,
    start_tasks,
    world,
)
from tests.integration.test_faults import REQUESTS_PER_CALL, call_gaps, calls, proxy  # noqa: F401 (a fixture)
from tests.integration.test_rollout import Health, Rollout, commit, health  # noqa: F401

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope='module')
def aws_url() -> Iterator[str]:
    """test_ecs_rollout's sandbox, with a slower minute (10 s): the PAUSE hook's timeout (the stage timeout plus
    a minute, 2 minutes here) must outlast the operator's retries, as it does in AWS, for the operator's own
    account of a persistent fault to be the one heard."""
    timings = Timings(step_seconds=0.05, minute_seconds=10.0, auto_hook_seconds=0.05, tick_seconds=0.02)
    with AwsSandbox(port=0, timings=timings, on_green_task_set=start_tasks) as sandbox:
        yield sandbox.url


@pytest.fixture(scope='module')
def aws_proxy(aws_url: str) -> Iterator[FaultProxy]:
    """(test_faults' `proxy` fixture resets it around each test)"""
    with FaultProxy(aws_url) as proxy:
        yield proxy


@pytest.fixture
def world_factory(session: boto3.session.Session) -> Callable[[], World]:  # noqa: F811 (sets the endpoint)
    """Worlds as test_ecs_rollout's `world` fixture makes them, as many as a test needs."""
    def make() -> World:
        clients = _Clients()
        found = build_world(clients)  # type: ignore[arg-type]  # (duck-typed: only .client is used)
        return World(session=clients.session, suffix=found.suffix, blue_tg=found.blue_tg, green_tg=found.green_tg,
                     prod_rule=found.prod_rule, test_rule=found.test_rule)
    return make


async def first_rollout(spec: PandaDeploySpec, contract: ContractCheck) -> Rollout:  # noqa: F811
    done = await rollout(spec, commit('a'), contract)
    assert done.result == RunResult.succeeded, done.sink.lines
    return done


async def through(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, aws: str, runs: Any) -> Any:
    """`runs` awaited with the operator's AWS behind the proxy; the sandbox reached directly again afterwards."""
    monkeypatch.setenv('AWS_ENDPOINT_URL', proxy.url)
    try:
        return await runs
    finally:
        monkeypatch.setenv('AWS_ENDPOINT_URL', aws)


# -- transient faults: absorbed, one service deployment, the run succeeds --------------------------------


@pytest.mark.parametrize('strategy', ['BlueGreen', 'Canary'])
async def test_transient_faults_on_the_ecs_deployment_calls_are_absorbed_and_the_run_succeeds(
        world: World, health: Callable[..., Health], contract: ContractCheck, proxy: FaultProxy,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, aws_url: str, strategy: str) -> None:
    steps: dict[str, Any] = {'canary': {'percent': 10, 'bakeMinutes': 1}} if strategy == 'Canary' else {}
    spec = world.spec(health().url, strategy=strategy, **steps)
    first = await first_rollout(spec, contract)
    rules = [
        proxy.add('throttle', operation='UpdateService', times=2),
        proxy.add('503', operation='DescribeServices', times=2),
        # beyond botocore's retries: the engine retries stage 3, which then starts the deployment once
        proxy.add('500', operation='ListServiceDeployments', times=REQUESTS_PER_CALL + 1),
        proxy.add('drop', operation='DescribeServiceDeployments', times=2),
        proxy.add(Fault('delay', seconds=1.5), operation='DescribeServiceDeployments', times=1),
        proxy.add('throttle', operation='ContinueServiceDeployment', times=2),
        proxy.add('drop', operation='ContinueServiceDeployment', times=1),
    ]

    started = time.monotonic()
    done = await through(proxy, monkeypatch, aws_url, rollout(spec, commit('b'), contract, after=first))
    seconds = time.monotonic() - started

    assert done.result == RunResult.succeeded, done.sink.lines
    assert [(r.operation, r.fault.kind, r.fired) for r in rules] == [
        (r.operation, r.fault.kind, r.times) for r in rules], 'every fault was injected as often as asked'
    assert any('ListServiceDeployments' in line and 'InternalFailure' in line and 'retry 1 in 2s' in line
               for line in done.sink.lines), done.sink.lines
    listed = calls(proxy.requests('ListServiceDeployments'))
    assert [len(call) for call in listed][:2] == [REQUESTS_PER_CALL, 2]
    assert call_gaps(listed)[0] >= TRANSIENT_BACKOFF[0]
    # One service deployment for the run: no retried request reached ECS twice.
    runs = [d['serviceDeploymentArn'] for d in world.deployments(spec)]
    assert runs == [first.status.service_deployment_arn, done.status.service_deployment_arn], runs
    assert world.deployment(runs[-1])['status'] == 'SUCCESSFUL' and world.green_share(world.prod_rule) == 100.0
    updates = proxy.requests('UpdateService')
    assert [(r.attempt, r.injected) for r in updates] == [(1, 'throttle'), (2, 'throttle'), (3, None)]
    continued = [r for r in proxy.requests('ContinueServiceDeployment') if r.injected is None]
    assert len(continued) == 1, 'CONTINUE reached ECS once'
    print(f'\n(ECS {strategy}) transient: injected {dict(proxy.injected())}; run took {seconds:.1f} s; '
          f'UpdateService retried {gaps(r.at for r in updates)} s apart; '
          f'ListServiceDeployments calls {[len(c) for c in listed]} requests, {call_gaps(listed)} s apart')


async def test_a_throttled_stop_still_rolls_back_a_failing_canary(
        world: World, health: Callable[..., Health], contract: ContractCheck, proxy: FaultProxy,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, aws_url: str) -> None:
    endpoint = health()
    spec = world.spec(endpoint.url, strategy='Canary', canary={'percent': 10, 'bakeMinutes': 5})
    first = await first_rollout(spec, contract)
    endpoint.fail_after = endpoint.hits + 3  # the checks at the hook pass; the first one with 10% on green fails
    rule = proxy.add('throttle', operation='StopServiceDeployment', times=3)

    done = await through(proxy, monkeypatch, aws_url, rollout(spec, commit('b'), contract, after=first))

    assert done.result == RunResult.failed and ready(done)[0] == 'HealthCheckFailed', done.sink.lines
    assert rule.fired == 3
    arn = str(done.status.service_deployment_arn)
    deadline = time.monotonic() + 15
    while (found := world.deployment(arn))['status'] != 'ROLLBACK_SUCCESSFUL' and time.monotonic() < deadline:
        time.sleep(0.05)
    assert found['status'] == 'ROLLBACK_SUCCESSFUL' and 'StopServiceDeployment' in found['statusReason'], found
    assert world.green_share(world.prod_rule) == 0.0
    stops = proxy.requests('StopServiceDeployment')
    assert [r.injected for r in stops] == ['throttle'] * 3 + [None], [r.injected for r in stops]


# -- persistent faults: Failed naming the AWS error, bounded, no hot loop -----------------------------------


PERSISTENT = [
    # (fault, operation, stage timeout, stage that fails, reasons, the code the message names)
    ('throttle', 'UpdateService', 20, StageName.service, ('ServiceUpdateFailed',), 'ThrottlingException'),
    ('drop', 'ListServiceDeployments', 12, StageName.service, ('ServiceUpdateFailed',), 'ConnectionClosedError'),
    ('500', 'DescribeServiceDeployments', 12, StageName.blue_green, ('ServiceUpdateFailed',), 'InternalFailure'),
    ('503', 'ContinueServiceDeployment', 12, StageName.verify, ('ServiceUpdateFailed',), 'ServiceUnavailable'),
]


async def test_persistent_faults_on_the_ecs_calls_fail_the_run_naming_the_aws_error(
        session: boto3.session.Session, health: Callable[..., Health], contract: ContractCheck,  # noqa: F811
        proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, aws_url: str,
        world_factory: Callable[[], World]) -> None:
    """The cases run side by side (each in its own world, faults matched by its service's name)."""
    url = health().url
    worlds = [world_factory() for _ in PERSISTENT]
    specs = [found.spec(url, stage_seconds=case[2]) for found, case in zip(worlds, PERSISTENT, strict=True)]
    firsts = await asyncio.gather(*(first_rollout(spec, contract) for spec in specs))
    cases = []
    for (kind, operation, stage_seconds, stage, reasons, code), found, spec, first in zip(
            PERSISTENT, worlds, specs, firsts, strict=True):
        rule = proxy.add(kind, operation=operation, body=f'svc-{found.suffix}[/"]', times=None)
        cases.append((spec, first, rule, stage, reasons, code, stage_seconds, found))

    outcomes = await through(proxy, monkeypatch, aws_url, asyncio.gather(*(
        timed(rollout(spec, commit('b'), contract, after=first)) for spec, first, *_ in cases)))

    figures = []
    for (_spec, _first, rule, stage, reasons, code, stage_seconds, found), (done, seconds) in zip(
            cases, outcomes, strict=True):
        case = f'{rule.fault.kind} on {rule.operation}'
        assert done.result == RunResult.failed, (case, done.sink.lines)
        record = done.record(stage)
        assert record.result.value == 'Failed', (case, done.results())
        assert code in record.message and rule.operation in record.message, (case, record.message)
        assert record.reason in (*reasons, 'StageTimeout'), (case, record.reason, record.message)
        assert seconds < stage_seconds + 20, (case, seconds)
        groups = calls(proxy.requests(rule=rule))
        assert all(len(g) <= REQUESTS_PER_CALL for g in groups), (case, [len(g) for g in groups])
        between = call_gaps(groups)
        # The stage's attempts spaced by the growing backoff; the last call may be the engine's stop of the
        # run's open deployment, right after the stage failed (best effort, refused the same way).
        assert len(groups) >= 2, (case, between)
        assert all(gap >= TRANSIENT_BACKOFF[index] for index, gap in enumerate(between[:-1])), (case, between)
        assert len(found.deployments(_spec)) <= 2, (case, 'one deployment at most for the run')
        figures.append(f'{case}: {sum(len(g) for g in groups)} requests in {len(groups)} calls over '
                       f'{seconds:.1f} s, calls {between} s apart; {record.reason}')
    print('\n(ECS) persistent:\n  ' + '\n  '.join(figures))


async def test_access_denied_on_update_service_fails_at_once(
        world: World, health: Callable[..., Health], contract: ContractCheck, proxy: FaultProxy,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, aws_url: str) -> None:
    spec = world.spec(health().url)
    first = await first_rollout(spec, contract)
    rule = proxy.add('403', operation='UpdateService', times=None)

    done = await through(proxy, monkeypatch, aws_url, rollout(spec, commit('b'), contract, after=first))

    record = done.record(StageName.service)
    assert done.result == RunResult.failed and record.reason == 'ServiceUpdateFailed', (record, done.sink.lines)
    assert 'AccessDeniedException' in record.message and 'UpdateService' in record.message, record.message
    assert 'gave up' not in record.message and rule.fired == 1  # not retried
    assert len(world.deployments(spec)) == 1


@pytest.mark.parametrize('persistent', [False, True])
async def test_faults_on_describe_service_revisions_as_a_restarted_run_looks_for_its_deployment(
        world: World, health: Callable[..., Health], contract: ContractCheck, proxy: FaultProxy,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, aws_url: str, persistent: bool) -> None:
    """DescribeServiceRevisions is asked only when stage 3 finds deployments it did not record: after a restart
    between UpdateService and saving the ARN (test_ecs_resume.py)."""
    spec = world.spec(health().url, stage_seconds=12)
    first = await first_rollout(spec, contract)
    stopped = await killed_after('UpdateService', spec, commit('b'), contract, after=first)
    [_, started] = [d['serviceDeploymentArn'] for d in world.deployments(spec)]
    rule = proxy.add('500', operation='DescribeServiceRevisions', times=None if persistent else REQUESTS_PER_CALL + 1)

    resumed = await through(proxy, monkeypatch, aws_url, resume(spec, stopped, contract))

    assert [d['serviceDeploymentArn'] for d in world.deployments(spec)][1:] == [started], 'no second deployment'
    if not persistent:
        assert resumed.result == RunResult.succeeded and rule.fired == REQUESTS_PER_CALL + 1, resumed.sink.lines
        assert resumed.status.service_deployment_arn == started
        return
    record = resumed.record(StageName.service)
    assert resumed.result == RunResult.failed and record.reason in ('ServiceUpdateFailed', 'StageTimeout'), record
    assert 'DescribeServiceRevisions' in record.message and 'InternalFailure' in record.message, record.message


async def timed(runs: Any) -> tuple[Rollout, float]:
    started = time.monotonic()
    done = await runs
    return done, time.monotonic() - started
