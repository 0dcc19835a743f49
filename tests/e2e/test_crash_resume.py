"""Crash and resume: the operator is killed (SIGKILL) at many points of a run, restarted, and finishes the run
exactly once.

The stack is the demo's, with the REAL adapters (`controller.sandbox.stack.sandbox.start_sandbox`): git over
file://, the Docker engine, a local registry, the sandbox AWS (moto plus the CodeDeploy simulator), the Kubernetes API
emulator, and the operator as a subprocess. Each kill point is its own rollout: a new commit of the sample
repository, pinned with `spec.source.revision` (the first rollout deploys branch main and creates the service).

Where each kill lands is decided from outside the operator, never from its log:
- a stage boundary (k = 1..5): as the Kubernetes API emulator (in this process) stores the status write that
  records stage k Succeeded, before the operator gets the reply ("reply lost"); when that write also ends the
  run (the engine saves a stage's end with the next write, and after Verify that is the run's last), the
  write is dropped instead ("write lost": the operator died sending it), so that the kill lands before the end;
- inside Build: that commit's Dockerfile has a slow step whose command carries a marker; the kill comes while
  the engine runs that step's container (the checkout is in the operator's TMPDIR then);
- inside Push: that commit's image has a layer of random data; the kill comes once the registry has logged
  the start of a blob upload to the repository and no manifest for the commit yet;
- inside Service, BlueGreen and Verify, in a request: moto's RegisterTaskDefinition and the CodeDeploy
  simulator's CreateDeployment and ContinueDeployment kill the operator before they act, so the revision or
  deployment exists (or traffic moves) and the operator never learnt it;
- inside BlueGreen, deployment open: the write that records the CodeDeploy deployment id.
A kill that lands after the run finished is "missed": the point is tried again on a new rollout, and the
test fails if it never lands. The test prints one line per kill and a summary (run it with -s).

After each restart the run must end Ready for its generation, and:
- the run resumed: the same deploymentId, one history entry for the generation;
- exactly one ECS task definition revision has the commit's image (and one new revision per rollout), exactly
  one CodeDeploy deployment deploys that revision (none on the first rollout, which creates the service);
- no stage recorded as done before the kill was redone: its record (start, end, result, message) is unchanged,
  and the outside witnesses agree -- the engine's image `tag` events for the commit's local tag (one per
  build, cached or not) and for the registry target (one per push), the registry's manifest PUTs for the
  commit (exactly one, always), the health checks the load balancer stand-in saw after the kill (none when
  Verify was recorded done);
- no `panda-deploy-src-*` / `panda-deploy-resolve-*` directory is left in the operator's TMPDIR (a killed
  build leaves its checkout there; the restarted operator removes it: `controller.tempdirs`).

The second test runs in the same stack (one stack: CI time) a second PandaDeploy, `ecs-app`, whose service ECS
deploys itself (spec.rollout BlueGreen, its world made as `sandbox world` makes it: `tests/e2e/crash_ecs.py`),
with the kill points of that path (ECS_PLAN): inside Service, as the ECS deployment simulator starts the service
deployment of CreateService (rollout 1) or UpdateService (the reply lost); after Service (the write with the
service deployment's ARN); at the PAUSE hook (the simulator shows it AWAITING_ACTION); inside Verify as the
simulator takes ContinueServiceDeployment CONTINUE, and as it moves production's weights; and the run's final
write lost. The same checks hold, with ECS's service deployments in place of CodeDeploy's: exactly one of the
run's task definition, the one `status.serviceDeploymentArn` names, SUCCESSFUL, and one per rollout in all
(rollout 1's included: creating the service with the strategy deploys it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import botocore.exceptions
import docker
import kubernetes
import pytest
from moto.ecs.models import EC2ContainerServiceBackend

from controller.models import GROUP, PLURAL, VERSION, PandaDeploySpec, StageName
from controller.pipeline.build import local_tag
from controller.sandbox.demo import DemoFailed, await_rollout
from controller.sandbox.kube import ApiError, ClusterEmulator
from controller.sandbox.stack import localdocker
from controller.sandbox.stack.manifests import NAME, NAMESPACE, demo_manifests
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.sandbox import Sandbox, restart_operator, start_sandbox
from tests.conftest import unavailable
from tests.e2e import crash_ecs

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CHECKS = 2  # health checks per run (the demo's 5 would only add time)
SLOW_STEP_SECONDS = 4  # the slow build step of the Build kill point's commit
BLOB_BYTES = 48 * 1024 * 1024  # the random layer of the Push kill point's commit
ATTEMPTS = 3  # rollouts a kill point may take to land
KILL_TIMEOUT = 150.0
RUN_TIMEOUT = 120.0  # as the demo's ROLLOUT_TIMEOUT
TEMP_PATTERNS = ('panda-deploy-src-*', 'panda-deploy-resolve-*')
FINISHED = ('Succeeded', 'Skipped')
ORDER = list(StageName)


# ---------------------------------------------------------------------------------------------
# Observing the run from outside.


class Observer(ProgressPrinter):
    """The demo's progress printer (into a buffer, shown when the test fails) that also notes each health
    check the load balancer stand-in sees."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.checks: list[float] = []
        self.buffer = io.StringIO()
        super().__init__(out=self.buffer)

    def check_seen(self, *, listener_port: int, colour: str, status: int) -> None:
        with self._lock:
            self.checks.append(time.monotonic())
        super().check_seen(listener_port=listener_port, colour=colour, status=status)

    def checks_since(self, moment: float) -> int:
        with self._lock:
            return sum(1 for seen in self.checks if seen > moment)


