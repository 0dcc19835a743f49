"""Whole deployments through the operator vs. a plain script doing the same external work (issue 7, items 1 and 4).

Both sides run against the same stand-ins, started by `controller.sandbox.stack.sandbox.start_sandbox`:
the Kubernetes API emulator, the AWS sandbox (moto + the CodeDeploy ECS simulator, the demo's
timings), the local registry, the shared Docker engine and the load-balancer stand-in. The operator
is the real one (`python -m controller operator`, real adapters), as in the demo.

Item 1, overhead ratio: interleaved rounds (operator, script, operator, script, ...), medians.
Two untimed warm-up rollouts first: the operator creates the ECS service, then the CodeDeploy
application and group; every timed round is then a blue/green rollout of a NEW commit (unique
content, so both sides really build), the colours alternating.
  operator: a commit is pushed to the sample repository and `spec.source.revision` patched to it;
            timed from just before the PATCH to the moment the API server commits the status write
            that makes Ready True for the new generation (the emulator's own write hook, not polling).
  script:   a commit is pushed, then in sequence: `git clone --depth 1`, docker build (same build
            arg and the same four labels as controller/pipeline/build.py, through the same Engine
            API calls as the operator's Docker adapter; `--script-docker cli` uses the docker CLI),
            docker push, boto3 RegisterTaskDefinition, CreateDeployment (the operator's AppSpec and
            hooks), GetDeployment every POLL s until ready for traffic, the same number of health
            checks at the same interval on the same URL (the test listener, through the same
            load-balancer stand-in), ContinueDeployment, GetDeployment every POLL s until traffic has
            shifted (the operator's own end condition). Timed from start to that last poll. Its boto3
            session and clients are made inside the timed part each round, as the operator makes its
            own per run.
  PANDA_DEPLOY_POLL_SECONDS = --poll-seconds (default 0.25) and the script polls at the same
  interval. A wait ends on the first poll after CodeDeploy gets there, so each of the two waits
  can cost up to one interval at random on either side: with 1 s that noise (0-2 s a rollout of
  ~13 s) swamps a 5 % target; 0.25 s keeps it under 0.5 s.
  The same for each ECS native strategy in --strategies (default BlueGreen,Canary), each with its own
  resource, service and world in the same sandbox (bench/ecs_overhead.py says what its script does), and
  for every timed operator rollout its Kubernetes API writes (the resource's PATCHes and status PATCHes
  and its Events; target for an ECS strategy: no more than CodeDeploy's, issue 13).
  The operator's time per stage comes from its own progress lines ("[Stage N] X started", ms
  timestamps): the stage records in status have whole seconds only, and the status shows a stage's
  start only with its first record or wait (to save API writes), so neither times 50 ms stages.

Item 4, concurrency: N deployments at once through one operator (PANDA_DEPLOY_WORKERS = the largest
N, so the operator runs as many at once as the script does and nothing queues) vs. the plain
script in N threads. Each deployment is a first rollout of its own ECS service (CreateService, no
CodeDeploy deployment: the operator skips stage 4, the script has nothing to do there) of its own
commit (its own branch, so each one builds), with its health checks on `spec.healthCheck.url`: a
small HTTP server in this process, since the load-balancer stand-in serves one service only. So
the checks here measure the interval and an HTTP round trip, not the app. Wall time from the first
create (or the threads' start) to the last Ready (or the last check). The time is split, summed
over the N deployments, into Docker (stages Build + Push; the script's clone + build + push), AWS
(stage Service: RegisterTaskDefinition + CreateService and the operator's look-ups), checks
(stage Verify) and the operator's rest (create -> stage 1 started, and Complete -> Ready: Kopf,
the reconciler, the final status write); once from the progress lines and once from the status's
stage records (whole seconds), which agree to within their rounding.

    .venv/bin/python bench/deploy_overhead.py [--rounds 5] [--strategies BlueGreen,Canary]
                                              [--concurrency 1,5,20] [--poll-seconds 0.25]
                                              [--json FILE] [--operator-log FILE]

Needs a Docker engine, Debian's docker-registry and busybox-static (see `.ci/run`). Prints the
machine (CPUs, Python, Docker) and a table; `--json` writes the summary rows for bench/table.py.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import http.server
import io
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
import docker.errors  # noqa: E402

from bench import ecs_overhead  # noqa: E402
from controller.adapters.codedeploy import appspec, revision  # noqa: E402
from controller.models import GROUP, PLURAL, VERSION, PandaDeploySpec  # noqa: E402
from controller.pipeline.build import BUILD_IDENTITY_LABEL, build_identity_label  # noqa: E402
from controller.pipeline.service import task_definition  # noqa: E402
from controller.sandbox.stack.manifests import NAME, NAMESPACE, SANDBOX_KEYS, demo_manifests  # noqa: E402
from controller.sandbox.stack.progress import ProgressPrinter  # noqa: E402
from controller.sandbox.stack.repository import SampleRepository  # noqa: E402
from controller.sandbox.stack.sandbox import BUILD_LABEL, Sandbox, start_sandbox  # noqa: E402
from controller.sandbox.stack.world import REGION, AwsWorld  # noqa: E402

STAGES = ('Build', 'Push', 'Service', 'BlueGreen', 'Verify', 'Complete')
SCRIPT_AGENT = 'bench-plain-script'
READY_TIMEOUT = 600.0


# ---------------------------------------------------------------------------------------------
# Watching the resources: the API emulator, polled in this process.


@dataclasses.dataclass
class Seen:
    """One run (resource, generation) as the API server saw it: when it became Ready, or why it failed."""
    ready: float | None = None  # time.time()
    failed: str | None = None
    status: dict[str, Any] = dataclasses.field(default_factory=dict)


class Observer:
    """Records when the API emulator committed the status write that made each run Ready.

    It hooks the emulator's `_emit` (called under its lock as each write is applied, before any watcher hears of
    it), so the time is the API server's own, not that of a poller a busy machine may starve.
    """

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator
        self.seen: dict[tuple[str, int], Seen] = {}
        self.deployment_ids: set[str] = set()
        self._lock = threading.Condition()
        cls = type(emulator)  # a slotted attrs class: the hook goes on the class, for this one instance
        original = cls._emit

        def emit(this: Any, rtype: Any, type_: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
            if this is emulator and rtype.plural == PLURAL and type_ in ('ADDED', 'MODIFIED'):
                self._note(obj, time.time())
            original(this, rtype, type_, obj, old)

        cls._emit = emit
        self._original = original

    def stop(self) -> None:
        type(self.emulator)._emit = self._original

    def _note(self, obj: dict[str, Any], now: float) -> None:
        status = obj.get('status') or {}
        generation = status.get('observedGeneration')
        if not generation:
            return
        key = (obj['metadata']['name'], int(generation))
        with self._lock:
            seen = self.seen.setdefault(key, Seen())
            seen.status = status
            if status.get('deploymentId'):
                self.deployment_ids.add(status['deploymentId'])
            ready = next((c for c in status.get('conditions') or [] if c.get('type') == 'Ready'), {})
            if (seen.ready is None and ready.get('status') == 'True'
                    and ready.get('observedGeneration') == int(generation) and status.get('phase') == 'Succeeded'):
                seen.ready = now
                self._lock.notify_all()
            if status.get('phase') == 'Failed' and seen.failed is None:
                seen.failed = str(status.get('message'))
                self._lock.notify_all()

    def wait_ready(self, keys: list[tuple[str, int]], timeout: float = READY_TIMEOUT) -> list[Seen]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [self.seen.get(k) for k in keys]
                failed = [(k, s.failed) for k, s in zip(keys, found, strict=True) if s is not None and s.failed]
                if failed:
                    raise SystemExit(f'deployment failed: {failed[0]}')
                if all(s is not None and s.ready is not None for s in found):
                    return [s for s in found if s is not None]
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [k for k, s in zip(keys, found, strict=True) if s is None or s.ready is None]
                    raise SystemExit(f'not Ready after {timeout:.0f}s: {missing[:5]}')
                self._lock.wait(min(left, 0.5))


# Kopf's log line: [2026-11-26 13:12:00,090] kopf.objects  [INFO    ] [default/sample-app] [Stage 2] Push started
LOG_LINE = re.compile(r'^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] kopf\.objects\s+\[\w+\s*\] '
                      r'\[[^/\]]+/([^\]]+)\] (.*)$')
RUN_STARTED = re.compile(r'^Run (dep_\w+) started for generation (\d+)')
STAGE_STARTED = re.compile(r'^\[Stage \d\] (\w+) started$')


def stage_marks(log: pathlib.Path) -> dict[tuple[str, int], dict[str, float]]:
    """(resource, generation) -> {'run': t, 'Build': t, ..., 'shift': t}: when the operator logged each run's start,
    each stage's start and the start of the traffic shift (time.time(), millisecond resolution).

    The status's stage records say the same with second resolution (startedAt/completedAt), too coarse for
    stages that take 50 ms; the operator's own progress lines carry milliseconds."""
    marks: dict[tuple[str, int], dict[str, float]] = {}
    current: dict[str, tuple[str, int]] = {}
    for line in log.read_text(errors='replace').splitlines():
        found = LOG_LINE.match(line)
        if not found:
            continue
        stamp, name, message = found.groups()
        at = time.mktime(time.strptime(stamp[:19], '%Y-%m-%d %H:%M:%S')) + int(stamp[20:]) / 1000
        if (run := RUN_STARTED.match(message)) is not None:
            current[name] = (name, int(run.group(2)))
            marks[current[name]] = {'run': at}
        elif name in current and (stage := STAGE_STARTED.match(message)) is not None:
            marks[current[name]].setdefault(stage.group(1), at)
        elif name in current and message.endswith('] Traffic shift started'):
            marks[current[name]].setdefault('shift', at)
    return marks


