"""Stages 3 to 6 for real: the engine with the real adapters against the sandbox AWS.

`controller.pipeline.Engine` drives a run in-process with the adapters of
`controller.adapters.wiring.make_adapters` (boto3 through `AWS_ENDPOINT_URL`,
urllib for the health checks), against the sandbox (moto plus the CodeDeploy
ECS deployment simulator, hooks reporting Succeeded on their own). Each run
starts from a status whose stages 1 and 2 are recorded (revision, image URI
and digest), so no Docker is needed there. The health checks hit a real HTTP
server the test starts (`spec.healthCheck.url`), healthy, or failing after k
requests. Each test has its own cluster, load balancer and target groups
(`tests.integration.awsworld`), and starts with no service and no deployment
group: the first rollout creates the service, the second the CodeDeploy
application and group from `spec.blueGreen.loadBalancer`.

The last test runs all six stages with `panda-deploy run` as a subprocess:
git (file://), the Docker engine, a real registry (PANDA_DEPLOY_REGISTRY) and
the sandbox AWS.

The CodeDeploy request shapes (CreateDeployment, ContinueDeployment,
StopDeployment) are pinned with a botocore Stubber against the service model
in test_aws_adapters.py (`test_request_shapes_match_the_codedeploy_service_model`).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import http.server
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3.session
import pytest
import yaml

from controller import conditions
from controller.adapters.wiring import make_adapters
from controller.credentials import AwsKeys, Credentials
from controller.errors import Aborted
from controller.models import (
    ImageStatus,
    PandaDeploySpec,
    PandaDeployStatus,
    Phase,
    RunResult,
    StageName,
    StageRecord,
    StageResult,
)
from controller.pipeline import Engine, Recorder, Run, default_stages
from controller.pipeline.build import image_tag
from controller.sandbox.aws import LIFECYCLE_EVENTS, AwsSandbox, Timings
from tests.fakes import MemorySink
from tests.integration.awsworld import (  # noqa: F401 (session is a fixture)
    REGION,
    World,
    image_uri,
    layout_document,
    production_target_group,
    session,
    world,
)
from tests.integration.test_run_until_push import make_repository

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHECKS = 3
POLL_SECONDS = 0.1
CREDENTIALS = Credentials(aws=AwsKeys(access_key_id='testing', secret_access_key='testing'))
DONE = ('Succeeded', 'Failed', 'Stopped')


# -- the sandbox AWS, and a health endpoint ---------------------------------------------


@pytest.fixture(scope='module')
def aws_sandbox() -> Iterator[AwsSandbox]:
    with AwsSandbox(port=0, auto_hooks=True,
                    timings=Timings(step_seconds=0.1, auto_hook_seconds=0.1, tick_seconds=0.02)) as sandbox:
        yield sandbox


@pytest.fixture(scope='module')
def aws_url(aws_sandbox: AwsSandbox) -> str:
    """Overrides awsworld's: the `session` fixture points AWS_ENDPOINT_URL here."""
    return aws_sandbox.url


class Health:
    """A /health endpoint: 200, or 503 from request `fail_after + 1` on."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.hits = 0
        self._lock = threading.Lock()
        health = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with health._lock:
                    health.hits += 1
                    failing = health.fail_after is not None and health.hits > health.fail_after
                status, body = (503, b'unhealthy') if failing else (200, b'{"status": "ok"}')
                self.send_response(status)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}/health'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def health() -> Iterator[Callable[..., Health]]:
    started: list[Health] = []

    def start(fail_after: int | None = None) -> Health:
        started.append(Health(fail_after))
        return started[-1]

    yield start
    for server in started:
        server.close()


# -- driving the engine -----------------------------------------------------------------



@dataclasses.dataclass
class Rollout:
    result: RunResult
    run: Run
    sink: MemorySink

    @property
    def status(self) -> PandaDeployStatus:
        return self.run.status

    def results(self) -> dict[str, str]:
        return {record.name.value: record.result.value for record in self.status.stages}

    def record(self, name: StageName) -> StageRecord:
        found = self.status.stage_record(name)
        assert found is not None, (name, self.status.stages)
        return found


def rollout_spec(found: World, health_url: str, **blue_green: Any) -> PandaDeploySpec:
    """The world's spec with its load balancer layout, the health endpoint, and fast, bounded checks."""
    document = found.spec.dump()
    document['image'] = {'repository': 'panda-app'}
    document['blueGreen'] = {**layout_document(found), **blue_green}
    document['healthCheck'] = {'url': health_url, 'checks': CHECKS, 'intervalSeconds': 0, 'timeoutSeconds': 2}
    document['timeouts'] = {'stageSeconds': 60, 'totalSeconds': 120}
    return PandaDeploySpec.model_validate(document)