class ImageEvents:
    """The Docker engine's image `tag` events since the test began (a build tags the commit's local tag once,
    cached or not; a push first tags the registry target), from a client of its own with no read timeout."""

    def __init__(self) -> None:
        self.client = docker.from_env(timeout=24 * 3600)
        self._stream = self.client.events(since=int(time.time()) - 1, decode=True,
                                          filters={'type': 'image', 'event': 'tag'})
        self._names: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._follow, name='image-events', daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends when closed
            for event in self._stream:
                name = ((event.get('Actor') or {}).get('Attributes') or {}).get('name')
                if name:
                    with self._lock:
                        self._names.append(str(name))

    def count(self, name: str) -> int:
        time.sleep(0.5)  # events are delivered asynchronously
        with self._lock:
            return self._names.count(name)

    def close(self) -> None:
        self._stream.close()
        self.client.close()


def stage_records(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(r.get('name')): r for r in (obj.get('status') or {}).get('stages') or []}


def this_run(obj: dict[str, Any], generation: int) -> bool:
    """Whether the status is that of the run for `generation` (and has been written by it)."""
    status = obj.get('status') or {}
    return status.get('observedGeneration') == generation and bool(status.get('deploymentId'))


def result_of(obj: dict[str, Any], generation: int, stage: StageName) -> str | None:
    """The result of `stage` in the run for `generation` (None: not this run, or no record yet)."""
    if not this_run(obj, generation):
        return None
    return (stage_records(obj).get(stage.value) or {}).get('result')


def unfinished(obj: dict[str, Any], generation: int, stage: StageName) -> bool:
    """The run for `generation` is going and has not recorded `stage` done (its start may not be saved yet:
    the engine saves a stage's start with its first record, wait or end)."""
    return (this_run(obj, generation) and (obj.get('status') or {}).get('phase') == 'Progressing'
            and result_of(obj, generation, stage) not in FINISHED)


@dataclasses.dataclass
class Rollout:
    """What a kill point's predicate may look at, for one rollout."""
    sandbox: Sandbox
    docker: docker.DockerClient
    number: int
    generation: int
    sha: str
    repository: str  # the ECR repository name (spec.repository_name)
    marker: str  # in the slow build step's command
    registry_offset: int  # registry log bytes before this rollout
    intercepted: threading.Event = dataclasses.field(default_factory=threading.Event)

    def registry_log(self) -> str:
        path = self.sandbox.temp / 'registry' / 'registry.log'
        with path.open('rb') as log:
            log.seek(self.registry_offset)
            return log.read().decode(errors='replace')

    def upload_started(self) -> bool:
        return f'"POST /v2/{self.repository}/blobs/uploads/' in self.registry_log()

    def manifest_puts(self) -> int:
        # The tag is the commit SHA, then the hash of the build inputs (controller.pipeline.build.image_tag).
        tag = rf'{self.sha}(-[0-9a-f]+)?'
        return len(re.findall(rf'"PUT /v2/{re.escape(self.repository)}/manifests/{tag} HTTP/[0-9.]+" 201',
                              self.registry_log()))

    def build_step_running(self) -> bool:
        return any(self.marker in str(c.get('Command') or '') for c in self.docker.api.containers())