def record_split(status: dict[str, Any]) -> dict[str, float]:
    """Seconds per stage from the status's stage records (startedAt/completedAt, whole seconds)."""
    import datetime
    split = {}
    for record in status.get('stages') or []:
        if record.get('startedAt') and record.get('completedAt'):
            start, end = (datetime.datetime.fromisoformat(record[k].replace('Z', '+00:00'))
                          for k in ('startedAt', 'completedAt'))
            split[record['name']] = (end - start).total_seconds()
    return split


def operator_split(marks: dict[str, float], start: float, ready: float) -> dict[str, float]:
    """Seconds per stage (a stage not logged is merged into the one before it), 'start' (create or patch ->
    stage 1 started: Kopf, queueing, run start), 'checks'/'shift' inside Verify, and 'total' (-> Ready)."""
    split: dict[str, float] = {}
    points = [('start', start)] + [(name, marks[name]) for name in STAGES if name in marks]
    for (name, at), (_, following) in zip(points, points[1:] + [('ready', ready)], strict=True):
        split[name] = following - at
    if 'shift' in marks and 'Verify' in marks and 'Complete' in marks:
        split['checks'] = marks['shift'] - marks['Verify']
        split['shift'] = marks['Complete'] - marks['shift']
    split['total'] = ready - start
    return split


