"""Fake adapters for the stage and operator tests: the outside world as files.

Their state lives in a directory (PANDA_FAKE_DIR, or one handed in), so an
operator process under test, a restarted one and the test itself see the
same world: `script.json` (written by the test, re-read on every call) says
what to delay or fail; `state.json` holds images, task definitions and
CodeDeploy deployments; `journal.jsonl` gets one line per call made.
Never used by the operator's default wiring: tests select them with
PANDA_DEPLOY_ADAPTERS=tests.fakes:make_adapters.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import threading
import time
import zipfile
from collections.abc import Mapping
from typing import Any

from controller.adapters import (
    Adapters,
    AdapterSettings,
    DeploymentState,
    ImageBuild,
    LifecycleEvent,
    Probe,
    RegistryAuth,
    RemoteBuildState,
    ServiceDeploymentState,
    ServiceRollout,
    ServiceState,
    Traffic,
)
from controller.adapters.codebuild_source import pack_zip
from controller.credentials import Credentials
from controller.errors import DeploymentControllerMismatch, Reason, ServiceUpdateFailed, StageFailed
from controller.models import BuildEngine, PandaDeploySpec, PandaDeployStatus, RunResult

ACCOUNT = '123456789012'
_LOCK = threading.Lock()
LIFECYCLE = ('BeforeInstall', 'Install', 'AfterInstall', 'BeforeAllowTraffic', 'AllowTraffic', 'AfterAllowTraffic')


class World:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    # -- files ---------------------------------------------------------------
    def script(self) -> dict[str, Any]:
        path = self.root / 'script.json'
        return json.loads(path.read_text()) if path.exists() else {}

    def set_script(self, **script: Any) -> None:
        tmp = self.root / 'script.json.tmp'
        tmp.write_text(json.dumps(script))
        tmp.replace(self.root / 'script.json')

    def state(self) -> dict[str, Any]:
        path = self.root / 'state.json'
        if not path.exists():
            # By default the service exists and runs an older image, so a run goes through CodeDeploy;
            # tests of a first rollout clear 'services'.
            return {'images': {}, 'local': [], 'taskdefs': [], 'deployments': {}, 'active': 'blue',
                    'services': {'panda-service': f'arn:aws:ecs:region:{ACCOUNT}:task-definition/old:1'}}
        return json.loads(path.read_text())

    def save(self, state: Mapping[str, Any]) -> None:
        tmp = self.root / f'state.json.{os.getpid()}.{threading.get_ident()}'
        tmp.write_text(json.dumps(state))
        tmp.replace(self.root / 'state.json')

    def log(self, call: str, **details: Any) -> None:
        line = json.dumps({'call': call, 'pid': os.getpid(), 'time': time.time(), **details})
        with _LOCK, (self.root / 'journal.jsonl').open('a') as f:
            f.write(line + '\n')

    def journal(self) -> list[dict[str, Any]]:
        path = self.root / 'journal.jsonl'
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def calls(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.journal() if entry['call'] == name]

    # -- behaviour -------------------------------------------------------------
    def step(self, call: str, cancel: threading.Event | None = None) -> None:
        """Log the call, sleep as scripted (cancellable), fail as scripted."""
        self.log(call)
        script = self.script()
        delay = float(script.get('delay', {}).get(call, 0))
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if cancel is not None and cancel.is_set():
                self.log(call + ':cancelled')
                return
            time.sleep(0.05)
        failure = script.get('fail', {}).get(call)
        if failure:
            raise StageFailed(failure['message'], reason=failure['reason'])


class FakeGit:
    def __init__(self, world: World) -> None:
        self.world = world

    def resolve(self, *, url: str, branch: str | None, revision: str | None, token: str | None,
                cancel: threading.Event | None = None) -> str:
        self.world.step('git.resolve', cancel)
        if revision:
            return revision
        seed = self.world.script().get('commit', 'one')
        return hashlib.sha1(f'{url}#{branch}#{seed}'.encode()).hexdigest()

    def checkout(self, *, url: str, revision: str, token: str | None, into: pathlib.Path,
                 cancel: threading.Event | None = None) -> None:
        self.world.step('git.checkout', cancel)
        self.world.log('git.checkout.dir', path=str(into))
        files = self.world.script().get('files', {'Dockerfile': 'FROM scratch\n'})
        for name, content in files.items():
            path = into / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)


class FakeDocker:
    def __init__(self, world: World) -> None:
        self.world = world

    def build(self, *, context: pathlib.Path, dockerfile: str, tag: str, labels: Mapping[str, str],
              build_args: Mapping[str, str], log: Any, cancel: threading.Event) -> str:
        self.world.step('docker.build', cancel)
        with _LOCK:
            state = self.world.state()
            state['local'].append(tag)
            self.world.save(state)
        return 'sha256:' + hashlib.sha256(tag.encode()).hexdigest()

    def has_image(self, tag: str) -> bool:
        return tag in self.world.state()['local']

    def push(self, *, tag: str, target: str, auth: RegistryAuth | None, log: Any) -> str:
        self.world.step('docker.push')
        digest = 'sha256:' + hashlib.sha256(target.encode()).hexdigest()
        with _LOCK:
            state = self.world.state()
            state['images'][target] = digest
            self.world.save(state)
        return digest


class FakeRegistry:
    def __init__(self, world: World, region: str) -> None:
        self.world, self.region = world, region

    def account_id(self) -> str:
        self.world.step('sts.get_caller_identity')
        return ACCOUNT

    def ensure_repository(self, name: str) -> str:
        self.world.log('ecr.ensure_repository')
        return f'{ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/{name}'

    def find_image(self, *, repository: str, tag: str) -> str | None:
        self.world.log('ecr.find_image')
        return self.world.state()['images'].get(f'{self.ensure_repository(repository)}:{tag}')

    def authorization(self) -> RegistryAuth:
        return RegistryAuth(registry=f'{ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com', username='AWS',
                            password='fake-ecr-password')

    def push_target(self, *, repository_uri: str, tag: str) -> str:
        return f'{repository_uri}:{tag}'


class FakeEcs:
    def __init__(self, world: World) -> None:
        self.world = world

    def register_task_definition(self, definition: Mapping[str, object]) -> tuple[str, bool]:
        self.world.step('ecs.register_task_definition')
        with _LOCK:
            state = self.world.state()
            family = [t for t in state['taskdefs'] if t['family'] == definition['family']]
            if family and family[-1]['definition'] == definition:
                return family[-1]['arn'], False
            arn = f'arn:aws:ecs:region:{ACCOUNT}:task-definition/{definition["family"]}:{len(family) + 1}'
            state['taskdefs'].append({'family': definition['family'], 'definition': definition, 'arn': arn})
            self.world.save(state)
        self.world.log('ecs.registered', arn=arn)
        return arn, True

    def ensure_service(self, *, spec: PandaDeploySpec, task_definition_arn: str) -> ServiceState:
        self.world.log('ecs.ensure_service')
        failure = self.world.script().get('fail', {}).get('ecs.ensure_service')
        if failure:
            raise ServiceUpdateFailed(cluster=spec.ecs.cluster, service=spec.ecs.service, detail=failure)
        with _LOCK:
            state = self.world.state()
            created = spec.ecs.service not in state['services']
            state['services'].setdefault(spec.ecs.service, task_definition_arn)
            self.world.save(state)
        return ServiceState(cluster=spec.ecs.cluster, service=spec.ecs.service, created=created)

    def running_task_definition(self, *, spec: PandaDeploySpec) -> str | None:
        return self.world.state()['services'].get(spec.ecs.service)


class FakeCodeDeploy:
    def __init__(self, world: World) -> None:
        self.world = world

    def create_deployment(self, *, spec: PandaDeploySpec, task_definition_arn: str, run_id: str) -> str:
        self.world.step('codedeploy.create_deployment')
        with _LOCK:
            state = self.world.state()
            deployment_id = f'd-FAKE{len(state["deployments"]) + 1:05d}'
            state['deployments'][deployment_id] = {'status': 'InProgress', 'created': time.time(),
                                                   'run_id': run_id, 'taskdef': task_definition_arn,
                                                   'service': spec.ecs.service}
            self.world.save(state)
        return deployment_id

    def find_deployment(self, *, spec: PandaDeploySpec, run_id: str) -> str | None:
        for deployment_id, d in self.world.state()['deployments'].items():
            if d['run_id'] == run_id:
                return deployment_id
        return None

    def get_deployment(self, deployment_id: str) -> DeploymentState:
        self.world.step('codedeploy.get_deployment')
        d = self.world.state()['deployments'][deployment_id]
        ready_after = float(self.world.script().get('ready_after', 0.2))
        status = d['status']
        ready = status == 'InProgress' and time.time() - d['created'] >= ready_after
        shown = 'Ready' if ready else status
        done = 3 if ready else 0
        events = tuple(LifecycleEvent(name, 'Succeeded' if i < done or status == 'Succeeded' else 'Pending')
                       for i, name in enumerate(LIFECYCLE))
        return DeploymentState(id=deployment_id, status=shown, ready_for_traffic=ready, events=events)

    def continue_deployment(self, deployment_id: str) -> None:
        self.world.step('codedeploy.continue_deployment')
        with _LOCK:
            state = self.world.state()
            deployment = state['deployments'][deployment_id]
            deployment['status'] = 'Succeeded'
            state['services'][deployment['service']] = deployment['taskdef']
            state['active'] = 'green' if state['active'] == 'blue' else 'blue'
            self.world.save(state)

    def stop_deployment(self, deployment_id: str, *, rollback: bool) -> None:
        self.world.step('codedeploy.stop_deployment')
        with _LOCK:
            state = self.world.state()
            state['deployments'][deployment_id]['status'] = 'Stopped'
            self.world.save(state)


class FakeEcsDeployments:
    """ECS's own deployments, timed: the new revision starts, then waits at the PAUSE hook until continued, then
    moves production for `shift_after` seconds and ends SUCCESSFUL. `ecs_end` in the script ends an open
    deployment at the next look ({status, reason}: a circuit breaker, another actor's stop)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def deploy(self, *, spec: PandaDeploySpec, task_definition_arn: str, since: Any,
               earlier: Any = ()) -> ServiceRollout:
        self.world.step('ecs_deployments.deploy')
        cluster, name = spec.ecs.cluster, spec.ecs.service
        controller = self.world.script().get('controller', 'ECS')
        with _LOCK:
            state = self.world.state()
            created = name not in state['services']
            if not created and controller != 'ECS':
                raise DeploymentControllerMismatch(cluster=cluster, service=name, controller=controller,
                                                   strategy=spec.strategy.value)
            found = self.find_deployment(spec=spec, task_definition_arn=task_definition_arn, since=since)
            if state['services'].get(name) == task_definition_arn or found:
                return ServiceRollout(cluster=cluster, service=name, created=False, started=False, deployment_arn=found)
            deployments = state.setdefault('service_deployments', {})
            arn = f'arn:aws:ecs:region:{ACCOUNT}:service-deployment/{cluster}/{name}/sd{len(deployments) + 1}'
            deployments[arn] = {'status': 'IN_PROGRESS', 'created': time.time(), 'taskdef': task_definition_arn,
                                'service': name, 'continued': None, 'reason': None}
            state['services'].setdefault(name, None)
            self.world.save(state)
        return ServiceRollout(cluster=cluster, service=name, created=created, started=True, deployment_arn=arn)

    def find_deployment(self, *, spec: PandaDeploySpec, task_definition_arn: str, since: Any,
                        earlier: Any = ()) -> str | None:
        found = [arn for arn, d in self.world.state().get('service_deployments', {}).items()
                 if d['taskdef'] == task_definition_arn and d['status'] == 'IN_PROGRESS']
        return found[-1] if found else None

    def get(self, arn: str) -> ServiceDeploymentState:
        self.world.step('ecs_deployments.get')
        script = self.world.script()
        with _LOCK:
            state = self.world.state()
            d = state['service_deployments'][arn]
            if d['status'] == 'IN_PROGRESS' and script.get('ecs_end'):
                d['status'], d['reason'] = script['ecs_end']['status'], script['ecs_end']['reason']
                d['replaced_by'] = script['ecs_end'].get('replaced_by')
            shifted = d['continued'] is not None and time.time() - d['continued'] >= float(script.get('shift_after', 0.1))
            if d['status'] == 'IN_PROGRESS' and shifted:
                d['status'] = 'SUCCESSFUL'
                state['services'][d['service']] = d['taskdef']
                state['active'] = 'green' if state['active'] == 'blue' else 'blue'
            self.world.save(state)
        ready = time.time() - d['created'] >= float(script.get('ready_after', 0.2))
        at_hook = d['status'] == 'IN_PROGRESS' and ready and d['continued'] is None
        stage = ('CLEAN_UP' if d['status'] == 'SUCCESSFUL' else 'PRODUCTION_TRAFFIC_SHIFT' if d['continued']
                 else 'POST_TEST_TRAFFIC_SHIFT' if ready else 'SCALE_UP')
        return ServiceDeploymentState(arn=arn, status=d['status'], lifecycle_stage=stage, status_reason=d['reason'],
                                      paused_hook='ecs-pause-1' if at_hook else None,
                                      hook_passed=d['continued'] is not None, replaced_by=d.get('replaced_by'),
                                      production_percent=_share(d, script))

    def continue_deployment(self, arn: str, *, hook_id: str, rollback: bool = False) -> None:
        self.world.step('ecs_deployments.rollback' if rollback else 'ecs_deployments.continue')
        self._set(arn, continued=time.time()) if not rollback else self._set(
            arn, status='ROLLBACK_SUCCESSFUL', reason=f'Rolled back by ContinueServiceDeployment at {hook_id}.')

    def stop(self, arn: str) -> None:
        self.world.step('ecs_deployments.stop')
        self._set(arn, status='ROLLBACK_SUCCESSFUL', reason='Rolled back by a StopServiceDeployment request.')

    def explain(self, *, spec: PandaDeploySpec, state: ServiceDeploymentState) -> str:
        return f'ECS service deployment {state.arn.rsplit("/", 1)[-1]} ended {state.status}: {state.status_reason}'

    def _set(self, arn: str, **fields: Any) -> None:
        with _LOCK:
            state = self.world.state()
            state['service_deployments'][arn].update(fields)
            self.world.save(state)