# ---------------------------------------------------------------------------------------------
# Kill points.


@dataclasses.dataclass(frozen=True)
class KillPoint:
    name: str
    stage: StageName  # the stage running when the kill lands
    when: Callable[[Rollout, dict[str, Any]], bool]
    on_write: bool = True  # decided from the status alone: evaluated as the API emulator stores each write
    boundary: bool = False  # a stage boundary: the write recording the stage done
    slow_build: bool = False
    big_layer: bool = False
    needs_deployment: bool = False  # only on a rollout after the first (the first creates the service)
    intercept: Callable[[Stack, Callable[[], None]], contextlib.AbstractContextManager[None]] | None = None
    """Installs a hook in the sandbox AWS that calls its argument while serving the request, before acting."""

    def landed(self, rollout: Rollout, after_kill: dict[str, Any]) -> bool:
        """Whether the status the killed operator left shows the run stopped at this point (for a boundary:
        anywhere before its end; the write recording the stage may have been kept or lost)."""
        if self.boundary:
            return this_run(after_kill, rollout.generation) and after_kill['status'].get('phase') == 'Progressing'
        return unfinished(after_kill, rollout.generation, self.stage)


def after(stage: StageName) -> KillPoint:
    following = ORDER[ORDER.index(stage) + 1]
    return KillPoint(f'after {stage.value}', following,
                     lambda r, obj: result_of(obj, r.generation, stage) == 'Succeeded', boundary=True)


def _in_build(r: Rollout, obj: dict[str, Any]) -> bool:
    return unfinished(obj, r.generation, StageName.build) and r.build_step_running()


def _in_push(r: Rollout, obj: dict[str, Any]) -> bool:
    return (result_of(obj, r.generation, StageName.build) in FINISHED and unfinished(obj, r.generation, StageName.push)
            and r.upload_started() and r.manifest_puts() == 0)


def _in_blue_green(r: Rollout, obj: dict[str, Any]) -> bool:
    return (unfinished(obj, r.generation, StageName.blue_green)
            and bool((obj.get('status') or {}).get('codeDeployDeploymentId')))


@contextlib.contextmanager
def _registering(s: Stack, kill: Callable[[], None]) -> Iterator[None]:
    """moto's RegisterTaskDefinition kills the operator first: the revision is made, the reply is lost."""
    original = EC2ContainerServiceBackend.register_task_definition

    def register(backend: Any, *args: Any, **kwargs: Any) -> Any:
        kill()
        return original(backend, *args, **kwargs)

    EC2ContainerServiceBackend.register_task_definition = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        EC2ContainerServiceBackend.register_task_definition = original  # type: ignore[method-assign]


def _simulating(operation: str, *, ecs: bool = False
                ) -> Callable[[Stack, Callable[[], None]], contextlib.AbstractContextManager[None]]:
    """The CodeDeploy (or ECS deployment) simulator's `operation` kills the operator first: it happens, the
    reply is lost."""

    @contextlib.contextmanager
    def hook(s: Stack, kill: Callable[[], None]) -> Iterator[None]:
        simulator: Any = s.sandbox.aws.ecs_simulator if ecs else s.sandbox.aws.simulator
        original = getattr(simulator, operation)

        def intercepted(**kwargs: Any) -> Any:
            kill()
            return original(**kwargs)

        setattr(simulator, operation, intercepted)
        try:
            yield
        finally:
            delattr(simulator, operation)
    return hook


def _intercepted(r: Rollout, obj: dict[str, Any]) -> bool:
    return r.intercepted.is_set()


IN_BUILD = KillPoint('inside Build (docker build running)', StageName.build, _in_build, on_write=False,
                     slow_build=True)
IN_PUSH = KillPoint('inside Push (layer upload running)', StageName.push, _in_push, on_write=False,
                    big_layer=True)
IN_REGISTER = KillPoint('inside Service (RegisterTaskDefinition made, reply lost)', StageName.service,
                        _intercepted, on_write=False, intercept=_registering)
IN_CREATE_DEPLOYMENT = KillPoint('inside BlueGreen (CreateDeployment made, reply lost)', StageName.blue_green,
                                 _intercepted, on_write=False, intercept=_simulating('create_deployment'),
                                 needs_deployment=True)