# ---------------------------------------------------------------------------------------------
# The sample repository: a new commit (unique content, so the build is real) per deployment.


class Commits:
    def __init__(self, repository: SampleRepository) -> None:
        self.repository = repository
        self._lock = threading.Lock()

    def new(self, branch: str = 'main') -> str:
        """A commit with a unique file, pushed to `branch` of the bare repository; its SHA."""
        with self._lock:
            work = self.repository.work
            (work / 'www' / 'bench.txt').write_text(f'{branch} {uuid.uuid4()}\n')
            self.repository._git('add', '-A')
            self.repository._git('commit', '-q', '-m', f'bench {branch}')
            self.repository._git('push', '-q', '-f', str(self.repository.bare), f'HEAD:refs/heads/{branch}')
            return self.repository._git('rev-parse', 'HEAD')


# ---------------------------------------------------------------------------------------------
# The plain script.


class Timer:
    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def part(self, name: str) -> Any:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - t0


def run(command: list[str], **kwargs: Any) -> str:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f'{" ".join(command[:3])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}')
    return done.stdout.strip()


@dataclasses.dataclass
class Plain:
    """Everything the plain script knows up front (as a script's constants would)."""
    repo_url: str
    registry: str
    account: str
    region: str
    aws_url: str
    base_image: str
    proxy_url: str
    scratch: pathlib.Path
    poll: float
    docker_cli: bool = False
    built: list[str] = dataclasses.field(default_factory=list)

    def clients(self) -> Any:
        import boto3.session
        session = boto3.session.Session(aws_access_key_id=SANDBOX_KEYS['accessKeyId'],
                                        aws_secret_access_key=SANDBOX_KEYS['secretAccessKey'],
                                        region_name=self.region)
        return session

    def build_push(self, timer: Timer, *, branch: str, spec: PandaDeploySpec, name: str) -> str:
        """clone, build (same build arg and labels as the operator), push; the ECR-style image URI."""
        checkout = self.scratch / f'clone-{name}-{uuid.uuid4().hex[:8]}'
        env = {**os.environ, 'DOCKER_BUILDKIT': '0'}  # the operator's SDK build uses the classic builder too
        with timer.part('clone'):
            run(['git', 'clone', '-q', '--depth', '1', '-b', branch, self.repo_url, str(checkout)])
            sha = run(['git', '-C', str(checkout), 'rev-parse', 'HEAD'])
        repository = spec.repository_name
        local = f'{self.registry}/{repository}:{sha}'
        labels = {'org.opencontainers.image.source': self.repo_url, 'org.opencontainers.image.revision': sha,
                  BUILD_LABEL: f'bench-plain-{name}', BUILD_IDENTITY_LABEL: build_identity_label(spec.source)}
        if self.docker_cli:
            with timer.part('build'):
                run(['docker', 'build', '-q', '--build-arg', f'BASE_IMAGE={self.base_image}', '-t', local,
                     *[a for k, v in labels.items() for a in ('--label', f'{k}={v}')], str(checkout)], env=env)
            self.built.append(local)
            with timer.part('push'):
                run(['docker', 'push', '-q', local], env=env)
        else:  # the Engine API calls the operator's Docker adapter makes (docker-py's low-level client)
            api = docker.APIClient(timeout=600)
            with timer.part('build'):
                for chunk in api.build(path=str(checkout), tag=local, labels=labels,
                                       buildargs={'BASE_IMAGE': self.base_image}, rm=True, forcerm=True,
                                       pull=False, decode=True):
                    if 'error' in chunk:
                        raise SystemExit(f'plain script: docker build failed: {chunk["error"]}')
            self.built.append(local)
            with timer.part('push'):
                for chunk in api.push(f'{self.registry}/{repository}', tag=sha, stream=True, decode=True):
                    if 'error' in chunk:
                        raise SystemExit(f'plain script: docker push failed: {chunk["error"]}')
            api.close()
        shutil.rmtree(checkout, ignore_errors=True)
        return f'{self.account}.dkr.ecr.{self.region}.amazonaws.com/{repository}:{sha}'

    def checks(self, timer: Timer, *, url: str, count: int, interval: float, timeout: float,
               proxy: bool, part: str = 'checks') -> None:
        handlers = [urllib.request.ProxyHandler({'http': self.proxy_url} if proxy else {})]
        opener = urllib.request.build_opener(*handlers)
        with timer.part(part):
            for k in range(count):
                started = time.perf_counter()  # checks `interval` apart start to start, as the operator's
                request = urllib.request.Request(url, headers={'User-Agent': SCRIPT_AGENT})
                with opener.open(request, timeout=timeout) as response:
                    response.read()
                    if response.status != 200:
                        raise SystemExit(f'health check {k + 1}: HTTP {response.status} from {url}')
                if k + 1 < count:
                    time.sleep(max(0.0, interval - (time.perf_counter() - started)))

    def blue_green(self, *, branch: str, spec: PandaDeploySpec, world: AwsWorld) -> Timer:
        """Item 1: one blue/green rollout of the head of `branch`, by hand."""
        timer = Timer()
        image = self.build_push(timer, branch=branch, spec=spec, name='bg')
        session = self.clients()
        ecs = session.client('ecs', endpoint_url=self.aws_url)
        codedeploy = session.client('codedeploy', endpoint_url=self.aws_url)
        with timer.part('register'):
            arn = ecs.register_task_definition(**task_definition(spec, image_uri=image))['taskDefinition'][
                'taskDefinitionArn']
        cd = spec.blue_green.code_deploy
        with timer.part('deploy'):
            deployment = codedeploy.create_deployment(
                applicationName=cd.application, deploymentGroupName=cd.deployment_group,
                deploymentConfigName=cd.deployment_config, description='plain script',
                revision=revision(appspec(spec, task_definition_arn=arn)))['deploymentId']
            while True:
                info = codedeploy.get_deployment(deploymentId=deployment)['deploymentInfo']
                if info['status'] == 'Ready' or info['status'] == 'Succeeded':
                    break
                if info['status'] in ('Failed', 'Stopped'):
                    raise SystemExit(f'plain script: deployment {deployment} {info["status"]}: {info}')
                time.sleep(self.poll)
        check = spec.health_check
        test_url = f'http://{world.dns_name}:8080{check.path}'
        self.checks(timer, url=test_url, count=check.checks, interval=check.interval_seconds,
                    timeout=check.timeout_seconds, proxy=True)
        with timer.part('shift'):
            codedeploy.continue_deployment(deploymentId=deployment, deploymentWaitType='READY_WAIT')
            while True:
                info = codedeploy.get_deployment(deploymentId=deployment)['deploymentInfo']
                if (info['status'] in ('Succeeded', 'Baking') or info.get('instanceTerminationWaitTimeStarted')):
                    break
                if info['status'] in ('Failed', 'Stopped'):
                    raise SystemExit(f'plain script: deployment {deployment} {info["status"]}: {info}')
                time.sleep(self.poll)
        timer.parts['total'] = time.perf_counter() - timer.start
        return timer

    def first_rollout(self, *, branch: str, spec: PandaDeploySpec, world: AwsWorld, name: str) -> Timer:
        """Item 4: a new service for the head of `branch`, by hand."""
        timer = Timer()
        image = self.build_push(timer, branch=branch, spec=spec, name=name)
        session = self.clients()
        ecs = session.client('ecs', endpoint_url=self.aws_url)
        with timer.part('register'):
            arn = ecs.register_task_definition(**task_definition(spec, image_uri=image))['taskDefinition'][
                'taskDefinitionArn']
            e = spec.ecs
            ecs.create_service(cluster=e.cluster, serviceName=e.service, taskDefinition=arn,
                               desiredCount=e.desired_count, launchType=e.launch_type,
                               deploymentController={'type': 'CODE_DEPLOY'}, schedulingStrategy='REPLICA',
                               loadBalancers=[{'targetGroupArn': world.blue_target_group_arn,
                                               'containerName': e.container_name, 'containerPort': e.container_port}])
        check = spec.health_check
        assert check.url
        self.checks(timer, url=check.url, count=check.checks, interval=check.interval_seconds,
                    timeout=check.timeout_seconds, proxy=False)
        timer.parts['total'] = time.perf_counter() - timer.start
        return timer