def prepare(spec: PandaDeploySpec, *, revision: str, status: PandaDeployStatus | None = None,
            approval: Callable[[], str | None] = lambda: None, generation: int = 1) -> tuple[Run, MemorySink]:
    """A new run whose stages 1-2 are recorded: revision, and the image pushed as repository:revision."""
    sink = MemorySink()
    recorder = Recorder(sink=sink, status=status or PandaDeployStatus(), generation=generation)
    run = Run(spec=spec, credentials=CREDENTIALS, recorder=recorder, logger=logging.getLogger('test.rollout'),
              approval=approval)
    recorder.begin()
    now = conditions.now()
    run.status.set_revision(revision)
    run.status.image = ImageStatus(uri=image_uri(revision, spec.repository_name),
                                   digest='sha256:' + hashlib.sha256(revision.encode()).hexdigest(),
                                   dockerfile='Dockerfile')
    run.status.stages = [
        StageRecord(number=name.number, name=name, result=StageResult.succeeded, started_at=now, completed_at=now,
                    message=f'{name.value} recorded by the test')
        for name in (StageName.build, StageName.push)]
    return run, sink


async def drive(run: Run, sink: MemorySink) -> Rollout:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix='rollout-worker') as pool:
        adapters = make_adapters  # ECR (no registry set); nothing is pushed here
        engine = Engine(stages=default_stages(poll_seconds=POLL_SECONDS), adapters=adapters, pool=pool)
        result = await engine.drive(run)
    return Rollout(result=result, run=run, sink=sink)


async def rollout(spec: PandaDeploySpec, revision: str, *, after: Rollout | None = None) -> Rollout:
    """One run of stages 3-6 for `revision`, carrying the status (history, colour) of the run `after`."""
    generation = after.run.generation + 1 if after else 1
    # A copy: each Rollout keeps the status its run ended with.
    status = after.status.model_copy(deep=True) if after else None
    run, sink = prepare(spec, revision=revision, status=status, generation=generation)
    return await drive(run, sink)


def commit(letter: str) -> str:
    return letter * 40


# -- what AWS says --------------------------------------------------------------------


def service_of(session: boto3.session.Session, spec: PandaDeploySpec) -> dict[str, Any]:
    services = session.client('ecs').describe_services(cluster=spec.ecs.cluster,
                                                       services=[spec.ecs.service])['services']
    active = [s for s in services if s['status'] == 'ACTIVE']
    assert len(active) == 1, services
    return active[0]


def revisions(session: boto3.session.Session, spec: PandaDeploySpec) -> list[str]:
    return session.client('ecs').list_task_definitions(familyPrefix=spec.ecs.service)['taskDefinitionArns']


def deployments(session: boto3.session.Session, spec: PandaDeploySpec) -> list[dict[str, Any]]:
    """The deployment group's deployments started by a user (not CodeDeploy's rollbacks), oldest first."""
    cd, code_deploy = session.client('codedeploy'), spec.blue_green.code_deploy
    if code_deploy.application not in cd.list_applications()['applications']:
        return []
    ids = cd.list_deployments(applicationName=code_deploy.application,
                              deploymentGroupName=code_deploy.deployment_group)['deployments']
    found = cd.batch_get_deployments(deploymentIds=ids)['deploymentsInfo'] if ids else []
    return sorted((d for d in found if d.get('creator', 'user') == 'user'), key=lambda d: d['createTime'])