def _share(deployment: dict[str, Any], script: dict[str, Any]) -> float | None:
    """The new revision's share of production: 100 once SUCCESSFUL; while production moves, with `steps` in the
    script (e.g. [10, 100] for a canary), the step reached by the time passed of `shift_after`."""
    if deployment['status'] == 'SUCCESSFUL':
        return 100.0
    steps = script.get('steps')
    if deployment['status'] != 'IN_PROGRESS' or deployment['continued'] is None or not steps:
        return None
    elapsed = (time.time() - deployment['continued']) / float(script.get('shift_after', 0.1))
    return float(steps[min(len(steps) - 1, int(elapsed * len(steps)))])


class FakeBuilds:
    """CodeBuild as files: a started build ends after `codebuild.polls` polls (script) with `codebuild.result`;
    a successful one puts its image in the registry, as the real build's push does."""

    def __init__(self, world: World) -> None:
        self.world = world

    def find(self, *, build: ImageBuild) -> str | None:
        self.world.log('codebuild.find')
        key = f'{build.repository}/{build.tag}/{build.run_id}'
        return next((i for i, b in self.world.state().get('builds', {}).items() if b['key'] == key), None)

    def start(self, *, build: ImageBuild, context: pathlib.Path, cancel: threading.Event | None = None) -> str:
        self.world.step('codebuild.start', cancel)
        packed = io.BytesIO()
        pack_zip(context, dockerfile=build.dockerfile, max_bytes=64 * 1024 ** 2, into=packed)
        names = sorted(zipfile.ZipFile(packed).namelist())
        with _LOCK:
            state = self.world.state()
            builds = state.setdefault('builds', {})
            build_id = f'panda-deploy-{build.repository}:{len(builds) + 1:08d}'
            builds[build_id] = {'key': f'{build.repository}/{build.tag}/{build.run_id}', 'target': build.target,
                                'polls': 0, 'status': 'IN_PROGRESS', 'files': names, 'labels': dict(build.labels),
                                'build_args': dict(build.build_args), 'source': True}
            self.world.save(state)
        return build_id

    def get(self, build_id: str) -> RemoteBuildState:
        self.world.step('codebuild.get')
        script = self.world.script().get('codebuild', {})
        with _LOCK:
            state = self.world.state()
            build = state['builds'][build_id]
            build['polls'] += 1
            if build['status'] == 'IN_PROGRESS' and build['polls'] > int(script.get('polls', 1)):
                build['status'] = script.get('result', 'SUCCEEDED')
                if build['status'] == 'SUCCEEDED':
                    state['images'][build['target']] = 'sha256:' + hashlib.sha256(build['target'].encode()).hexdigest()
            self.world.save(state)
        if build['status'] == 'IN_PROGRESS':
            return RemoteBuildState(id=build_id, status='IN_PROGRESS', phase='BUILD')
        failed = build['status'] != 'SUCCEEDED'
        return RemoteBuildState(id=build_id, status=build['status'], phase='COMPLETED',
                                failed_phase=script.get('failed_phase') if failed else None,
                                failure=script.get('failure') if failed else None)

    def log_tail(self, build_id: str) -> list[str]:
        self.world.log('codebuild.log_tail')
        return list(self.world.script().get('codebuild', {}).get('log', []))

    def stop(self, build_id: str) -> None:
        self.world.log('codebuild.stop', id=build_id)
        with _LOCK:
            state = self.world.state()
            state['builds'][build_id]['status'] = 'STOPPED'
            self.world.save(state)

    def remove_source(self, build_id: str) -> None:
        self.world.log('codebuild.remove_source', id=build_id)
        with _LOCK:
            state = self.world.state()
            state['builds'][build_id]['source'] = False
            self.world.save(state)


