"""Faults on the way to AWS, the Docker engine and the registry, and what a run makes of them.

AWS: the sandbox (`AwsSandbox`: moto plus the CodeDeploy simulator) is served
behind `tests.faultproxy.FaultProxy`, and runs of stages 3-6 go through the
real adapters (`make_adapters`, AWS_ENDPOINT_URL at the proxy) as in
test_rollout.py. The proxy injects throttling (400 with the protocol's body:
`ThrottlingException` in JSON 1.1 for ECS and CodeDeploy, `Throttling` in
query XML for ELBv2), 500 `InternalFailure`, 503 `ServiceUnavailable`, dropped
connections and slow answers, and records each request with its time and
botocore's invocation id and attempt number.
- Transient faults of every kind: the run succeeds (botocore retries within a
  call, 4 retries; past that, the engine retries the stage).
- Persistent faults: the run ends Failed naming the AWS error code, within the
  stage timeout; the proxy's timestamps show no hot loop: at most 5 requests
  per call, and the stage's attempts spaced by the engine's growing backoff
  (2 s, then 5 s, ...).

Docker engine: a private dockerd (own data-root, exec-root, pidfile and
socket, vfs) is stopped with SIGTERM while `panda-deploy run --until Build`
has a `RUN sleep` step in progress. A stopping engine kills the step (exit 137)
and closes its socket; the adapter sees the engine no longer answers and
reports that as transient (not a BuildFailed of the user's Dockerfile), so the
stage is retried with backoff and succeeds once the engine is back. An engine
that stays down fails the stage naming the engine's address.

Registry: an OCI registry behind the proxy refuses pushes. The engine itself
retries layer uploads (5, 10, 15, 20 s apart) but not the manifest; the
operator retries a push the registry answered with a 5xx or 429 (Transient),
so a registry that refuses the first attempts still gets the image; a 403 or
a persistent 5xx ends the run Failed with reason PushFailed naming the answer.
"""
from __future__ import annotations

import asyncio
import collections
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3.session
import docker
import docker.errors
import pytest
import yaml

from controller.models import PandaDeploySpec, RunResult, StageName
from controller.pipeline.build import local_tag
from controller.pipeline.engine import TRANSIENT_BACKOFF
from controller.sandbox.aws import AwsSandbox
from controller.sandbox.stack import localdocker
from tests.conftest import unavailable
from tests.faultproxy import Fault, FaultProxy, Request, gaps
from tests.integration.awsworld import REGION, World, production_target_group, session, world  # noqa: F401
from tests.integration.test_rollout import (  # noqa: F401 (aws_sandbox and aws_url are fixtures)
    Health,
    Rollout,
    aws_sandbox,
    aws_url,
    commit,
    deployments,
    drive,
    prepare,
    rollout_spec,
)
from tests.integration.test_run_until_push import make_repository, registry_digest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# botocore's adaptive mode, max_attempts 4 (controller/adapters/aws.py): 1 request + 4 retries per call.
REQUESTS_PER_CALL = 5
INJECTED: collections.Counter[str] = collections.Counter()  # over the whole module, for the summary


# -- the sandbox AWS behind the proxy ----------------------------------------------------------


# test_rollout's `aws_sandbox` and `aws_url` fixtures: the sandbox itself (the tests set their worlds up and
# check them without faults); the operator's adapters reach it through the proxy.


@pytest.fixture(scope='module')
def aws_proxy(aws_sandbox: AwsSandbox) -> Iterator[FaultProxy]:
    with FaultProxy(aws_sandbox.url) as proxy:
        yield proxy


@pytest.fixture
def proxy(aws_proxy: FaultProxy) -> Iterator[FaultProxy]:
    aws_proxy.reset()
    yield aws_proxy
    INJECTED.update(aws_proxy.injected())
    aws_proxy.reset()


@pytest.fixture(scope='module', autouse=True)
def _summary() -> Iterator[None]:
    yield
    print(f'\nfaults injected in test_faults.py, by kind: {dict(sorted(INJECTED.items()))}')


def with_timeouts(spec: PandaDeploySpec, stage: int, total: int = 300) -> PandaDeploySpec:
    document = spec.dump()
    document['timeouts'] = {'stageSeconds': stage, 'totalSeconds': total}
    return PandaDeploySpec.model_validate(document)


def suffix(found: World) -> str:
    """The world's unique name part (its service is svc-<suffix>, its load balancer lb-<suffix>, ...)."""
    return found.spec.ecs.service.removeprefix('svc-')


