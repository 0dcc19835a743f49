"""Load: many PandaDeploys created at once, one operator with the real adapters and a bounded pool.

The stack is the demo's (`controller.sandbox.stack.sandbox.start_sandbox`, nothing
applied): the Kubernetes API emulator in this process, the AWS sandbox, a
local registry and the operator as a subprocess with `PANDA_DEPLOY_WORKERS=N`.
The test makes one git repository per resource (a Dockerfile `FROM` the local
base image plus a COPY of one small file that differs per resource, so every
resource really clones, builds and pushes its own image), its own ECS service
in the sandbox cluster, and `spec.healthCheck.url` pointing at an HTTP server
this test runs (first rollout: the service is created, there is no CodeDeploy
deployment, Verify checks that URL). Then it creates all the resources at
once through the API and checks:

- every resource reaches Ready for its generation (phase Succeeded);
- the pool bound holds, observed three ways, each never above N, the first
  two reaching N: the number of resources whose status says Progressing (and
  the number in stage Build), sampled every 0.25 s from the API server's own
  objects (Progressing is written and left inside a worker slot); the runs and
  Build stages open at once in the operator log, in line order (the run-start
  and run-end lines are written by the event loop as a run takes and leaves
  its slot, so no clock resolution is involved); and the overlap of the runs'
  and Build stages' startedAt/completedAt in the final statuses (whole
  seconds, so that count is a lower bound of the true overlap: it can prove
  an overflow, not rule one out);
- no status update was lost: every final status is complete (six stage
  records, the history entry of its run, image digest as the registry has it,
  task definition ARN as the ECS service runs it, health-check summary), the
  API server answered every write with success (no 409, no 422, no 5xx), and
  the operator log has no retried or failed patch and no operator error;
- the operator's memory stays bounded: its RSS sampled from /proc during the
  run, and VmHWM (the kernel's peak) at the end, below 600 MiB.

The figures (wall time, observed concurrency, peak RSS, writes) are printed.
PANDA_LOAD_RESOURCES (default 100) and PANDA_LOAD_WORKERS (default 5) make
quick development runs possible. Images the operator built are removed at the
end (by the deployment ids, through the demo's own clean-up).
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime
import http.server
import io
import os
import pathlib
import re
import subprocess
import threading
import time
import urllib.request
from typing import Any

import docker
import kubernetes
import pytest

from controller.adapters.http import USER_AGENT
from controller.models import GROUP, PLURAL, VERSION
from controller.sandbox.kube import ClusterEmulator
from controller.sandbox.stack import localdocker
from controller.sandbox.stack.manifests import SANDBOX_KEYS
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.sandbox import BUILD_LABEL, Sandbox, start_sandbox
from controller.sandbox.stack.world import REGION
from tests.conftest import unavailable

RESOURCES = int(os.environ.get('PANDA_LOAD_RESOURCES', '100'))
WORKERS = int(os.environ.get('PANDA_LOAD_WORKERS', '5'))
CHECKS = 2
RSS_LIMIT_MIB = 600
# Generous: a run takes seconds, but the machine is shared; never a timed assertion, only a give-up point.
TIMEOUT = 120 + 15 * RESOURCES
NAMESPACE = 'default'
STAGES = [('Build', 'Succeeded'), ('Push', 'Succeeded'), ('Service', 'Succeeded'), ('BlueGreen', 'Skipped'),
          ('Verify', 'Succeeded'), ('Complete', 'Succeeded')]
# Operator log lines that would mean an API write was retried, lost or a run died.
TROUBLE = re.compile(r'failed \(attempt \d+\); retrying|Patching failed|HTTP 409|Conflict|'
                     r'stopped on an operator error|raised unexpectedly|Traceback', re.IGNORECASE)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(TIMEOUT + 300)]


def name_of(i: int) -> str:
    return f'load-{i:03d}'


# -- the world the test brings: git repositories and a health endpoint ------------------------------


def git(*args: str, cwd: pathlib.Path) -> str:
    env = {**os.environ, 'GIT_CONFIG_GLOBAL': os.devnull, 'GIT_CONFIG_NOSYSTEM': '1',
           'GIT_AUTHOR_NAME': 'Panda Load', 'GIT_AUTHOR_EMAIL': 'load@panda.invalid',
           'GIT_COMMITTER_NAME': 'Panda Load', 'GIT_COMMITTER_EMAIL': 'load@panda.invalid'}
    return subprocess.run(['git', *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_repository(root: pathlib.Path, i: int, base_image: str) -> tuple[str, str]:
    """A repository whose one commit builds a tiny image of its own: (file:// URL, commit SHA)."""
    work = root / 'panda-load' / name_of(i)  # ECR repository panda-load-load-NNN
    work.mkdir(parents=True)
    (work / 'Dockerfile').write_text(f'FROM {base_image}\nCOPY hello.txt /hello.txt\n')
    (work / 'hello.txt').write_text(f'hello from {name_of(i)}\n')
    git('init', '-q', '-b', 'main', '.', cwd=work)
    git('add', '-A', cwd=work)
    git('commit', '-q', '-m', f'{name_of(i)} v1', cwd=work)
    return work.as_uri(), git('rev-parse', 'HEAD', cwd=work)


class HealthEndpoint(http.server.ThreadingHTTPServer):
    """Answers 200 to every GET; counts the health checks per path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(('127.0.0.1', 0), _HealthHandler)
        self.checks: dict[str, int] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, name='load-health', daemon=True).start()

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.server_address[1]}{path}'


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    server: HealthEndpoint

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.headers.get('User-Agent') == USER_AGENT:
            with self.server.lock:
                self.server.checks[self.path] = self.server.checks.get(self.path, 0) + 1
        body = b'ok\n'
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- quiet
        pass


def spec_for(i: int, *, url: str, sandbox: Sandbox, health: HealthEndpoint) -> dict[str, Any]:
    world, name = sandbox.world, name_of(i)
    return {
        'source': {'url': url, 'branch': 'main'},
        'aws': {'region': REGION, 'credentialsSecretRef': {'name': 'aws-creds'}},
        'ecs': {'cluster': world.cluster, 'service': name, 'containerName': 'app', 'containerPort': 8080,
                'cpu': '256', 'memory': '512', 'desiredCount': 1},
        'blueGreen': {
            'codeDeploy': {'application': name, 'deploymentGroup': f'{name}-dg', 'serviceRoleArn': world.role_arn},
            'loadBalancer': {'productionListenerArn': world.production_listener_arn,
                             'testListenerArn': world.test_listener_arn,
                             'blueTargetGroupArn': world.blue_target_group_arn,
                             'greenTargetGroupArn': world.green_target_group_arn},
            'promotion': 'auto'},
        'healthCheck': {'url': health.url(f'/{name}'), 'checks': CHECKS, 'intervalSeconds': 0, 'timeoutSeconds': 10},
        'timeouts': {'stageSeconds': '15m', 'totalSeconds': '30m'},
    }


# -- observing from outside the operator ------------------------------------------------------------


@dataclasses.dataclass
class Samples:
    progressing: int = 0  # most resources at once whose status phase was Progressing
    building: int = 0     # most at once whose current stage was Build (running)
    rss_kib: int = 0      # largest VmRSS seen
    rss_series: list[tuple[float, int, int]] = dataclasses.field(default_factory=list)  # (s, VmRSS KiB, fds)
    threads: int = 0      # most operator threads seen
    fds: int = 0          # most open file descriptors seen
    taken: int = 0


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KiB) and Threads of a process, from /proc."""
    found: dict[str, int] = {}
    for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
        key, _, value = line.partition(':')
        if key in ('VmRSS', 'VmHWM', 'Threads'):
            found[key] = int(value.split()[0])
    return found


class Sampler:
    """Every `period` seconds: the API server's objects (phase, stage) and the operator's /proc entry."""

    def __init__(self, emulator: ClusterEmulator, pid: int, *, period: float = 0.25) -> None:
        self.emulator, self.pid, self.period = emulator, pid, period
        self.samples = Samples()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name='load-sampler', daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.take()

    def take(self) -> None:
        s = self.samples
        statuses = [o.get('status') or {} for o in self.emulator.list_objects(PLURAL, NAMESPACE)]
        s.progressing = max(s.progressing, sum(st.get('phase') == 'Progressing' for st in statuses))
        s.building = max(s.building, sum(st.get('stageName') == 'Build' and st.get('phase') == 'Progressing'
                                         for st in statuses))
        with contextlib.suppress(OSError):
            found = proc_status(self.pid)
            s.rss_kib = max(s.rss_kib, found['VmRSS'])
            s.threads = max(s.threads, found['Threads'])
            fds = len(os.listdir(f'/proc/{self.pid}/fd'))
            s.fds = max(s.fds, fds)
            s.rss_series.append((time.monotonic() - self._started, found['VmRSS'], fds))
        s.taken += 1


def max_overlap(intervals: list[tuple[datetime.datetime, datetime.datetime]]) -> int:
    """The most half-open [start, end) intervals that share an instant (an end before a start at a tie)."""
    points = sorted([(start, 1) for start, end in intervals if end > start]
                    + [(end, -1) for start, end in intervals if end > start])
    most = now = 0
    for _, delta in points:
        now += delta
        most = max(most, now)
    return most


RUN_START = re.compile(r'\[default/(load-\d+)\] Run dep_\w+ started for generation')
RUN_END = re.compile(r'\[default/(load-\d+)\] Run dep_\w+ (Succeeded|Failed|Superseded|Cancelled): ')
BUILD_START = re.compile(r'\[default/(load-\d+)\] \[Stage 1\] Build started')
BUILD_END = re.compile(r'\[default/(load-\d+)\] (\[Stage 2\] Push started|\[Stage 1\] failed|Run dep_\w+ \w+: )')


def log_overlap(log: str, start: re.Pattern[str], end: re.Pattern[str]) -> tuple[int, int]:
    """(most intervals open at once, intervals seen) from the operator log, in line order.

    The start and end lines used here are written by the operator's event loop (the run
    taking and leaving its slot, a stage's start), so their order in the log is the order
    in which they happened; no clock resolution is involved.
    """
    open_now: set[str] = set()
    most = seen = 0
    for line in log.splitlines():
        if (found := start.search(line)) is not None:
            open_now.add(found.group(1))
            seen += 1
            most = max(most, len(open_now))
        elif (found := end.search(line)) is not None:
            open_now.discard(found.group(1))
    return most, seen


def when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))