def deployment_status(session: boto3.session.Session, deployment_id: str, *, until: tuple[str, ...] = DONE,
                      seconds: float = 10.0) -> dict[str, Any]:
    """The deployment's info once its status is in `until` (or after `seconds`)."""
    cd = session.client('codedeploy')
    deadline = time.monotonic() + seconds
    while True:
        info = cd.get_deployment(deploymentId=deployment_id)['deploymentInfo']
        if info['status'] in until or time.monotonic() > deadline:
            return dict(info)
        time.sleep(0.05)


def assert_ready(rollout: Rollout, revision: str) -> None:
    ready = conditions.get(rollout.status, 'Ready')
    assert ready is not None and ready.status == 'True', rollout.status.conditions
    assert revision[:7] in ready.message
    assert rollout.status.phase == Phase.succeeded


# -- stages 3-6 -------------------------------------------------------------------------


async def test_first_rollout_creates_the_service_and_needs_no_deployment(
        session: boto3.session.Session, health: Callable[..., Health]) -> None:
    found = world(session, group=False)  # no service, no CodeDeploy application or group yet
    endpoint = health()
    spec = rollout_spec(found, endpoint.url)

    first = await rollout(spec, commit('a'))

    assert first.result == RunResult.succeeded, first.sink.lines
    assert first.results() == {'Build': 'Succeeded', 'Push': 'Succeeded', 'Service': 'Succeeded',
                               'BlueGreen': 'Skipped', 'Verify': 'Succeeded', 'Complete': 'Succeeded'}
    status = first.status
    assert status.task_definition_arn and status.task_definition_arn.endswith(f':task-definition/{spec.ecs.service}:1')
    assert status.code_deploy_deployment_id is None
    service = service_of(session, spec)
    assert service['deploymentController'] == {'type': 'CODE_DEPLOY'}
    assert service['taskDefinition'] == status.task_definition_arn
    assert [lb['targetGroupArn'] for lb in service['loadBalancers']] == [found.blue_arn]
    definition = session.client('ecs').describe_task_definition(
        taskDefinition=status.task_definition_arn)['taskDefinition']
    # By digest: the image Push recorded, whatever its tag names later.
    assert definition['containerDefinitions'][0]['image'] == (
        f"{image_uri(commit('a')).rsplit(':', 1)[0]}@{status.image.digest}")
    assert deployments(session, spec) == []  # nothing to switch: the service was created with the revision

    # Verify checked the configured URL, CHECKS times, all passing.
    assert endpoint.hits == CHECKS
    assert status.health_check is not None
    assert (status.health_check.url, status.health_check.passed, status.health_check.failed,
            status.health_check.total) == (endpoint.url, CHECKS, 0, CHECKS)
    assert status.health_check.error_rate == 0 and status.health_check.latency_max_ms is not None
    # Complete: blue serves production, through the production listener.
    assert production_target_group(session, found) == found.blue_arn
    assert status.active_color == 'blue'
    assert status.blue_url == f'http://{found.dns_name}' and status.green_url == f'http://{found.dns_name}:8080'
    assert_ready(first, commit('a'))
    assert [reason for _, reason, _ in first.sink.events] == [
        'Started', 'ServiceSucceeded', 'BlueGreenSkipped', 'VerifySucceeded', 'Succeeded']
    assert status.history[0].active_color == 'blue' and status.history[0].result == RunResult.succeeded