# ---------------------------------------------------------------------------------------------
# A health endpoint for item 4's services.


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b'ok\n'
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def start_health_server(stack: contextlib.ExitStack) -> str:
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Health)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name='bench-health', daemon=True).start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    return f'http://127.0.0.1:{server.server_address[1]}/health'


# ---------------------------------------------------------------------------------------------
# The two measurements.


def median_split(splits: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for s in splits for k in s}
    return {k: statistics.median(s.get(k, 0.0) for s in splits) for k in keys}


def operator_rollout(sandbox: Sandbox, observer: Observer, commits: Commits, resource: dict[str, Any], *,
                     create: bool) -> dict[str, Any]:
    """One rollout of a new commit through the operator (create the resource, or PATCH its revision): its split
    (seconds), and where its API writes begin in the emulator's record ('writes_from')."""
    custom, name = sandbox.custom, resource['metadata']['name']
    sha = commits.new()
    before = len(sandbox.cluster.emulator.writes)
    start = time.time()
    if create:
        found = custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, resource)
    else:
        found = custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name,
                                                      {'spec': {'source': {'branch': None, 'revision': sha}}})
    key = (name, found['metadata']['generation'])
    seen, = observer.wait_ready([key])
    assert seen.ready is not None
    split: dict[str, Any] = operator_split(stage_marks(sandbox.operator_log).get(key, {}), start, seen.ready)
    split['writes_from'] = before
    return split