IN_CONTINUE = KillPoint('inside Verify (ContinueDeployment made, reply lost)', StageName.verify, _intercepted,
                        on_write=False, intercept=_simulating('continue_deployment'), needs_deployment=True)
IN_BLUE_GREEN = KillPoint('inside BlueGreen (CodeDeploy deployment open)', StageName.blue_green, _in_blue_green,
                          needs_deployment=True)
AFTER_BLUE_GREEN = dataclasses.replace(after(StageName.blue_green), needs_deployment=True)
# Rollout 1 creates the service (stage 4 has nothing to switch, Verify checks production); killed after
# Service, the resumed run must start no deployment. The later rollouts switch colours through CodeDeploy.
PLAN = [after(StageName.service), IN_BUILD, IN_PUSH, after(StageName.build), after(StageName.push),
        IN_REGISTER, after(StageName.service), IN_CREATE_DEPLOYMENT, IN_BLUE_GREEN, AFTER_BLUE_GREEN,
        IN_CONTINUE, after(StageName.verify)]


def _at_hook(r: Rollout, obj: dict[str, Any]) -> bool:
    return (unfinished(obj, r.generation, StageName.verify)
            and crash_ecs.awaiting_hook(r.sandbox, (obj.get('status') or {}).get('serviceDeploymentArn')))


# The ECS native service (spec.rollout BlueGreen): rollout 1 creates it with the strategy (a service deployment
# too), the later ones update it; each run's deployment waits at the operator's PAUSE hook.
ECS_PLAN = [
    KillPoint('inside Service (CreateService/UpdateService started the service deployment, reply lost)',
              StageName.service, _intercepted, on_write=False, intercept=_simulating('start_deployment', ecs=True)),
    after(StageName.service),  # the write that records the service deployment's ARN: its reply lost
    KillPoint('inside Verify (deployment waiting at the PAUSE hook)', StageName.verify, _at_hook, on_write=False),
    KillPoint('inside Verify (ContinueServiceDeployment CONTINUE made, reply lost)', StageName.verify,
              _intercepted, on_write=False, intercept=_simulating('continue_deployment', ecs=True)),
    KillPoint('inside Verify (production traffic shifting)', StageName.verify, _intercepted, on_write=False,
              intercept=lambda s, kill: crash_ecs.shifting_production(kill)),
    after(StageName.verify),  # the run's final write: lost
]


# ---------------------------------------------------------------------------------------------
# The stack and the rollouts.


@dataclasses.dataclass
class Stack:
    sandbox: Sandbox
    observer: Observer
    docker: docker.DockerClient
    images: ImageEvents
    tmpdir: pathlib.Path
    nonce: str
    dockerfile: str
    spec: PandaDeploySpec
    rollouts: int = 0
    name: str = NAME  # the PandaDeploy the kill points roll out
    resource: dict[str, Any] | None = None  # its manifest, when not the demo's
    ecs: bool = False  # deployed by ECS itself (spec.rollout), not CodeDeploy
    versions_before: int = 0  # the sample's versions another PandaDeploy's rollouts committed