async def test_second_rollout_goes_through_one_codedeploy_deployment_and_swaps_colours(
        session: boto3.session.Session, health: Callable[..., Health]) -> None:
    found = world(session, group=False)
    endpoint = health()
    spec = rollout_spec(found, endpoint.url)
    first = await rollout(spec, commit('a'))
    assert first.result == RunResult.succeeded, first.sink.lines
    first_arn = first.status.task_definition_arn

    second = await rollout(spec, commit('b'), after=first)

    assert second.result == RunResult.succeeded, second.sink.lines
    assert second.results() == {'Build': 'Succeeded', 'Push': 'Succeeded', 'Service': 'Succeeded',
                                'BlueGreen': 'Succeeded', 'Verify': 'Succeeded', 'Complete': 'Succeeded'}
    status = second.status
    assert status.task_definition_arn and status.task_definition_arn.endswith(f'/{spec.ecs.service}:2')
    assert status.task_definition_arn != first_arn
    assert len(revisions(session, spec)) == 2
    started = deployments(session, spec)
    assert [d['deploymentId'] for d in started] == [status.code_deploy_deployment_id]
    info = deployment_status(session, status.code_deploy_deployment_id)
    assert info['status'] == 'Succeeded', info
    assert info['description'].startswith(f'panda-deploy run {status.deployment_id} ')
    # The group the operator created from spec.blueGreen.loadBalancer waits for us before shifting traffic.
    group = session.client('codedeploy').get_deployment_group(
        applicationName=spec.blue_green.code_deploy.application,
        deploymentGroupName=spec.blue_green.code_deploy.deployment_group)['deploymentGroupInfo']
    assert group['blueGreenDeploymentConfiguration']['deploymentReadyOption']['actionOnTimeout'] == 'STOP_DEPLOYMENT'

    # Production moved to the other target group; the service runs the new revision there.
    assert production_target_group(session, found) == found.green_arn
    service = service_of(session, spec)
    assert service['taskDefinition'] == status.task_definition_arn
    assert status.active_color == 'green'
    assert status.green_url == f'http://{found.dns_name}' and status.blue_url == f'http://{found.dns_name}:8080'
    assert [entry.active_color for entry in status.history] == ['green', 'blue']
    assert endpoint.hits == 2 * CHECKS
    assert status.health_check is not None and status.health_check.passed == CHECKS
    assert_ready(second, commit('b'))
    lines = second.sink.lines
    assert any(f'CodeDeploy deployment {status.code_deploy_deployment_id} created' in line for line in lines)
    assert any(f'HealthCheck in progress - Check {CHECKS}/{CHECKS}' in line for line in lines)
    assert any('Traffic switched to green' in line for line in lines), lines

    # And back: the next revision goes to blue, the target group not serving production.
    third = await rollout(spec, commit('c'), after=second)
    assert third.result == RunResult.succeeded, third.sink.lines
    assert third.status.task_definition_arn.endswith(':3')
    assert production_target_group(session, found) == found.blue_arn
    assert third.status.active_color == 'blue'
    assert len(deployments(session, spec)) == 2
    assert [entry.active_color for entry in third.status.history] == ['blue', 'green', 'blue']


async def test_the_same_image_again_registers_nothing_and_deploys_nothing(
        session: boto3.session.Session, health: Callable[..., Health]) -> None:
    found = world(session, group=False)
    spec = rollout_spec(found, health().url)
    first = await rollout(spec, commit('a'))
    assert first.result == RunResult.succeeded, first.sink.lines

    again = await rollout(spec, commit('a'), after=first)  # a new run for the same commit

    assert again.result == RunResult.succeeded, again.sink.lines
    assert again.results()['Service'] == 'Skipped' and again.results()['BlueGreen'] == 'Skipped'
    assert again.status.task_definition_arn == first.status.task_definition_arn
    assert any('Task definition unchanged' in line for line in again.sink.lines)
    assert len(revisions(session, spec)) == 1 and deployments(session, spec) == []
    assert_ready(again, commit('a'))

    # After a rollout through CodeDeploy too: the service now runs revision 2, which is what a rerun wants.
    second = await rollout(spec, commit('b'), after=again)
    assert second.result == RunResult.succeeded, second.sink.lines
    rerun = await rollout(spec, commit('b'), after=second)

    assert rerun.result == RunResult.succeeded, rerun.sink.lines
    assert rerun.results()['BlueGreen'] == 'Skipped'
    assert rerun.status.task_definition_arn == second.status.task_definition_arn
    assert rerun.status.code_deploy_deployment_id is None
    assert len(revisions(session, spec)) == 2
    assert [d['deploymentId'] for d in deployments(session, spec)] == [second.status.code_deploy_deployment_id]
    assert production_target_group(session, found) == found.green_arn
    assert rerun.status.active_color == 'green'
    assert_ready(rerun, commit('b'))