class FakeLoadBalancer:
    def __init__(self, world: World) -> None:
        self.world = world

    def traffic(self, *, spec: PandaDeploySpec) -> Traffic:
        return Traffic(active_color=self.world.state()['active'], blue_url='http://blue.example.test/',
                       green_url='http://green.example.test/')


class FakeHttp:
    def __init__(self, world: World) -> None:
        self.world = world

    def get(self, url: str, *, timeout: float) -> Probe:
        self.world.step('http.get')
        statuses = self.world.script().get('health', [200])
        k = len(self.world.calls('http.get')) - 1
        return Probe(status=statuses[k % len(statuses)], seconds=0.01)


class MemorySink:
    """A run's reports kept in lists (the engine tests' stand-in for the Kubernetes API or a terminal)."""

    def __init__(self) -> None:
        self.saves: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.lines: list[str] = []

    async def save(self, status: PandaDeployStatus) -> None:
        self.saves.append(status.dump())

    async def event(self, *, type: str, reason: str, message: str) -> None:
        self.events.append((type, reason, message))

    def progress(self, line: str) -> None:
        self.lines.append(line)


class RecordingNotices:
    """A run's notices kept in a list: ('started', revision) and ('ended', result, reason)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def started(self, status: PandaDeployStatus) -> None:
        self.calls.append(('started', status.revision))

    def ended(self, status: PandaDeployStatus, *, result: RunResult, reason: str) -> None:
        self.calls.append(('ended', result.value, reason))


def make_adapters(spec: PandaDeploySpec, credentials: Credentials, *, settings: AdapterSettings | None = None,
                  root: pathlib.Path | None = None) -> Adapters:
    """An `AdapterWiring` of fakes; `settings` (registry, git hosts, health-check deny-list) are ignored."""
    world = World(root or pathlib.Path(os.environ['PANDA_FAKE_DIR']))
    world.log('adapters.made')
    return Adapters(git=FakeGit(world), docker=FakeDocker(world), registry=FakeRegistry(world, spec.aws.region),
                    ecs=FakeEcs(world), codedeploy=FakeCodeDeploy(world), loadbalancer=FakeLoadBalancer(world),
                    http=FakeHttp(world), ecs_deployments=FakeEcsDeployments(world),
                    builds=FakeBuilds(world) if spec.build.engine == BuildEngine.code_build else None)


__all__ = ['World', 'make_adapters', 'Reason']