@pytest.fixture(scope='module')
def stack(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmpdir = tmp_path_factory.mktemp('operator-tmp')
    with contextlib.ExitStack() as exit_stack:
        observer = Observer()
        exit_stack.callback(observer.close)
        try:
            sandbox = start_sandbox(exit_stack, docker_client, observer, operator_env={'TMPDIR': str(tmpdir)})
        except localdocker.Unavailable as exc:
            unavailable(str(exc))
        images = ImageEvents()
        exit_stack.callback(images.close)
        _, resource = manifests(sandbox)
        observer.checks_total = CHECKS
        work = sandbox.repository.work
        yield Stack(sandbox=sandbox, observer=observer, docker=docker_client, images=images, tmpdir=tmpdir,
                    nonce=secrets.token_hex(6), dockerfile=(work / 'Dockerfile').read_text(),
                    spec=PandaDeploySpec.model_validate(resource['spec']))


def manifests(sandbox: Sandbox) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The demo's Secrets and PandaDeploy, with fewer health checks."""
    secrets_, resource = demo_manifests(repo_url=sandbox.repository.url, base_image=sandbox.base_image,
                                        world=sandbox.world)
    resource['spec']['healthCheck'].update(checks=CHECKS, intervalSeconds=1)
    return secrets_, resource


def commit(s: Stack, number: int, point: KillPoint) -> str:
    """Rollout `number`'s commit: unique to this test run (a nonce file), with the point's slow step or big layer."""
    work = s.sandbox.repository.work
    (work / 'www' / 'build-id.txt').write_text(f'{s.nonce}\n')
    dockerfile = s.dockerfile
    extra = ''
    blob = work / 'blob.bin'
    if point.big_layer:
        blob.write_bytes(os.urandom(BLOB_BYTES))
        extra += 'COPY blob.bin /blob.bin\n'
    elif blob.exists():
        blob.unlink()
    if point.slow_build:
        extra += f'RUN echo {marker(s, number)} && sleep {SLOW_STEP_SECONDS}\n'
    if extra:
        dockerfile = dockerfile.replace('\nCMD ', f'\n{extra}CMD ', 1)
        assert extra in dockerfile, 'the sample Dockerfile has no CMD line to put the extra steps before'
    (work / 'Dockerfile').write_text(dockerfile)
    sha, _ = s.sandbox.repository.commit(s.versions_before + number)
    return sha


def marker(s: Stack, number: int) -> str:
    return f'crash-resume-{s.nonce}-{number}'


def start_rollout(s: Stack, number: int, point: KillPoint) -> tuple[int, str]:
    """(generation, sha): rollout 1 applies the resource (branch main), later ones pin the new commit."""
    sha = commit(s, number, point)
    sandbox = s.sandbox
    if number == 1:
        secrets_, resource = manifests(sandbox)
        core = kubernetes.client.CoreV1Api(sandbox.api)
        for secret in secrets_:
            try:
                core.create_namespaced_secret(NAMESPACE, secret)
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:  # the other test's first rollout made it
                    raise
        found = sandbox.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL,
                                                               s.resource or resource)
    else:
        found = sandbox.custom.patch_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, PLURAL, s.name, {'spec': {'source': {'branch': None, 'revision': sha}}})
    return int(found['metadata']['generation']), sha


def get(s: Stack) -> dict[str, Any]:
    return s.sandbox.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, s.name)


def leftover_dirs(s: Stack) -> list[str]:
    return sorted(p.name for pattern in TEMP_PATTERNS for p in s.tmpdir.glob(pattern))


@contextlib.contextmanager
def on_write(decide: Callable[[dict[str, Any]], bool | None], resource: str = NAME) -> Iterator[None]:
    """`decide(object)` on each write of the PandaDeploy `resource`, in the API emulator, before the object is
    stored and before the writer gets any reply; True: the write is dropped (the writer never got it through)."""
    original = ClusterEmulator._store

    def store(self: ClusterEmulator, rtype: Any, namespace: str | None, name: str, obj: dict[str, Any]) -> None:
        if rtype.plural == PLURAL and name == resource and decide(obj):
            raise ApiError(503, 'ServiceUnavailable', 'the writer was killed while sending this write')
        original(self, rtype, namespace, name, obj)

    ClusterEmulator._store = store  # type: ignore[method-assign]
    try:
        yield
    finally:
        ClusterEmulator._store = original  # type: ignore[method-assign]


def current(s: Stack) -> dict[str, Any]:
    """The resource as the API emulator holds it now (in this process: no watch delay)."""
    return s.sandbox.cluster.emulator.get(PLURAL, NAMESPACE, s.name) or {}