async def test_a_failing_health_check_stops_the_deployment_and_rolls_back(
        session: boto3.session.Session, health: Callable[..., Health]) -> None:
    found = world(session, group=False)
    endpoint = health(fail_after=CHECKS + 1)  # the first rollout's checks pass, then one more, then 503
    spec = rollout_spec(found, endpoint.url)
    first = await rollout(spec, commit('a'))
    assert first.result == RunResult.succeeded, first.sink.lines
    first_arn = first.status.task_definition_arn

    failed = await rollout(spec, commit('b'), after=first)

    assert failed.result == RunResult.failed
    assert failed.results() == {'Build': 'Succeeded', 'Push': 'Succeeded', 'Service': 'Succeeded',
                                'BlueGreen': 'Succeeded', 'Verify': 'Failed'}
    record = failed.record(StageName.verify)
    assert record.reason == 'HealthCheckFailed'
    assert endpoint.url in record.message and f'2/{CHECKS}' in record.message, record.message
    status = failed.status
    assert status.phase == Phase.failed
    assert status.health_check is not None
    assert (status.health_check.passed, status.health_check.failed, status.health_check.total) == (1, 2, CHECKS)
    ready = conditions.get(status, 'Ready')
    assert ready is not None and ready.status == 'False' and ready.reason == 'HealthCheckFailed'
    assert status.history[0].result == RunResult.failed and status.history[0].reason == 'HealthCheckFailed'
    assert ('Warning', 'HealthCheckFailed') in [(kind, reason) for kind, reason, _ in failed.sink.events]

    # CodeDeploy stopped the deployment and rolled back: production never left blue, blue runs revision 1.
    assert [d['deploymentId'] for d in deployments(session, spec)] == [status.code_deploy_deployment_id]
    info = deployment_status(session, status.code_deploy_deployment_id)
    assert info['status'] == 'Stopped', info
    assert info.get('rollbackInfo', {}).get('rollbackDeploymentId'), info
    assert production_target_group(session, found) == found.blue_arn
    assert service_of(session, spec)['taskDefinition'] == first_arn
    assert endpoint.hits == 2 * CHECKS  # no checks after the first failure's run ended


async def waiting_for_promotion(run: Run, sink: MemorySink, task: asyncio.Task[Rollout]) -> None:
    """Until the run waits in Verify for its promotion (green checked and ready, production on blue)."""
    deadline = time.monotonic() + 30
    while run.status.promotion is None and not task.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not task.done(), sink.lines
    assert run.status.stage_name == StageName.verify and run.status.phase == Phase.progressing


async def test_manual_promotion_waits_for_an_approval_naming_this_run_then_shifts_traffic(
        session: boto3.session.Session, health: Callable[..., Health]) -> None:
    found = world(session, group=False)
    endpoint = health()
    spec = rollout_spec(found, endpoint.url, promotion='manual')
    first = await rollout(spec, commit('a'))  # no deployment, so nothing to promote
    assert first.result == RunResult.succeeded, first.sink.lines
    assert first.status.promotion is None

    # The promote annotation still names the first run: left over, it promotes nothing now.
    approval: list[str | None] = [first.status.deployment_id]
    run, sink = prepare(spec, revision=commit('b'), status=first.status.model_copy(deep=True),
                        approval=lambda: approval[0], generation=2)
    task = asyncio.create_task(drive(run, sink))
    await waiting_for_promotion(run, sink, task)
    this_run = run.status.deployment_id
    assert this_run and this_run != first.status.deployment_id
    assert run.status.promotion == (
        f'Green passed {CHECKS}/{CHECKS} checks; deploy.panda.dev/promote names {first.status.deployment_id}, '
        f'not this run {this_run}; annotate with {this_run} to shift traffic')
    assert any(save.get('promotion') for save in sink.saves)  # written to the resource's status

    await asyncio.sleep(1.0)  # still waiting: green is ready, production stays on blue
    assert not task.done()
    deployment_id = run.status.code_deploy_deployment_id
    assert deployment_id
    info = await asyncio.to_thread(deployment_status, session, deployment_id, until=('Ready',), seconds=0)
    assert info['status'] == 'Ready'
    assert await asyncio.to_thread(production_target_group, session, found) == found.blue_arn
    assert endpoint.hits == 2 * CHECKS  # checked once, not again while waiting
    assert sum('Waiting for promotion' in line for line in sink.lines) == 1
    assert sum(1 for save in sink.saves if save.get('promotion')) == 1, 'news once, not a write per poll'

    approval[0] = this_run
    promoted = await asyncio.wait_for(task, timeout=30)

    assert promoted.result == RunResult.succeeded, sink.lines
    assert promoted.status.promotion is None
    assert promoted.status.active_color == 'green'
    assert production_target_group(session, found) == found.green_arn
    assert deployment_status(session, deployment_id)['status'] == 'Succeeded'
    assert_ready(promoted, commit('b'))