def calls(requests: list[Request]) -> list[list[Request]]:
    """Requests grouped by SDK call (botocore's invocation id), in order of the call's first request."""
    grouped: dict[str, list[Request]] = {}
    for request in requests:
        grouped.setdefault(request.invocation or f'none-{request.number}', []).append(request)
    return sorted(grouped.values(), key=lambda group: group[0].at)


def call_gaps(groups: list[list[Request]]) -> list[float]:
    """Seconds from the last request of one call to the first of the next: the engine's backoff."""
    return [round(b[0].at - a[-1].at, 3) for a, b in zip(groups, groups[1:], strict=False)]


async def faulty_rollout(spec: PandaDeploySpec, revision: str) -> tuple[Rollout, float]:
    run, sink = prepare(spec, revision=revision)
    started = time.monotonic()
    done = await drive(run, sink)
    return done, time.monotonic() - started


# -- (a) transient faults: the run succeeds -------------------------------------------------------


async def test_transient_faults_of_every_kind_are_absorbed_and_the_run_succeeds(
        session: boto3.session.Session, aws_url: str, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    found = world(session)  # the service on blue and the deployment group exist: this rollout goes to green
    endpoint = Health()
    try:
        spec = rollout_spec(found, endpoint.url)
        proxy.schedule[1] = Fault('503')  # the run's very first request, whatever it is
        rules = [
            proxy.add('throttle', operation='RegisterTaskDefinition', times=2),  # ECS, JSON 1.1
            proxy.add('503', operation='DescribeServices', times=2),
            proxy.add('500', operation='CreateDeployment', times=REQUESTS_PER_CALL + 1),  # beyond botocore's retries
            proxy.add('drop', operation='GetDeployment', times=2),  # CodeDeploy
            proxy.add('throttle', operation='DescribeListeners', times=2),  # ELBv2, query/XML
            proxy.add('503', operation='DescribeLoadBalancers', times=1),
            proxy.add('drop', operation='ContinueDeployment', times=1),
            proxy.add(Fault('delay', seconds=1.5), operation='GetDeploymentTarget', times=2),
            proxy.add(Fault('delay', seconds=1.5), operation='DescribeTaskDefinition', times=1),
        ]
        monkeypatch.setenv('AWS_ENDPOINT_URL', proxy.url)

        done, seconds = await faulty_rollout(spec, commit('b'))

        monkeypatch.setenv('AWS_ENDPOINT_URL', aws_url)  # checked without faults from here on
    finally:
        endpoint.close()
    assert done.result == RunResult.succeeded, done.sink.lines
    assert done.results() == {name.value: 'Succeeded' for name in StageName}
    assert [(r.operation, r.fault.kind, r.fired) for r in rules] == [
        (r.operation, r.fault.kind, r.times) for r in rules], 'every fault was injected as often as asked'
    # The CreateDeployment faults outlasted botocore's retries: the engine retried the stage, after 2 s...
    assert any('CreateDeployment' in line and 'InternalFailure' in line and 'retry 1 in 2s' in line
               for line in done.sink.lines), done.sink.lines
    create = calls(proxy.requests('CreateDeployment'))
    assert [len(call) for call in create] == [REQUESTS_PER_CALL, 2]  # 5 refused; 1 refused + 1 answered
    assert call_gaps(create)[0] >= TRANSIENT_BACKOFF[0]
    # ... and CodeDeploy got exactly one deployment: retried requests never reached it twice.
    assert [d['deploymentId'] for d in deployments(session, spec)] == [done.status.code_deploy_deployment_id]
    assert production_target_group(session, found) == found.green_arn
    # Throttling answers are what botocore takes for throttling: retried on the slower (1 s) scale.
    register = proxy.requests('RegisterTaskDefinition')
    assert [(r.attempt, r.injected, r.status) for r in register] == [
        (1, 'throttle', 400), (2, 'throttle', 400), (3, None, 200)]
    injected = proxy.injected()
    assert injected == {'throttle': 4, '503': 4, '500': REQUESTS_PER_CALL + 1, 'drop': 3, 'delay': 3}
    assert (proxy.records[0].injected, proxy.records[1].attempt) == ('503', 2)  # the scheduled one, retried
    print(f'\n(a) transient: injected {dict(injected)}; run took {seconds:.1f} s; '
          f'RegisterTaskDefinition throttled retries {gaps(r.at for r in register)} s apart; '
          f'CreateDeployment calls {[len(c) for c in create]} requests, {call_gaps(create)} s apart')


# -- (b) persistent faults: Failed with the AWS error code, in bounded time; (c) no hot loop ------------


PERSISTENT = [
    # (fault, operation, matched by, stage timeout, stage that fails, the code the message names)
    ('throttle', 'RegisterTaskDefinition', 'svc-{}"', 30, StageName.service, 'ThrottlingException'),
    ('throttle', 'DescribeListeners', 'lb-{}%2F', 30, StageName.verify, 'Throttling'),
    ('503', 'DescribeListeners', 'lb-{}%2F', 12, StageName.verify, 'ServiceUnavailable'),
    ('500', 'CreateDeployment', 'app-{}"', 12, StageName.blue_green, 'InternalFailure'),
    ('drop', 'DescribeServices', 'svc-{}"', 12, StageName.service, 'ConnectionClosedError'),
]


async def test_persistent_faults_fail_the_run_naming_the_aws_error_with_growing_backoff(
        session: boto3.session.Session, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The five cases run side by side (each in its own world, faults matched by its names) to keep time low."""
    endpoint = Health()
    cases = []
    try:
        for kind, operation, pattern, stage_seconds, stage, code in PERSISTENT:
            found = world(session, group=stage == StageName.blue_green)  # a deployment needs the service first
            spec = with_timeouts(rollout_spec(found, endpoint.url), stage_seconds)
            rule = proxy.add(kind, operation=operation, body=pattern.format(suffix(found)), times=None)
            cases.append((spec, rule, stage, code, stage_seconds))
        monkeypatch.setenv('AWS_ENDPOINT_URL', proxy.url)

        outcomes = await asyncio.gather(*(faulty_rollout(spec, commit('b')) for spec, *_ in cases))
    finally:
        endpoint.close()

    figures = []
    for (_spec, rule, stage, code, stage_seconds), (done, seconds) in zip(cases, outcomes, strict=True):
        case = f'{rule.fault.kind} on {rule.operation}'
        assert done.result == RunResult.failed, (case, done.sink.lines)
        record = done.record(stage)
        assert record.result.value == 'Failed', (case, done.results())
        assert f'{code}' in record.message and rule.operation in record.message, (case, record.message)
        assert done.status.message == record.message and done.status.phase.value == 'Failed'
        # Given up before the stage timeout ("gave up after N attempts", with the stage's own reason), or
        # timed out while botocore was still retrying a call: then the message names the last error.
        assert record.reason in (spec_reason(stage), 'StageTimeout'), (case, record.reason)
        assert ('gave up after' in record.message) != (record.reason == 'StageTimeout'), record.message
        assert seconds < stage_seconds + 20, (case, seconds)  # bounded: the stage timeout, plus one call's retries

        # No hot loop: at most 5 requests per SDK call, and the calls spaced by the engine's growing backoff.
        requests = proxy.requests(rule=rule)
        groups = calls(requests)
        assert all(len(g) <= REQUESTS_PER_CALL for g in groups), [len(g) for g in groups]
        assert all([r.attempt for r in g] == list(range(1, len(g) + 1)) for g in groups)
        between = call_gaps(groups)
        assert len(groups) >= 2, (case, len(groups))  # the engine retried at least once
        for index, gap in enumerate(between):
            assert gap >= TRANSIENT_BACKOFF[index], (case, between)
        assert between == sorted(between), (case, between)  # growing
        assert len(requests) <= REQUESTS_PER_CALL * (1 + len(between))
        within = [gaps(r.at for r in g) for g in groups]
        figures.append(f'{case}: {len(requests)} requests in {len(groups)} calls over {seconds:.1f} s, '
                       f'calls {between} s apart, within calls {within}; {record.reason}')
    print('\n(b/c) persistent:\n  ' + '\n  '.join(figures))


def spec_reason(stage: StageName) -> str:
    """The reason a stage fails with when AWS keeps refusing (the adapter's failure reason)."""
    return {StageName.service: 'ServiceUpdateFailed', StageName.blue_green: 'BlueGreenFailed',
            StageName.verify: 'BlueGreenFailed'}[stage]


# -- Docker: a private engine stopped and started during a build ----------------------------------------


class PrivateEngine:
    """A dockerd of our own (vfs), which the tests may stop and start; the shared engine is never touched."""

    def __init__(self) -> None:
        self.root = pathlib.Path(tempfile.mkdtemp(prefix='pd-faults-', dir='/tmp'))  # short: socket paths
        self.socket = self.root / 'docker.sock'
        self.host = f'unix://{self.socket}'
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> docker.DockerClient:
        log = (self.root / f'dockerd-{self.starts}.log').open('wb')
        self.starts += 1
        self.process = subprocess.Popen(
            ['dockerd', '--data-root', str(self.root / 'data'), '--exec-root', str(self.root / 'exec'),
             '--pidfile', str(self.root / 'docker.pid'), '-H', self.host, '--storage-driver=vfs',
             '--iptables=false', '--ip-masq=false', '--bridge=none'],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                client = docker.DockerClient(base_url=self.host, timeout=10)
                client.ping()
                return client
            except (docker.errors.DockerException, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f'private dockerd did not start: {self.log_tail()}') from None
                time.sleep(0.2)

    def stop(self, *, wait: bool = True) -> None:
        """SIGTERM, as a service manager stops it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            if wait:
                self.wait_stopped()

    def wait_stopped(self, seconds: float = 60) -> None:
        assert self.process is not None
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        logs = sorted(self.root.glob('dockerd-*.log'))
        return logs[-1].read_text(errors='replace')[-1500:] if logs else ''

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope='module')
def private_engine() -> Iterator[tuple[PrivateEngine, docker.DockerClient]]:
    if shutil.which('dockerd') is None:
        unavailable('dockerd is not installed (apt-get install docker.io)')
    if os.geteuid() != 0:
        unavailable('a private dockerd needs root')
    engine = PrivateEngine()
    try:
        client = engine.start()
        localdocker.ensure_base_image(client)
    except (RuntimeError, localdocker.Unavailable) as exc:
        engine.remove()
        unavailable(str(exc))
    yield engine, client
    client.close()
    engine.remove()


def git_repository(root: pathlib.Path, dockerfile: str) -> pathlib.Path:
    """A bare repository (file://) whose only file is `dockerfile`."""
    work = root / 'work'
    work.mkdir(parents=True)
    (work / 'Dockerfile').write_text(dockerfile)
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.test', '-C', str(work)]
    subprocess.run(['git', 'init', '-q', '-b', 'main', str(work)], check=True)
    subprocess.run([*git, 'add', '.'], check=True)
    subprocess.run([*git, 'commit', '-qm', 'slow build'], check=True)
    bare = root / 'app.git'
    subprocess.run(['git', 'clone', '-q', '--bare', str(work), str(bare)], check=True)
    return bare


def write_manifest(tmp_path: pathlib.Path, *, url: str, repository: str, base_image: str, stage_seconds: int) -> None:
    manifest = {
        'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
        'metadata': {'name': 'fault-app', 'namespace': 'default'},
        'spec': {
            'source': {'url': url, 'branch': 'main', 'buildArgs': {'BASE_IMAGE': base_image}},
            'aws': {'region': REGION, 'credentialsSecretRef': {'name': 'aws-creds'}},
            'image': {'repository': repository},
            'timeouts': {'stageSeconds': stage_seconds, 'totalSeconds': 600},
        },
    }
    secrets = [{'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'aws-creds'},
                'stringData': {'accessKeyId': 'AKIDFAULTS', 'secretAccessKey': 'faults-secret-3d5f7h'}}]
    (tmp_path / 'app.yaml').write_text(yaml.safe_dump(manifest))
    (tmp_path / 'secrets.yaml').write_text(yaml.safe_dump_all(secrets))


def cli(tmp_path: pathlib.Path, *, until: str, aws: str, registry: str, docker_host: str | None = None,
        out: str = 'status.yaml') -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(('AWS_', 'PANDA_DEPLOY_', 'DOCKER_'))}
    env.update(AWS_ENDPOINT_URL=aws, AWS_EC2_METADATA_DISABLED='true', AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, PANDA_DEPLOY_REGISTRY=registry,
               HOME=str(tmp_path / 'home'), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED='1')
    if docker_host:
        env['DOCKER_HOST'] = docker_host
    return subprocess.Popen([sys.executable, '-m', 'controller', 'run', '-f', 'app.yaml', '-s', 'secrets.yaml',
                             '--until', until, '--status-out', out], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stage(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in status['stages'] if s['name'] == name)


@pytest.mark.docker
def test_an_engine_stopped_mid_build_and_started_again_lets_the_run_succeed(
        tmp_path: pathlib.Path, private_engine: tuple[PrivateEngine, docker.DockerClient], aws_endpoint: str,
        registry: str) -> None:
    engine, client = private_engine
    if not engine.running:
        client = engine.start()
    marker = uuid.uuid4().hex  # a step the layer cache cannot know
    bare = git_repository(tmp_path / 'git', f'ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\n'
                                             f'RUN echo {marker} && sleep 20 && echo slept\n')
    repository = f'faults-restart-{marker[:8]}'
    write_manifest(tmp_path, url=bare.as_uri(), repository=repository, base_image=localdocker.BASE_IMAGE,
                   stage_seconds=120)
    run = cli(tmp_path, until='Build', aws=aws_endpoint, registry=registry, docker_host=engine.host)
    try:
        # The build's RUN step runs in a container of the engine: stop the engine while it sleeps.
        deadline = time.monotonic() + 60
        while not client.containers.list() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.containers.list(), 'the build step never started'
        time.sleep(1)
        stopped_at = time.monotonic()
        engine.stop(wait=True)  # the engine kills the step after its grace period, then exits
        down_for = time.monotonic() - stopped_at
        assert run.poll() is None, 'the run gave up while the engine was stopping'
        time.sleep(3)
        client = engine.start()
        output, _ = run.communicate(timeout=150)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, output
    status = yaml.safe_load((tmp_path / 'status.yaml').read_text())
    assert stage(status, 'Build')['result'] == 'Succeeded', status
    assert status['phase'] == 'Succeeded'
    # The stopped engine was reported as such and retried with backoff, not taken for a failing Dockerfile.
    assert f'Docker engine at {engine.host} stopped during the build' in output, output
    assert 'retry 1 in 2s' in output, output
    assert 'BuildFailed' not in output
    revision = status['revision']
    spec = PandaDeploySpec.model_validate(yaml.safe_load((tmp_path / 'app.yaml').read_text())['spec'])
    image = client.images.get(local_tag(spec, revision))
    assert image.labels['org.opencontainers.image.revision'] == revision
    retries = [line for line in output.splitlines() if 'retry ' in line]
    print(f'\n(3) engine stopped mid-build: down for {down_for:.1f} s after SIGTERM (+3 s), '
          f'{len(retries)} stage retries: {[line.rsplit(";", 1)[-1].strip() for line in retries]}')


@pytest.mark.docker
def test_an_engine_that_stays_down_fails_the_build_naming_it(
        tmp_path: pathlib.Path, private_engine: tuple[PrivateEngine, docker.DockerClient], aws_endpoint: str,
        registry: str) -> None:
    engine, _ = private_engine
    engine.stop()
    bare = git_repository(tmp_path / 'git', 'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n')
    write_manifest(tmp_path, url=bare.as_uri(), repository='faults-down', base_image=localdocker.BASE_IMAGE,
                   stage_seconds=10)
    started = time.monotonic()
    run = cli(tmp_path, until='Build', aws=aws_endpoint, registry=registry, docker_host=engine.host)
    output, _ = run.communicate(timeout=120)
    seconds = time.monotonic() - started

    assert run.returncode != 0, output
    status = yaml.safe_load((tmp_path / 'status.yaml').read_text())
    build = stage(status, 'Build')
    assert build['result'] == 'Failed' and status['phase'] == 'Failed', status
    assert build['reason'] in ('BuildFailed', 'StageTimeout'), build
    assert f'Docker engine unreachable at {engine.host}' in build['message'], build
    assert seconds < 10 + 30, seconds  # the stage timeout, plus the process's start
    print(f'\n(3) engine down: Failed after {seconds:.1f} s: {build["reason"]}: {build["message"]}')


# -- the registry refusing pushes ----------------------------------------------------------------------


@pytest.fixture
def registry_proxy(registry: str) -> Iterator[FaultProxy]:
    with FaultProxy(registry) as proxy:
        yield proxy
        INJECTED.update(proxy.injected())


@pytest.fixture
def pushed(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Repository names whose images the test made in the shared engine: removed afterwards."""
    names: list[str] = []
    yield names
    for image in docker_client.images.list():
        for tag in image.tags:
            if any(f'{name}:' in tag for name in names):
                try:
                    docker_client.images.remove(tag)
                except docker.errors.APIError:
                    pass


def push_run(tmp_path: pathlib.Path, proxy: FaultProxy, *, base_image: str, aws: str, name: str,
             stage_seconds: int) -> tuple[int, str, dict[str, Any]]:
    bare = make_repository(tmp_path / 'git')
    write_manifest(tmp_path, url=bare.as_uri(), repository=name, base_image=base_image, stage_seconds=stage_seconds)
    run = cli(tmp_path, until='Push', aws=aws, registry=proxy.address)
    output, _ = run.communicate(timeout=240)
    return run.returncode, output, yaml.safe_load((tmp_path / 'status.yaml').read_text())


@pytest.mark.docker
def test_a_registry_refusing_the_first_pushes_gets_the_image_in_the_end(
        tmp_path: pathlib.Path, registry_proxy: FaultProxy, base_image: str, aws_endpoint: str,
        registry: str, pushed: list[str]) -> None:
    name = f'faults-push-{uuid.uuid4().hex[:8]}'
    pushed.append(name)
    upload = registry_proxy.add('503', method='POST', path=r'/blobs/uploads/(\?|$)', times=1)  # the engine retries this
    manifest = registry_proxy.add('503', method='PUT', path=r'/manifests/', times=1)  # the operator retries this

    code, output, status = push_run(tmp_path, registry_proxy, base_image=base_image, aws=aws_endpoint, name=name,
                                    stage_seconds=120)

    assert code == 0, output
    assert stage(status, 'Push')['result'] == 'Succeeded' and status['phase'] == 'Succeeded', status
    assert (upload.fired, manifest.fired) == (1, 1)
    assert 'received unexpected HTTP status: 503 Service Unavailable; retry 1 in 2s' in output, output
    # The registry has the manifest the status names.
    assert registry_digest(registry, name, status['image']['uri'].rsplit(':', 1)[1]) == status['image']['digest']
    puts = [r for r in registry_proxy.records if r.method == 'PUT' and '/manifests/' in r.path]
    assert [(r.injected, r.status) for r in puts] == [('503', 503), (None, 201)]
    print(f'\n(4) registry, transient: injected {dict(registry_proxy.injected())}; manifest PUTs '
          f'{gaps(r.at for r in puts)} s apart; the run succeeded')


@pytest.mark.docker
@pytest.mark.parametrize(('kind', 'answer', 'retried'), [
    ('403', 'denied', False),
    ('503', 'received unexpected HTTP status: 503 Service Unavailable', True),
])
def test_a_registry_refusing_every_push_fails_the_run_with_push_failed(
        tmp_path: pathlib.Path, registry_proxy: FaultProxy, base_image: str, aws_endpoint: str,
        pushed: list[str], kind: str, answer: str, retried: bool) -> None:
    name = f'faults-refused-{kind}-{uuid.uuid4().hex[:8]}'
    pushed.append(name)
    # The manifest, not the layers: the engine retries layer uploads for 50 s by itself.
    registry_proxy.add(kind, method=('PUT', 'POST', 'PATCH'), path=r'^/v2/.*/manifests/', times=None)
    started = time.monotonic()

    code, output, status = push_run(tmp_path, registry_proxy, base_image=base_image, aws=aws_endpoint, name=name,
                                    stage_seconds=10)

    seconds = time.monotonic() - started
    assert code != 0, output
    push = stage(status, 'Push')
    assert push['result'] == 'Failed' and status['phase'] == 'Failed', status
    assert push['reason'] == 'PushFailed', push
    tag = f'{status["revision"]}(-[0-9a-f]{{12}})?'  # the commit, and the build identity when the spec sets one
    assert re.search(f'push of {re.escape(registry_proxy.address)}/{name}:{tag} failed: {answer}', push['message']), push
    puts = [r for r in registry_proxy.records if r.method == 'PUT' and '/manifests/' in r.path]
    assert all(r.injected == kind for r in puts)
    if retried:  # a 5xx may pass: the stage was retried with backoff until the stage timeout came near
        assert 'gave up after' in push['message'] and len(puts) >= 2, (push, len(puts))
        assert all(gap >= TRANSIENT_BACKOFF[0] for gap in gaps(r.at for r in puts)), gaps(r.at for r in puts)
    else:  # refused for good: no retry
        assert 'gave up' not in push['message'] and len(puts) == 1, (push, len(puts))
    print(f'\n(4) registry answering {kind} for good: {len(puts)} manifest PUTs '
          f'{gaps(r.at for r in puts)} s apart; Failed after {seconds:.1f} s: {push["reason"]}: {push["message"]}')