def overhead(sandbox: Sandbox, observer: Observer, commits: Commits, resource: dict[str, Any], rounds: int,
             script: Callable[[], Timer], label: str) -> dict[str, Any]:
    """Item 1 for one strategy: two untimed warm-up rollouts (the first creates the service, the second is the
    first blue/green), then `rounds` interleaved rounds of operator and `script`."""
    def ours(create: bool = False) -> dict[str, Any]:
        return operator_rollout(sandbox, observer, commits, resource, create=create)

    warm = [ours(create=True)['total'], ours()['total']]
    print(f'[1] {label} warm-up: operator first rollout (creates the service) {warm[0]:.2f}s, second (the first '
          f'blue/green{", creating the CodeDeploy application and group" if label == "CodeDeploy" else ""}) '
          f'{warm[1]:.2f}s', flush=True)
    mine: list[dict[str, Any]] = []
    theirs: list[dict[str, float]] = []
    for n in range(rounds):
        mine.append(ours())
        commits.new()
        theirs.append(script().parts)
        print(f'[1] {label} round {n + 1}/{rounds}: operator {mine[-1]["total"]:.2f}s '
              f'({", ".join(f"{k} {v:.2f}" for k, v in mine[-1].items() if k not in ("total", "writes_from"))}); '
              f'script {theirs[-1]["total"]:.2f}s '
              f'({", ".join(f"{k} {v:.2f}" for k, v in theirs[-1].items() if k != "total")})', flush=True)
    ecs_overhead.count_writes(mine, sandbox.cluster.emulator.writes, resource['metadata']['name'])
    splits = [{k: v for k, v in r.items() if k not in ('writes', 'writes_from')} for r in mine]
    return {'strategy': label, 'warm': warm, 'operator': mine, 'script': theirs,
            'operator_median': median_split(splits), 'script_median': median_split(theirs),
            'writes': ecs_overhead.writes_summary(mine)}