# -- the test -----------------------------------------------------------------------------------------


@pytest.fixture
def responses(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """(method, path, HTTP status) of every write the API server answers, recorded at the server."""
    answered: list[tuple[str, str, int]] = []
    original = ClusterEmulator._handle

    async def recording(self: ClusterEmulator, request: Any) -> Any:
        response = await original(self, request)
        method = request.method.value.upper() if request.method is not None else 'GET'
        if method in ('POST', 'PUT', 'PATCH', 'DELETE'):
            answered.append((method, request.url.path, int(response.status)))
        return response

    monkeypatch.setattr(ClusterEmulator, '_handle', recording)
    return answered


def test_many_resources_at_once_all_ready_within_the_worker_bound(
        docker_client: docker.DockerClient, responses: list[tuple[str, str, int]], tmp_path: pathlib.Path) -> None:
    printer = ProgressPrinter(out=io.StringIO())
    with contextlib.ExitStack() as stack:
        stack.callback(printer.close)
        load(stack, docker_client, printer, responses, tmp_path)
    # The stack's clean-up removed every image the runs built (the shared engine's storage is not ours to fill).
    # (One listing call: `images.list` would inspect each image, racing other users of the shared engine.)
    left = [image.get('RepoTags') or image['Id'] for image in docker_client.api.images(filters={'label': BUILD_LABEL})
            if (image.get('Labels') or {}).get(BUILD_LABEL) in printer.deployment_ids]
    assert len(printer.deployment_ids) == RESOURCES and left == []


def load(stack: contextlib.ExitStack, docker_client: docker.DockerClient, printer: ProgressPrinter,
         responses: list[tuple[str, str, int]], tmp_path: pathlib.Path) -> None:
    try:
        sandbox = start_sandbox(stack, docker_client, printer,
                                operator_env={'PANDA_DEPLOY_WORKERS': str(WORKERS), 'PANDA_DEPLOY_POLL_SECONDS': '1'})
    except localdocker.Unavailable as exc:
        unavailable(str(exc))
    emulator = sandbox.cluster.emulator

    def collect_deployment_ids() -> None:  # runs before the demo's own clean-up removes the images they built
        for obj in emulator.list_objects(PLURAL, NAMESPACE):
            status = obj.get('status') or {}
            ids = {status.get('deploymentId')} | {h.get('deploymentId') for h in status.get('history') or []}
            printer.deployment_ids.update(i for i in ids if i)
    stack.callback(collect_deployment_ids)

    health = HealthEndpoint()
    stack.callback(health.server_close)
    stack.callback(health.shutdown)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        repositories = list(pool.map(lambda i: make_repository(tmp_path / 'git', i, sandbox.base_image),
                                     range(RESOURCES)))
    core = kubernetes.client.CoreV1Api(sandbox.api)
    core.create_namespaced_secret(NAMESPACE, {'metadata': {'name': 'aws-creds'}, 'stringData': dict(SANDBOX_KEYS)})
    bodies = [{'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'PandaDeploy',
               'metadata': {'name': name_of(i), 'namespace': NAMESPACE},
               'spec': spec_for(i, url=url, sandbox=sandbox, health=health)}
              for i, (url, _) in enumerate(repositories)]
    writes_before = len(emulator.writes)

    # All at once: 16 client threads creating through the API.
    started = time.monotonic()
    with Sampler(emulator, sandbox.operator.pid) as sampler:
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            created = list(pool.map(lambda body: sandbox.custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, body), bodies))
        created_in = time.monotonic() - started
        await_finished(emulator, sandbox, count=RESOURCES, deadline=started + TIMEOUT)
        wall = time.monotonic() - started
        sampler.take()
    peak = proc_status(sandbox.operator.pid)
    samples = sampler.samples
    log = sandbox.operator_log.read_text(errors='replace')

    statuses = {o['metadata']['name']: (o, o.get('status') or {}) for o in emulator.list_objects(PLURAL, NAMESPACE)}
    names = sorted(statuses)

    # The figures first, so that a failure below still shows them.
    runs = [(when(st['startedAt']), when(st['completedAt'])) for _, st in statuses.values()
            if st.get('startedAt') and st.get('completedAt')]
    builds = [(when(r['startedAt']), when(r['completedAt'])) for _, st in statuses.values()
              for r in st.get('stages') or [] if r['name'] == 'Build' and r.get('startedAt') and r.get('completedAt')]
    run_overlap, build_overlap = max_overlap(runs), max_overlap(builds)
    (log_runs, runs_logged), (log_builds, builds_logged) = (log_overlap(log, RUN_START, RUN_END),
                                                            log_overlap(log, BUILD_START, BUILD_END))
    writes = emulator.writes[writes_before:]
    kinds = collections.Counter(f'{w.method} {w.plural}{"/" + w.subresource if w.subresource else ""}' for w in writes)
    per_resource = collections.Counter(w.name for w in writes if w.plural == PLURAL and w.subresource == 'status')
    durations = sorted(st.get('durationSeconds') or 0 for _, st in statuses.values())
    figures = {
        'resources': RESOURCES, 'workers': WORKERS, 'wall_seconds': round(wall, 1),
        'create_seconds': round(created_in, 2),
        'sampled_max_progressing': samples.progressing, 'sampled_max_building': samples.building,
        'log_max_runs': log_runs, 'log_max_builds': log_builds,
        'record_max_run_overlap': run_overlap, 'record_max_build_overlap': build_overlap,
        'samples': samples.taken,
        'peak_rss_mib_sampled': round(samples.rss_kib / 1024, 1), 'vm_hwm_mib': round(peak['VmHWM'] / 1024, 1),
        'rss_end_mib': round(peak['VmRSS'] / 1024, 1), 'max_threads': samples.threads, 'max_fds': samples.fds,
        'api_writes': len(writes), 'writes_by_kind': dict(kinds),
        'status_patches_per_resource': sorted(set(per_resource.values())),
        'median_run_seconds': durations[len(durations) // 2],
    }
    print(f'\nload figures: {figures}')
    print('operator over time (s: RSS MiB/open fds): ' + ', '.join(
        f'{t:.0f}: {kib / 1024:.0f}/{fds}' for t, kib, fds in samples.rss_series[::max(1, len(samples.rss_series) // 20)]))
    levels = collections.Counter(m.group(1) for m in re.finditer(r'\b(WARNING|ERROR|CRITICAL)\b', log))
    print(f'operator log: {len(log.splitlines())} lines, {dict(levels)}')
    if keep := os.environ.get('PANDA_LOAD_LOG'):
        pathlib.Path(keep).write_text(log)

    # Every resource Ready for its generation, each status complete: no update lost.
    assert len(created) == RESOURCES and names == [name_of(i) for i in range(RESOURCES)]
    ecs = sandbox.clients('ecs')
    services: dict[str, dict[str, Any]] = {}
    for at in range(0, len(names), 10):
        for found in ecs.describe_services(cluster=sandbox.world.cluster, services=names[at:at + 10])['services']:
            services[found['serviceName']] = found
    problems: list[str] = []
    for i, (_url, sha) in enumerate(repositories):
        name = name_of(i)
        obj, status = statuses[name]
        problems += [f'{name}: {p}' for p in incomplete(obj, status, sha=sha, url=health.url(f'/{name}'),
                                                        sandbox=sandbox, service=services.get(name),
                                                        checks=health.checks.get(f'/{name}', 0))]
    assert problems == [], '\n'.join(problems[:40])

    # The API server accepted every write; no patch was retried or failed in the operator.
    refused = [r for r in responses if not 200 <= r[2] < 300]
    assert refused == [], refused[:20]
    trouble = [line for line in log.splitlines() if TROUBLE.search(line)]
    assert trouble == [], '\n'.join(trouble[:20])

    # The pool bound, observed three ways: never above N, and reached.
    assert samples.taken > 10, figures
    assert samples.progressing <= WORKERS and samples.building <= WORKERS, figures
    assert runs_logged == builds_logged == RESOURCES, figures  # the log patterns are not vacuous
    assert log_runs <= WORKERS and log_builds <= WORKERS, figures
    assert run_overlap <= WORKERS and build_overlap <= WORKERS, figures
    expected_peak = min(WORKERS, RESOURCES)
    assert samples.progressing == expected_peak and log_runs == expected_peak, f'the pool was never full: {figures}'
    assert expected_peak < 2 or run_overlap >= 2, figures

    # Memory bounded.
    assert samples.rss_kib < RSS_LIMIT_MIB * 1024 and peak['VmHWM'] < RSS_LIMIT_MIB * 1024, figures


def incomplete(obj: dict[str, Any], status: dict[str, Any], *, sha: str, url: str, sandbox: Sandbox,
               service: dict[str, Any] | None, checks: int) -> list[str]:
    """What is missing or wrong in a finished resource's status (empty when it is complete)."""
    problems = []
    generation = obj['metadata']['generation']
    if status.get('phase') != 'Succeeded' or status.get('observedGeneration') != generation:
        problems.append(f'phase {status.get("phase")} for generation {status.get("observedGeneration")} '
                        f'(current {generation}): {status.get("message")}')
    ready = next((c for c in status.get('conditions') or [] if c['type'] == 'Ready'), {})
    if ready.get('status') != 'True' or ready.get('observedGeneration') != generation:
        problems.append(f'Ready is {ready}')
    stages = [(r.get('name'), r.get('result')) for r in status.get('stages') or []]
    if stages != STAGES or not all(r.get('startedAt') and r.get('completedAt') for r in status['stages']):
        problems.append(f'stage records {status.get("stages")}')
    if status.get('revision') != sha:
        problems.append(f'revision {status.get("revision")}, not {sha}')
    history = status.get('history') or []
    if len(history) != 1 or history[0].get('result') != 'Succeeded' \
            or history[0].get('deploymentId') != status.get('deploymentId') or history[0].get('revision') != sha:
        problems.append(f'history {history}')
    image = status.get('image') or {}
    repository = f'panda-load-{obj["metadata"]["name"]}'
    if image.get('uri') != f'{image.get("uri", "").split("/", 1)[0]}/{repository}:{sha}' \
            or not re.fullmatch(r'sha256:[0-9a-f]{64}', image.get('digest') or '') \
            or image.get('dockerfile') != 'Dockerfile':
        problems.append(f'image {image}')
    elif (pushed := registry_digest(sandbox.registry, repository, sha)) != image['digest']:
        problems.append(f'image digest {image["digest"]}, the registry has {pushed}')
    arn = status.get('taskDefinitionArn')
    if not arn or service is None or service.get('taskDefinition') != arn:
        problems.append(f'task definition {arn}, service runs {service and service.get("taskDefinition")}')
    if status.get('codeDeployDeploymentId') is not None:
        problems.append(f'a first rollout made CodeDeploy deployment {status["codeDeployDeploymentId"]}')
    health = status.get('healthCheck') or {}
    if health.get('url') != url or health.get('passed') != CHECKS or health.get('failed') != 0:
        problems.append(f'health check {health}')
    if checks < CHECKS:
        problems.append(f'{checks} checks reached {url}, {CHECKS} expected')
    if status.get('activeColor') != 'blue':
        problems.append(f'active colour {status.get("activeColor")}')
    return problems


def registry_digest(registry: str, repository: str, tag: str) -> str | None:
    request = urllib.request.Request(
        f'http://{registry}/v2/{repository}/manifests/{tag}', method='HEAD',
        headers={'Accept': 'application/vnd.docker.distribution.manifest.v2+json'})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.headers.get('Docker-Content-Digest')
    except OSError:
        return None


def await_finished(emulator: ClusterEmulator, sandbox: Sandbox, *, count: int, deadline: float) -> None:
    """Until `count` resources have ended (Succeeded or Failed) for their generation; past `deadline`
    (time.monotonic) the test fails, naming the others and showing the operator log's tail."""
    while True:
        objects = emulator.list_objects(PLURAL, NAMESPACE)
        finished = [o for o in objects if (o.get('status') or {}).get('phase') in ('Succeeded', 'Failed')
                    and (o.get('status') or {}).get('observedGeneration') == o['metadata']['generation']]
        if len(finished) == count:
            return
        assert sandbox.operator.poll() is None, f'the operator exited:\n{tail(sandbox)}'
        if time.monotonic() > deadline:
            others = sorted(f'{o["metadata"]["name"]}: {(o.get("status") or {}).get("phase")} '
                            f'{(o.get("status") or {}).get("stage")}' for o in objects if o not in finished)
            pytest.fail(f'{len(finished)}/{count} finished; the others: {others}\n{tail(sandbox)}')
        time.sleep(1)


def tail(sandbox: Sandbox, lines: int = 60) -> str:
    return '\n'.join(sandbox.operator_log.read_text(errors='replace').splitlines()[-lines:])