async def test_an_abort_during_the_manual_wait_stops_the_deployment_and_traffic_stays(
        session: boto3.session.Session, health: Callable[..., Health]) -> None:
    found = world(session, group=False)
    endpoint = health()
    spec = rollout_spec(found, endpoint.url, promotion='manual')
    first = await rollout(spec, commit('a'))
    assert first.result == RunResult.succeeded, first.sink.lines
    first_arn = first.status.task_definition_arn
    run, sink = prepare(spec, revision=commit('b'), status=first.status.model_copy(deep=True), generation=2)
    task = asyncio.create_task(drive(run, sink))
    await waiting_for_promotion(run, sink, task)
    deployment_id = run.status.code_deploy_deployment_id
    assert deployment_id

    # What the reconciler does when deploy.panda.dev/abort names the run in flight.
    run.abort = Aborted(run_id=run.status.deployment_id or '', where=f'at stage {run.status.stage}')
    run.cancel_result = RunResult.failed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    status = run.status
    assert status.phase == Phase.failed and status.promotion is None
    ready = conditions.get(status, 'Ready')
    assert ready is not None and (ready.status, ready.reason) == ('False', 'Aborted')
    assert ready.message == (f'Run {status.deployment_id} aborted at stage 5/6 Verify by deploy.panda.dev/abort='
                             f'{status.deployment_id}; production stays where it was')
    record = status.stage_record(StageName.verify)
    assert record is not None and (record.result, record.reason) == (StageResult.failed, 'Aborted')
    assert status.history[0].result == RunResult.failed and status.history[0].reason == 'Aborted'
    assert ('Warning', 'Aborted') in [(kind, reason) for kind, reason, _ in sink.events]
    # CodeDeploy stopped the deployment and rolled back: production never left blue, blue runs revision 1.
    info = deployment_status(session, deployment_id)
    assert info['status'] == 'Stopped', info
    assert info.get('rollbackInfo', {}).get('rollbackDeploymentId'), info
    assert production_target_group(session, found) == found.blue_arn
    assert service_of(session, spec)['taskDefinition'] == first_arn
    assert endpoint.hits == 2 * CHECKS


async def test_every_lifecycle_event_of_the_deployment_is_reported(
        session: boto3.session.Session, health: Callable[..., Health]) -> None:
    found = world(session)  # the service (revision 1, blue) and the deployment group exist already
    spec = rollout_spec(found, health().url)

    second = await rollout(spec, commit('b'))

    assert second.result == RunResult.succeeded, second.sink.lines
    reported = [line.split('Lifecycle ', 1)[1].split(':', 1)[0] for line in second.sink.lines
                if '] Lifecycle ' in line]
    assert list(dict.fromkeys(reported)) == list(LIFECYCLE_EVENTS), second.sink.lines


# -- all six stages: panda-deploy run -------------------------------------------------------


def _git(work: pathlib.Path, *args: str) -> str:
    return subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@example.test', '-C', str(work), *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def run_cli(tmp_path: pathlib.Path, *, aws_url: str, registry: str, out: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(('AWS_', 'PANDA_DEPLOY_'))}
    env.update(AWS_ENDPOINT_URL=aws_url, AWS_EC2_METADATA_DISABLED='true', AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, PANDA_DEPLOY_REGISTRY=registry,
               PANDA_DEPLOY_POLL_SECONDS=str(POLL_SECONDS), HOME=str(tmp_path / 'home'), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, '-m', 'controller', 'run', '-f', 'app.yaml', '-s', 'secrets.yaml',
                           '--status-out', out], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.docker