def concurrency(sandbox: Sandbox, observer: Observer, plain: Plain, commits: Commits,
                spec_body: dict[str, Any], n: int, health_url: str) -> dict[str, Any]:
    def body(side: str, i: int) -> dict[str, Any]:
        spec = json.loads(json.dumps(spec_body))
        tag = f'{side}-{n}-{i}'
        spec['source'] = {'url': plain.repo_url, 'branch': f'bench-{tag}', 'buildArgs': {'BASE_IMAGE': plain.base_image}}
        spec['image'] = {'repository': f'bench-{tag}'}
        spec['ecs']['service'] = f'bench-{tag}'
        spec['healthCheck'] = {**spec['healthCheck'], 'url': health_url}
        spec['healthCheck'].pop('path', None)
        return spec

    # Operator: N resources created at once.
    bodies = [body('op', i) for i in range(n)]
    for spec in bodies:
        commits.new(spec['source']['branch'])
    start = time.time()
    keys = []
    for i, spec in enumerate(bodies):
        found = sandbox.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, {
            'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'PandaDeploy',
            'metadata': {'name': f'bench-op-{n}-{i}', 'namespace': NAMESPACE}, 'spec': spec})
        keys.append((found['metadata']['name'], found['metadata']['generation']))
    seens = observer.wait_ready(keys)
    op_wall = max(s.ready for s in seens if s.ready is not None) - start
    marks = stage_marks(sandbox.operator_log)
    op_splits = [operator_split(marks.get(k, {}), start, s.ready or 0.0) for k, s in zip(keys, seens, strict=True)]
    records = [record_split(s.status) for s in seens]

    # Script: N threads.
    script_bodies = [body('sc', i) for i in range(n)]
    for spec in script_bodies:
        commits.new(spec['source']['branch'])
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        futures = [pool.submit(plain.first_rollout, branch=spec['source']['branch'],
                               spec=PandaDeploySpec.model_validate(spec), world=sandbox.world, name=f'sc-{n}-{i}')
                   for i, spec in enumerate(script_bodies)]
        timers = [f.result() for f in futures]
    sc_wall = time.perf_counter() - start
    sc_splits = [t.parts for t in timers]

    def total(splits: list[dict[str, float]], *names: str) -> float:
        return sum(s.get(k, 0.0) for s in splits for k in names)

    result = {
        'n': n, 'operator_wall': op_wall, 'script_wall': sc_wall,
        'operator': {'docker': total(op_splits, 'Build', 'Push'), 'aws': total(op_splits, 'Service', 'BlueGreen'),
                     'checks': total(op_splits, 'Verify'),
                     'rest': total(op_splits, 'start', 'Complete'), 'sum': total(op_splits, 'total')},
        'operator_records': {'docker': total(records, 'Build', 'Push'), 'aws': total(records, 'Service', 'BlueGreen'),
                             'checks': total(records, 'Verify'),
                             'rest': total(op_splits, 'total') - total(records, *STAGES[:5])},
        'script': {'docker': total(sc_splits, 'clone', 'build', 'push'), 'aws': total(sc_splits, 'register'),
                   'checks': total(sc_splits, 'checks'), 'rest': 0.0, 'sum': total(sc_splits, 'total')},
        'operator_splits': op_splits, 'script_splits': sc_splits,
    }
    print(f'[4] N={n}: operator wall {op_wall:.2f}s {fmt_parts(result["operator"])}, from stage records '
          f'{fmt_parts(result["operator_records"])}; script wall '
          f'{sc_wall:.2f}s {fmt_parts(result["script"])}', flush=True)
    return result


def fmt_parts(parts: dict[str, float]) -> str:
    return '(' + ', '.join(f'{k} {v:.1f}s' for k, v in parts.items()) + ')'


# ---------------------------------------------------------------------------------------------


def remove_images(client: docker.DockerClient, deployment_ids: set[str], tags: list[str]) -> None:
    """The images this benchmark built: the operator's (by their deployment-id label) and the script's."""
    for image in client.api.images(filters={'label': BUILD_LABEL}):  # one call; no per-image inspect to race
        value = (image.get('Labels') or {}).get(BUILD_LABEL, '')
        if value in deployment_ids or value.startswith('bench-plain-'):
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image['Id'], force=True)
    for tag in tags:
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(tag, force=True)


def machine(client: docker.DockerClient) -> str:
    return (f'{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, '
            f'Docker {client.version()["Version"]} (storage {client.info()["Driver"]})')


def item1(sandbox: Sandbox, observer: Observer, plain: Plain, commits: Commits, spec_body: dict[str, Any],
          args: argparse.Namespace) -> list[dict[str, Any]]:
    """Item 1 for CodeDeploy (the sample resource, the sandbox's own world) and each ECS strategy in
    --strategies (a resource and world of its own, `ecs_overhead`)."""
    resource = {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'PandaDeploy',
                'metadata': {'name': NAME, 'namespace': NAMESPACE}, 'spec': spec_body}
    spec = PandaDeploySpec.model_validate(spec_body)
    found = [overhead(sandbox, observer, commits, resource, args.rounds, label='CodeDeploy',
                      script=lambda: plain.blue_green(branch='main', spec=spec, world=sandbox.world))]
    for strategy in [s for s in args.strategies.split(',') if s.strip()]:
        ecs_body, world = ecs_overhead.ecs_resource(sandbox, spec_body, strategy.strip())
        ecs_spec = PandaDeploySpec.model_validate(ecs_body['spec'])
        script = ecs_overhead.EcsScript(plain=plain, world=world)
        found.append(overhead(sandbox, observer, commits, ecs_body, args.rounds, label=strategy.strip(),
                              script=lambda s=script, e=ecs_spec: s.rollout(Timer(), branch='main', spec=e)))
    return found