def kill_at(s: Stack, point: KillPoint, rollout: Rollout) -> str | None:
    """Kill the operator when `point` is reached: how ('reply lost', 'write lost', 'in a request', 'meanwhile'),
    or None when the run ended first.

    At a boundary the kill comes as the API emulator stores the write that records the stage done, before
    the operator gets the reply ('reply lost'); when that write also ends the run (the engine saves the
    stage's end only with the run's end), the write is dropped instead ('write lost': the operator died
    sending it), so that the kill still lands before the end.
    """
    pid = s.sandbox.operator.pid
    fired = threading.Event()
    lock = threading.Lock()
    how: list[str] = []

    def fire(obj: dict[str, Any], mode: str = 'meanwhile') -> bool:
        """Kill when the point is reached; whether the write `obj` (for a write) is to be dropped."""
        with lock:
            if fired.is_set() or not point.when(rollout, obj):
                return False
            drop = mode == 'write' and (obj.get('status') or {}).get('phase') in ('Succeeded', 'Failed')
            os.kill(pid, signal.SIGKILL)
            how.append(('write lost' if drop else 'reply lost') if mode == 'write' else mode)
            fired.set()
            return drop

    def intercepted() -> None:  # in the sandbox's request thread
        rollout.intercepted.set()
        fire(current(s), 'in a request')

    with contextlib.ExitStack() as hooks:
        if point.intercept is not None:
            hooks.enter_context(point.intercept(s, intercepted))
        if point.on_write:
            hooks.enter_context(on_write(lambda obj: fire(obj, 'write'), s.name))
        deadline = time.monotonic() + KILL_TIMEOUT
        while not fired.is_set():
            latest = current(s)
            if not point.on_write:
                fire(latest)
            status = latest.get('status') or {}
            if status.get('observedGeneration') == rollout.generation and status.get('phase') in ('Succeeded',
                                                                                                  'Failed'):
                with lock:
                    if not fired.is_set():
                        return None
            with lock:  # (a kill and its flag happen under the lock)
                died = s.sandbox.operator.poll() is not None and not fired.is_set()
            if died:
                pytest.fail(f'the operator exited on its own with {s.sandbox.operator.returncode}:\n'
                            f'{tail(s.sandbox.operator_log)}', pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f'kill point {point.name!r} not reached in {KILL_TIMEOUT:.0f}s; status:\n'
                            f'{json.dumps(status, indent=1)[:3000]}\n{s.observer.buffer.getvalue()[-3000:]}',
                            pytrace=False)
            fired.wait(0.02)
        return how[0]


def await_run(s: Stack, generation: int) -> None:
    """The run for `generation` ended Succeeded (the demo's printer watches the demo's resource only: another
    is read from the API emulator); DemoFailed otherwise."""
    if s.name == NAME:
        await_rollout(s.sandbox, generation)
        return
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        status = current(s).get('status') or {}
        if status.get('observedGeneration') == generation and status.get('phase') in ('Succeeded', 'Failed'):
            if status['phase'] != 'Succeeded':
                raise DemoFailed(f'rollout for generation {generation} failed: {status.get("message")}; operator '
                                 f'log:\n{tail(s.sandbox.operator_log)}')
            return
        if s.sandbox.operator.poll() is not None:
            raise DemoFailed(f'the operator exited with {s.sandbox.operator.returncode}:\n'
                             f'{tail(s.sandbox.operator_log)}')
        time.sleep(0.2)
    raise DemoFailed(f'rollout for generation {generation} did not finish within {RUN_TIMEOUT:.0f}s; operator '
                     f'log:\n{tail(s.sandbox.operator_log)}')


def tail(path: pathlib.Path, lines: int = 60) -> str:
    with contextlib.suppress(OSError):
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])
    return ''


# ---------------------------------------------------------------------------------------------
# What AWS holds.


def task_definitions_by_image(s: Stack) -> dict[str, str]:
    """ARN -> container image of every task definition revision of the service's family."""
    ecs = s.sandbox.clients('ecs')
    arns: list[str] = []
    for page in ecs.get_paginator('list_task_definitions').paginate(familyPrefix=s.spec.ecs.service):
        arns.extend(page['taskDefinitionArns'])
    found = {}
    for arn in arns:
        definition = ecs.describe_task_definition(taskDefinition=arn)['taskDefinition']
        found[arn] = str(definition['containerDefinitions'][0]['image'])
    return found


def _task_definitions_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == 'TaskDefinition' and isinstance(item, str):
                yield item
            else:
                yield from _task_definitions_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _task_definitions_in(item)


def deployments_by_task_definition(s: Stack) -> dict[str, list[str]]:
    """Task definition ARN -> the CodeDeploy deployments of the operator's group whose AppSpec deploys it."""
    codedeploy = s.sandbox.clients('codedeploy')
    code_deploy = s.spec.blue_green.code_deploy
    try:
        ids: list[str] = []
        for page in codedeploy.get_paginator('list_deployments').paginate(
                applicationName=code_deploy.application, deploymentGroupName=code_deploy.deployment_group):
            ids.extend(page['deployments'])
    except botocore.exceptions.ClientError as exc:
        if exc.response['Error']['Code'] in ('ApplicationDoesNotExistException',
                                             'DeploymentGroupDoesNotExistException'):
            return {}  # the operator makes them on the first rollout that needs a deployment
        raise
    found: dict[str, list[str]] = {}
    for deployment_id in ids:
        info = codedeploy.get_deployment(deploymentId=deployment_id)['deploymentInfo']
        content = json.loads(info['revision']['appSpecContent']['content'])
        for arn in set(_task_definitions_in(content)):
            found.setdefault(arn, []).append(deployment_id)
    return found