def test_panda_deploy_run_goes_through_all_six_stages(
        tmp_path: pathlib.Path, session: boto3.session.Session, aws_url: str, docker_client: Any,
        base_image: str, registry: str, health: Callable[..., Health]) -> None:
    found = world(session, group=False)
    endpoint = health()
    bare = make_repository(tmp_path / 'git')
    repository = f'rollout-{found.spec.ecs.service}'
    manifest = {
        'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
        'metadata': {'name': 'sample-app', 'namespace': 'default'},
        'spec': {
            **rollout_spec(found, endpoint.url).dump(),
            'source': {'url': bare.as_uri(), 'branch': 'main', 'buildArgs': {'BASE_IMAGE': base_image}},
            'aws': {'region': REGION, 'credentialsSecretRef': {'name': 'aws-creds'}},
            'image': {'repository': repository},
        },
    }
    secrets = [{'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'aws-creds'},
                'stringData': {'accessKeyId': 'AKIDROLLOUT', 'secretAccessKey': 'rollout-secret-5c7e9a'}}]
    (tmp_path / 'app.yaml').write_text(yaml.safe_dump(manifest))
    (tmp_path / 'secrets.yaml').write_text(yaml.safe_dump_all(secrets))

    first = run_cli(tmp_path, aws_url=aws_url, registry=registry, out='first.yaml')

    assert first.returncode == 0, first.stdout + first.stderr
    status = yaml.safe_load((tmp_path / 'first.yaml').read_text())
    revision = _git(tmp_path / 'git' / 'work', 'rev-parse', 'HEAD')
    assert [(s['number'], s['name'], s['result']) for s in status['stages']] == [
        (1, 'Build', 'Succeeded'), (2, 'Push', 'Succeeded'), (3, 'Service', 'Succeeded'),
        (4, 'BlueGreen', 'Skipped'), (5, 'Verify', 'Succeeded'), (6, 'Complete', 'Succeeded')]
    assert status['phase'] == 'Succeeded' and status['revision'] == revision
    tag = image_tag(PandaDeploySpec.model_validate(manifest['spec']), revision)
    assert status['image']['uri'].endswith(f'/{repository}:{tag}') and status['image']['digest']
    assert status['activeColor'] == 'blue'
    assert service_of(session, found.spec)['taskDefinition'] == status['taskDefinitionArn']
    definition = session.client('ecs').describe_task_definition(taskDefinition=status['taskDefinitionArn'])
    assert definition['taskDefinition']['containerDefinitions'][0]['image'] == (
        f"{status['image']['uri'].rsplit(':', 1)[0]}@{status['image']['digest']}")
    assert endpoint.hits == CHECKS
    assert 'rollout-secret-5c7e9a' not in first.stdout + first.stderr + (tmp_path / 'first.yaml').read_text()

    # A new commit: built, pushed, and rolled out through CodeDeploy to green.
    work = tmp_path / 'git' / 'work'
    (work / 'www' / 'version.txt').write_text('2\n')
    _git(work, 'add', '.')
    _git(work, 'commit', '-qm', 'version 2')
    _git(work, 'push', '-q', str(bare), 'main')

    second = run_cli(tmp_path, aws_url=aws_url, registry=registry, out='second.yaml')

    assert second.returncode == 0, second.stdout + second.stderr
    status = yaml.safe_load((tmp_path / 'second.yaml').read_text())
    assert [(s['name'], s['result']) for s in status['stages']] == [
        (name.value, 'Succeeded') for name in StageName]
    assert status['revision'] == _git(work, 'rev-parse', 'HEAD') != revision
    assert status['codeDeployDeploymentId'] and status['taskDefinitionArn'].endswith(':2')
    assert status['activeColor'] == 'green'
    assert production_target_group(session, found) == found.green_arn
    assert [d['deploymentId'] for d in deployments(session, found.spec)] == [status['codeDeployDeploymentId']]
    conditions_by_type = {c['type']: c for c in status['conditions']}
    assert conditions_by_type['Ready']['status'] == 'True'
    lines = second.stdout.splitlines()
    for expected in ('[Stage 1] Docker image built: ', '[Stage 2] Image pushed: ', '[Stage 3] Task definition registered: ',
                     '[Stage 4] CodeDeploy deployment ', '[Stage 5] HealthCheck in progress - Check 3/3',
                     '[Stage 5] Traffic switched to green'):
        assert any(line.startswith(expected) for line in lines), (expected, lines)