def print_item1(one: dict[str, Any], rounds: int, codedeploy: dict[str, Any]) -> list[list[str]]:
    """Item 1's table for one strategy; its summary rows for bench/table.py. An ECS strategy's API writes are
    held to `codedeploy`'s (issue 13: no more than CodeDeploy's)."""
    o, s, label = one['operator_median'], one['script_median'], one['strategy']
    ratio = o['total'] / s['total']
    start = 'CreateDeployment' if label == 'CodeDeploy' else 'UpdateService'
    shift = 'ContinueDeployment → traffic shifted' if label == 'CodeDeploy' else \
        'ContinueServiceDeployment → SUCCESSFUL'
    print()
    print(f'Item 1, {label}: one rollout of a new commit, median of {rounds} interleaved rounds (seconds)')
    print('| phase | operator (stage, as observed) | plain script |')
    print('|---|---|---|')
    table = [('start: spec patched → stage 1 started (Kopf, reconciler)', o.get('start', 0), None),
             ('Build: clone + docker build', o.get('Build', 0), s.get('clone', 0) + s.get('build', 0)),
             ('Push: docker push (operator also: STS, ECR repo, token)', o.get('Push', 0), s.get('push', 0)),
             ('Service: RegisterTaskDefinition' + ('' if label == 'CodeDeploy' else ', UpdateService'),
              o.get('Service', 0), s.get('register', 0)),
             (f'BlueGreen: {start} → ready for traffic' + ('' if label == 'CodeDeploy' else ' (PAUSE hook)'),
              o.get('BlueGreen', 0), s.get('deploy', 0)),
             ('Verify: health checks', o.get('checks', 0), s.get('checks', 0)),
             (f'Verify: {shift}', o.get('shift', 0), s.get('shift', 0)),
             ('Complete → Ready', o.get('Complete', 0), None)]
    for name, a, b in table:
        print(f'| {name} | {a:.2f} | {"" if b is None else f"{b:.2f}"} |')
    print(f'| **total** | **{o["total"]:.2f}** | **{s["total"]:.2f}** |')
    verdict = 'met' if ratio <= 1.05 else 'MISSED'
    print(f'| ratio operator / script | {ratio:.3f} (target ≤ 1.05: {verdict}) | |')
    writes_target = '' if label == 'CodeDeploy' else ecs_overhead.writes_verdict(one, codedeploy)
    print(f'| Kubernetes API writes per rollout (operator) | {one["writes"]} | {writes_target} |')
    rows = [['1', f'{label} rollout, new commit: operator / plain script (median of {rounds})',
             f'{o["total"]:.2f} / {s["total"]:.2f} s', ''],
            ['1', f'{label}: ratio operator / script', f'{ratio:.3f}', f'≤ 1.05: {verdict}'],
            ['1', f'{label}: Kubernetes API writes per rollout', one['writes'],
             writes_target]]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=5, help='interleaved rounds for item 1 (0: skip item 1)')
    parser.add_argument('--strategies', default=','.join(ecs_overhead.STRATEGIES),
                        help='ECS strategies measured in item 1 beside CodeDeploy, comma-separated ("": none)')
    parser.add_argument('--concurrency', default='1,5,20', help='comma-separated N for item 4 ("": skip item 4)')
    parser.add_argument('--poll-seconds', type=float, default=0.25,
                        help='PANDA_DEPLOY_POLL_SECONDS, and the script\'s GetDeployment interval')
    parser.add_argument('--checks', type=int, default=5, help='health checks per deployment (both sides)')
    parser.add_argument('--interval', type=int, default=1, help='seconds between health checks (both sides)')
    parser.add_argument('--script-docker', choices=('sdk', 'cli'), default='sdk',
                        help='the script builds and pushes with the Engine API calls the operator makes (sdk, '
                             'docker-py) or with the docker CLI (cli)')
    parser.add_argument('--operator-log', type=pathlib.Path, help='keep a copy of the operator log here')
    parser.add_argument('--json', type=pathlib.Path, help='also write the summary rows here (for bench/table.py)')
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(',') if x.strip()]
    workers = max(levels or [1])

    client = docker.from_env(timeout=120)
    rows: list[list[str]] = []
    with contextlib.ExitStack() as stack:
        scratch = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix='panda-bench-deploy-')))
        # Registered before the sandbox: runs after its task containers are gone (an image in use stays behind).
        made: dict[str, Any] = {}
        stack.callback(lambda: remove_images(client, made['observer'].deployment_ids if 'observer' in made else set(),
                                             made['plain'].built if 'plain' in made else []))
        printer = ProgressPrinter(out=io.StringIO())
        stack.callback(printer.close)
        env = {'PANDA_DEPLOY_POLL_SECONDS': str(args.poll_seconds), 'PANDA_DEPLOY_WORKERS': str(workers)}
        sandbox = start_sandbox(stack, client, printer, operator_env=env)
        observer = Observer(sandbox.cluster.emulator)
        stack.callback(observer.stop)
        secrets, resource = demo_manifests(repo_url=sandbox.repository.url, base_image=sandbox.base_image,
                                           world=sandbox.world)
        import kubernetes
        core = kubernetes.client.CoreV1Api(sandbox.api)
        for secret in secrets:
            core.create_namespaced_secret(NAMESPACE, secret)
        spec_body = resource['spec']
        spec_body['healthCheck'].update(checks=args.checks, intervalSeconds=args.interval)
        sts = sandbox.clients('sts')
        plain = Plain(repo_url=sandbox.repository.url, registry=sandbox.registry,
                      account=sts.get_caller_identity()['Account'], region=REGION, aws_url=sandbox.aws.url,
                      base_image=sandbox.base_image, proxy_url=sandbox.proxy_url, scratch=scratch,
                      poll=args.poll_seconds, docker_cli=args.script_docker == 'cli')
        if args.operator_log:
            stack.callback(lambda: shutil.copy(sandbox.operator_log, args.operator_log))
        made.update(observer=observer, plain=plain)
        commits = Commits(sandbox.repository)
        sandbox.repository.commit(1)

        ones = item1(sandbox, observer, plain, commits, spec_body, args) if args.rounds > 0 else []
        many = []
        if levels:
            health_url = start_health_server(stack)
            for n in levels:
                many.append(concurrency(sandbox, observer, plain, commits, spec_body, n, health_url))
        where = machine(client)

    print()
    print(f'machine: {where}')
    print(f'operator: PANDA_DEPLOY_POLL_SECONDS={args.poll_seconds:g} (script polls GetDeployment at the same '
          f'interval), PANDA_DEPLOY_WORKERS={workers}; health checks {args.checks} x {args.interval}s apart on both sides')
    for one in ones:
        rows += print_item1(one, args.rounds, ones[0])
    if many:
        print()
        print('Item 4: N first rollouts at once (own service and commit each); wall seconds, and the sum over the N '
              'deployments of where the time went')
        print('| N | operator wall | script wall | ratio | operator: Docker / AWS / checks / rest (log lines) | '
              'same, from status stage records | script: Docker / AWS / checks |')
        print('|---|---|---|---|---|---|---|')
        for r in many:
            op, sc, rec = r['operator'], r['script'], r['operator_records']
            print(f'| {r["n"]} | {r["operator_wall"]:.2f} | {r["script_wall"]:.2f} | '
                  f'{r["operator_wall"] / r["script_wall"]:.3f} | {op["docker"]:.1f} / {op["aws"]:.1f} / '
                  f'{op["checks"]:.1f} / {op["rest"]:.1f} | {rec["docker"]:.0f} / {rec["aws"]:.0f} / {rec["checks"]:.0f} / '
                  f'{rec["rest"]:.1f} | {sc["docker"]:.1f} / {sc["aws"]:.1f} / {sc["checks"]:.1f} |')
            rows.append(['4', f'{r["n"]} at once: operator / script wall', f'{r["operator_wall"]:.2f} / '
                         f'{r["script_wall"]:.2f} s (ratio {r["operator_wall"] / r["script_wall"]:.2f})', ''])
            rows.append(['4', f'{r["n"]} at once, summed over deployments: Docker / AWS / checks / operator rest',
                         f'operator {op["docker"]:.1f} / {op["aws"]:.1f} / {op["checks"]:.1f} / {op["rest"]:.1f} s; '
                         f'script {sc["docker"]:.1f} / {sc["aws"]:.1f} / {sc["checks"]:.1f} / - s', ''])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({'bench': 'deploy_overhead', 'machine': where, 'rows': rows,
                                         'item1': ones, 'item4': many}, indent=1, default=str))


if __name__ == '__main__':
    main()