def check_deployments(s: Stack, status: dict[str, Any], number: int, context: str) -> list[str]:
    """The run's one deployment of its task definition (as `expected`), and one per rollout in all.

    CodeDeploy: one deployment of the revision (none on the first rollout: it creates the service). ECS: one
    service deployment of the revision, the one status names, SUCCESSFUL (the first rollout's too: creating
    the service with the strategy starts it); no second one was ever started for the run."""
    if s.ecs:
        found = crash_ecs.deployments_by_task_definition(s.sandbox.clients, cluster=s.spec.ecs.cluster,
                                                         service=s.spec.ecs.service)
        expected = [status['serviceDeploymentArn']]
        assert found.get(status['taskDefinitionArn'], []) == [(expected[0], 'SUCCESSFUL')], (context, found)
        assert sum(len(arns) for arns in found.values()) == number, (context, found)
        return expected
    deployments = deployments_by_task_definition(s)
    expected = [] if number == 1 else [status['codeDeployDeploymentId']]
    assert deployments.get(status['taskDefinitionArn'], []) == expected, (context, deployments)
    assert sum(len(ids) for ids in deployments.values()) == number - 1, (context, deployments)
    return expected


# ---------------------------------------------------------------------------------------------
# The test.


@dataclasses.dataclass
class Outcome:
    point: KillPoint
    rollout: int
    landed: bool
    stage_at_kill: str | None = None
    how: str | None = None
    seconds: float = 0.0


def run_kill_point(s: Stack, point: KillPoint) -> Outcome:
    sandbox = s.sandbox
    s.rollouts += 1
    number = s.rollouts
    started = time.monotonic()
    registry_log = sandbox.temp / 'registry' / 'registry.log'
    offset = registry_log.stat().st_size
    generation, sha = start_rollout(s, number, point)
    rollout = Rollout(sandbox=sandbox, docker=s.docker, number=number, generation=generation, sha=sha,
                      repository=s.spec.repository_name, marker=marker(s, number), registry_offset=offset)
    context = f'rollout {number} (generation {generation}, {sha[:7]}), kill point {point.name!r}'

    how = kill_at(s, point, rollout)
    fired = how is not None
    killed_at = time.monotonic()
    if fired:
        sandbox.operator.wait(timeout=30)
        time.sleep(0.3)  # a request the operator finished sending before it died is applied
    after_kill = get(s)
    landed = fired and point.landed(rollout, after_kill)
    left_by_kill = leftover_dirs(s)
    if fired:
        restart_operator(sandbox)
    try:
        await_run(s, generation)
    except DemoFailed as exc:
        pytest.fail(f'{context}: {exc}\n{s.observer.buffer.getvalue()[-4000:]}', pytrace=False)

    # Ready for the generation, with the commit.
    found = get(s)
    status = found['status']
    ready = next((c for c in status.get('conditions') or [] if c['type'] == 'Ready'), {})
    assert status['phase'] == 'Succeeded' and status['observedGeneration'] == generation, context
    assert ready.get('status') == 'True' and ready.get('observedGeneration') == generation, (context, ready)
    assert status['revision'] == sha, context

    killed_status = after_kill.get('status') or {}
    if fired and killed_status.get('observedGeneration') == generation and killed_status.get('deploymentId'):
        # The run resumed: same id, one history entry, and every stage recorded done before the kill untouched.
        assert status['deploymentId'] == killed_status['deploymentId'], context
        before = stage_records(after_kill)
        now = stage_records(found)
        for name, record in before.items():
            if record.get('result') in FINISHED:
                assert now[name] == record, f'{context}: stage {name} was redone: {record} -> {now[name]}'
    entries = [e for e in status.get('history') or [] if e['generation'] == generation]
    assert len(entries) == 1 and entries[0]['result'] == 'Succeeded', (context, entries)
    assert entries[0]['deploymentId'] == status['deploymentId'], context
    done_before = {name for name, r in stage_records(after_kill).items()
                   if r.get('result') in FINISHED} if killed_status.get('observedGeneration') == generation else set()

    # One task definition revision for the commit, one new revision per rollout.
    definitions = task_definitions_by_image(s)
    pinned = f"{status['image']['uri'].rsplit(':', 1)[0]}@{status['image']['digest']}"  # by digest, not by tag
    for_commit = [arn for arn, image in definitions.items() if image == pinned]
    assert for_commit == [status['taskDefinitionArn']], (context, definitions)
    assert len(definitions) == number, (context, definitions)
    expected = check_deployments(s, status, number, context)

    # No build or push redone once recorded; exactly one manifest pushed for the commit.
    local = local_tag(s.spec, sha)
    builds = s.images.count(local)
    pushes = s.images.count(f'{sandbox.registry}/{local}')
    if StageName.build.value in done_before or not fired:
        assert builds == 1, (context, builds)
    else:
        assert 1 <= builds <= 2, (context, builds)
    if StageName.push.value in done_before or StageName.build.value not in done_before or not fired:
        assert pushes == 1, (context, pushes)
    else:
        assert 1 <= pushes <= 2, (context, pushes)
    assert rollout.manifest_puts() == 1, (context, rollout.registry_log()[-2000:])
    if StageName.verify.value in done_before:
        assert s.observer.checks_since(killed_at) == 0, f'{context}: health checks again after Verify was done'

    # No temporary checkout left behind (the killed build's was there, and the restarted operator removed it).
    if point.slow_build and landed:
        assert any(name.startswith('panda-deploy-src-') for name in left_by_kill), (context, left_by_kill)
    assert leftover_dirs(s) == [], (context, leftover_dirs(s))
    others = sorted(p.name for p in s.tmpdir.iterdir())

    outcome = Outcome(point=point, rollout=number, landed=landed,
                      stage_at_kill=killed_status.get('stage') if fired else None, how=how,
                      seconds=round(time.monotonic() - started, 1))
    print(f'crash-resume: rollout {number} {sha[:7]} kill {point.name}: '
          f'{"landed" if landed else "MISSED"} ({how}; stage at kill {outcome.stage_at_kill}, builds {builds}, '
          f'push tags {pushes}, manifests 1, task definitions 1, deployments {len(expected)}, '
          f'temp dirs after kill {len(left_by_kill)}, other TMPDIR entries {others}) in {outcome.seconds}s', flush=True)
    return outcome


def run_plan(s: Stack, plan: list[KillPoint], what: str) -> None:
    began = time.monotonic()
    outcomes: list[Outcome] = []
    for point in plan:
        assert not point.needs_deployment or s.rollouts >= 1
        for _ in range(ATTEMPTS):
            outcome = run_kill_point(s, point)
            outcomes.append(outcome)
            if outcome.landed:
                break
        else:
            pytest.fail(f'kill point {point.name!r} never landed in {ATTEMPTS} rollouts', pytrace=False)
    landed = sum(o.landed for o in outcomes)
    print(f'crash-resume summary ({what}): {len(plan)} kill points, {len(outcomes)} kills tried in {s.rollouts} '
          f'rollouts, {landed} landed mid-run, {len(outcomes) - landed} missed (retried); '
          f'{time.monotonic() - began:.0f}s', flush=True)
    assert landed == len(plan)


def test_killed_at_every_point_the_operator_resumes_and_finishes_each_run_exactly_once(stack: Stack) -> None:
    run_plan(stack, PLAN, 'CodeDeploy')


def test_killed_at_every_point_of_an_ecs_rollout_the_run_resumes_its_one_service_deployment(stack: Stack) -> None:
    """The same stack, a second PandaDeploy: a service ECS deploys itself (spec.rollout BlueGreen)."""
    _, demo = manifests(stack.sandbox)
    resource = crash_ecs.ecs_resource(stack.sandbox, source=demo['spec']['source'],
                                      health_check=demo['spec']['healthCheck'],
                                      credentials_secret=demo['spec']['aws']['credentialsSecretRef']['name'])
    ecs = dataclasses.replace(stack, name=crash_ecs.SERVICE, resource=resource, ecs=True, rollouts=0,
                              versions_before=stack.rollouts, spec=PandaDeploySpec.model_validate(resource['spec']))
    run_plan(ecs, ECS_PLAN, 'ECS BlueGreen')
