"""The hostile-repository set and 10 ordinary rollouts at once, on one operator with the real adapters.

Issue 12's "Show": the operator's peak RSS stays under its memory limit (the Deployment's, in
deploy/manifests/deployment.yaml: 1Gi) through the whole hostile-repository set, run against one operator
while 10 ordinary resources roll out beside it, all 10 Ready.

The stack is the demo's (`start_sandbox`, as `test_load.py` starts it, whose helpers make the ordinary
resources: each its own git repository FROM the local base image, its own ECS service and a
`spec.healthCheck.url` on an HTTP server in this test), the operator with `PANDA_DEPLOY_WORKERS=5`. All
resources are created at once, hostile and ordinary interleaved, each hostile case its own repository:

- `.dockerignore` a symlink to /dev/zero; the Dockerfile a symlink; `context` a symlink to a directory
  outside the clone; a symlink in the context to /var/run/secrets/kubernetes.io/serviceaccount: each
  `SymlinkNotAllowed`, naming the link and its target;
- `RUN yes | tr -d '\\n'` (a line that never ends): `BuildOutputTooLarge`, its step container gone;
- `RUN head -c 67108864 /dev/zero | tr '\\0' x; exit 3` (64 MiB on one line, then exit 3): `BuildFailed`
  naming exit code 3, the message capped;
- a 3 MiB context over a 2 MiB context limit: `ContextTooLarge`; a repository of 16 MiB (of zeros) over an
  8 MiB checkout limit: `RepositoryTooLarge`; both messages give the size and the limit;
- `dockerfile: Dockerfile` with `context: app`: `DockerfileOutsideContext`;
- a build failing with a 400 kB message (the engine's error repeats a 400 kB command, which also prints
  400 kB on one line to stderr): `BuildFailed` naming exit code 5;
- a git server (a socket here) that accepts connections and never answers, with `timeouts.stageSeconds`
  20: `StageTimeout`, and no git process left below the operator.

The operator's limits are lowered to keep this quick (they are operator-wide, so the ordinary resources
build under them too): PANDA_DEPLOY_MAX_CONTEXT_BYTES 2 MiB, PANDA_DEPLOY_MAX_CHECKOUT_BYTES 8 MiB and
PANDA_DEPLOY_MAX_BUILD_OUTPUT_BYTES 66 MiB -- not lower: the 64 MiB line plus the build's own lines must
fit under it for that case to reach its exit code (at the default 64 MiB it is `BuildOutputTooLarge`),
while the line that never ends is stopped at 66 MiB.

Checked: every ordinary resource Ready with a complete status (test_load's `incomplete`); each hostile one
`Failed` at Build with its reason and a message saying what is at fault (Ready condition, stage record and
history alike); every message of every status within MESSAGE_LIMIT and every status under 64 KiB as JSON;
the operator alive, its peak RSS (VmRSS sampled every 0.25 s, and VmHWM, the kernel's own peak, at the end)
under the Deployment's memory limit; nothing left in the operator's TMPDIR (a directory of its own here:
clones are `panda-deploy-src-<pid>-…`, see controller/tempdirs.py; packed contexts are unnamed files); no
git process left below the operator (every process below it that is git or was started by git, sampled
from /proc, gone at the end). The figures (wall time, peak RSS, each case's reason and time) are printed.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import itertools
import json
import pathlib
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import docker
import kubernetes
import pytest
import yaml

from controller.errors import format_bytes
from controller.models import GROUP, MESSAGE_LIMIT, PLURAL, VERSION
from controller.sandbox.kube import ClusterEmulator
from controller.sandbox.stack import localdocker
from controller.sandbox.stack.manifests import SANDBOX_KEYS
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.sandbox import BUILD_LABEL, Sandbox, start_sandbox
from tests.conftest import unavailable
from tests.e2e.test_load import (
    NAMESPACE,
    HealthEndpoint,
    Sampler,
    await_finished,
    git,
    incomplete,
    make_repository,
    name_of,
    proc_status,
    spec_for,
    tail,
)
from tests.integration.test_hostile_git import GitProcesses

ROOT = pathlib.Path(__file__).resolve().parents[2]
MiB = 1024 ** 2
ORDINARY = 10
WORKERS = 5
STAGE_SECONDS = 20  # the silent git server's resource
CONTEXT_LIMIT = 2 * MiB
CHECKOUT_LIMIT = 8 * MiB
OUTPUT_LIMIT = 66 * MiB
STATUS_LIMIT = 64 * 1024  # bytes of a whole status as JSON
TIMEOUT = 300  # a give-up point, never a timed assertion
# Operator log lines that would mean a run died on an operator error rather than ending with its reason.
TROUBLE = re.compile(r'stopped on an operator error|raised unexpectedly|Traceback|UnexpectedError')

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(TIMEOUT + 300)]


# -- the hostile cases ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    reason: str
    says: tuple[str, ...]  # each in the stage's message
    files: Mapping[str, str | bytes] = dataclasses.field(default_factory=dict)
    symlinks: Mapping[str, str] = dataclasses.field(default_factory=dict)  # path -> target
    source: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # added to spec.source
    url: str | None = None  # given: no repository made (the silent server)
    stage_seconds: int | None = None

    @property
    def resource(self) -> str:
        return f'hostile-{self.name}'


def hostile_cases(base: str, *, outside: pathlib.Path, silent_url: str, marker: str) -> list[Case]:
    """`base`: the Dockerfile's first line; `outside`: a directory outside every clone."""
    secrets = '/var/run/secrets/kubernetes.io/serviceaccount'
    # 400 kB of command (eight 50 kB arguments, each on a continuation line under the parser's line limit),
    # which the engine repeats in its error; the command prints 400 kB on one line to stderr, then exits 5.
    arguments = ', '.join(f'"{"x" * 50_000}"' for _ in range(8)).replace(', ', ', \\\n    ')
    loud_failure = f'RUN ["sh", "-c", "head -c 409600 /dev/zero | tr -c y y >&2; exit 5", {arguments}]\n'
    return [
        Case('dockerignore-zero', 'SymlinkNotAllowed', ('.dockerignore', '/dev/zero'),
             files={'Dockerfile': base}, symlinks={'.dockerignore': '/dev/zero'}),
        Case('dockerfile-link', 'SymlinkNotAllowed', ("'Dockerfile'", 'real.Dockerfile'),
             files={'real.Dockerfile': base}, symlinks={'Dockerfile': 'real.Dockerfile'},
             source={'dockerfile': 'Dockerfile'}),
        Case('context-link', 'SymlinkNotAllowed', ("'ctx'", str(outside)),
             files={'README': 'x'}, symlinks={'ctx': str(outside)},
             source={'context': 'ctx', 'dockerfile': 'ctx/Dockerfile'}),
        Case('link-to-secrets', 'SymlinkNotAllowed', ("'data/token'", secrets),
             files={'Dockerfile': base + 'COPY . /ctx/\n'}, symlinks={'data/token': secrets}),
        Case('endless-line', 'BuildOutputTooLarge', (format_bytes(OUTPUT_LIMIT),),
             files={'Dockerfile': base + f'RUN echo {marker} >/dev/null; yes | tr -d "\\n"\n'}),
        Case('line-64mib-exit-3', 'BuildFailed', ('(exit code 3)',),
             files={'Dockerfile': base + "RUN head -c 67108864 /dev/zero | tr '\\0' x; exit 3\n"}),
        Case('context-too-large', 'ContextTooLarge', ('3.0 MiB', format_bytes(CONTEXT_LIMIT)),
             files={'Dockerfile': base + 'COPY . /ctx/\n', 'kept.bin': bytes(range(256)) * (12 * 1024),
                    '.dockerignore': '.git\n'}),
        Case('repo-too-large', 'RepositoryTooLarge', ('16.0 MiB', format_bytes(CHECKOUT_LIMIT)),
             files={'Dockerfile': base, 'zeros.bin': b'\0' * (16 * MiB)}),
        Case('dockerfile-outside', 'DockerfileOutsideContext', ("'Dockerfile'", "'app'", 'spec.source.context'),
             files={'Dockerfile': base, 'app/index.html': 'hi'}, source={'dockerfile': 'Dockerfile', 'context': 'app'}),
        Case('failure-400kb', 'BuildFailed', ('(exit code 5)',), files={'Dockerfile': base + loud_failure}),
        Case('silent-git', 'StageTimeout', ('Stage 1 (Build) timed out after', f'(timeout: {STAGE_SECONDS} seconds)'),
             url=silent_url, stage_seconds=STAGE_SECONDS),
    ]


def make_hostile_repository(root: pathlib.Path, case: Case) -> str:
    """A repository with one commit of the case's files and symlinks (links committed as links); its URL."""
    work = root / case.name
    work.mkdir(parents=True)
    for name, content in case.files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    for name, target in case.symlinks.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    git('init', '-q', '-b', 'main', '.', cwd=work)
    git('add', '-A', cwd=work)
    git('commit', '-q', '-m', case.name, cwd=work)
    return work.as_uri()


def hostile_spec(case: Case, *, url: str, sandbox: Sandbox, health: HealthEndpoint) -> dict[str, Any]:
    """An ordinary resource's spec (test_load's), with the case's source, names and stage timeout."""
    spec = spec_for(0, url=url, sandbox=sandbox, health=health)
    name = case.resource
    spec['source'] = {'url': url, 'branch': 'main', **case.source}
    spec['image'] = {'repository': f'panda-hostile-{case.name}'}
    spec['ecs']['service'] = name
    spec['blueGreen']['codeDeploy'].update(application=name, deploymentGroup=f'{name}-dg')
    spec['healthCheck']['url'] = health.url(f'/{name}')
    if case.stage_seconds is not None:
        spec['timeouts'] = {'stageSeconds': case.stage_seconds, 'totalSeconds': '30m'}
    return spec


class SilentGitServer:
    """Accepts every connection and never reads or answers; the connections are held until `close`."""

    def __init__(self) -> None:
        self.socket = socket.create_server(('127.0.0.1', 0))
        self.socket.settimeout(0.2)
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name='silent-git', daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def url(self) -> str:
        return f'http://127.0.0.1:{self.port}/hostile/silent.git'

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for connection in [*self.connections, self.socket]:
            connection.close()


# -- observing ----------------------------------------------------------------------------------------


class WatchingSampler(Sampler):
    """test_load's sampler (the API server's objects, the operator's VmRSS) plus the git processes below it."""

    def __init__(self, emulator: ClusterEmulator, pid: int, gits: GitProcesses) -> None:
        super().__init__(emulator, pid, period=0.25)
        self.gits = gits

    def take(self) -> None:
        super().take()
        self.gits.sample()


def memory_limit() -> tuple[str, int]:
    """The operator container's memory limit in deploy/manifests/deployment.yaml: (as written, bytes)."""
    for doc in yaml.safe_load_all((ROOT / 'deploy' / 'manifests' / 'deployment.yaml').read_text()):
        if doc and doc.get('kind') == 'Deployment':
            written = str(doc['spec']['template']['spec']['containers'][0]['resources']['limits']['memory'])
            found = re.fullmatch(r'(\d+)(Ki|Mi|Gi)', written)
            assert found is not None, written
            return written, int(found.group(1)) * 1024 ** {'Ki': 1, 'Mi': 2, 'Gi': 3}[found.group(2)]
    raise AssertionError('no Deployment in deploy/manifests/deployment.yaml')


def messages(status: Mapping[str, Any]) -> list[str]:
    """Every message a status holds: its own, each stage's, each condition's, each history entry's."""
    found = [status.get('message') or '']
    for key in ('stages', 'conditions', 'history'):
        found += [entry.get('message') or '' for entry in status.get(key) or []]
    return found


def hostile_problems(case: Case, obj: Mapping[str, Any], status: Mapping[str, Any]) -> list[str]:
    """How a hostile resource's status differs from Failed at Build with the case's reason and message."""
    problems = []
    generation = obj['metadata']['generation']
    if status.get('phase') != 'Failed' or status.get('observedGeneration') != generation:
        problems.append(f'phase {status.get("phase")} for generation {status.get("observedGeneration")}')
    ready = next((c for c in status.get('conditions') or [] if c['type'] == 'Ready'), {})
    if (ready.get('status'), ready.get('reason')) != ('False', case.reason):
        problems.append(f'Ready {ready.get("status")} {ready.get("reason")}')
    build = (status.get('stages') or [{}])[0]
    if (build.get('name'), build.get('result'), build.get('reason')) != ('Build', 'Failed', case.reason):
        problems.append(f'stage {build.get("name")} {build.get("result")} {build.get("reason")}')
    problems += [f'message without {text!r}' for text in case.says if text not in (build.get('message') or '')]
    history = status.get('history') or [{}]
    if (history[0].get('result'), history[0].get('reason')) != ('Failed', case.reason):
        problems.append(f'history {history[0].get("result")} {history[0].get("reason")}')
    if problems:
        problems.append(f'message: {build.get("message") or status.get("message")!r}')
    return problems


# -- the test -----------------------------------------------------------------------------------------


def test_hostile_repositories_beside_ordinary_rollouts_keep_the_operator_under_its_memory_limit(
        docker_client: docker.DockerClient, tmp_path: pathlib.Path) -> None:
    printer = ProgressPrinter(out=io.StringIO())
    with contextlib.ExitStack() as stack:
        stack.callback(printer.close)
        hostile_beside_ordinary(stack, docker_client, printer, tmp_path)
    left = [image.get('RepoTags') or image['Id'] for image in docker_client.api.images(filters={'label': BUILD_LABEL})
            if (image.get('Labels') or {}).get(BUILD_LABEL) in printer.deployment_ids]
    assert left == []


def hostile_beside_ordinary(stack: contextlib.ExitStack, docker_client: docker.DockerClient,
                            printer: ProgressPrinter, tmp_path: pathlib.Path) -> None:
    limit_written, limit = memory_limit()
    operator_tmp = tmp_path / 'operator-tmp'
    operator_tmp.mkdir()
    try:
        sandbox = start_sandbox(stack, docker_client, printer, operator_env={
            'PANDA_DEPLOY_WORKERS': str(WORKERS), 'PANDA_DEPLOY_POLL_SECONDS': '1', 'TMPDIR': str(operator_tmp),
            'PANDA_DEPLOY_MAX_CONTEXT_BYTES': str(CONTEXT_LIMIT),
            'PANDA_DEPLOY_MAX_CHECKOUT_BYTES': str(CHECKOUT_LIMIT),
            'PANDA_DEPLOY_MAX_BUILD_OUTPUT_BYTES': str(OUTPUT_LIMIT)})
    except localdocker.Unavailable as exc:
        unavailable(str(exc))
    emulator = sandbox.cluster.emulator

    def collect_deployment_ids() -> None:  # before the demo's own clean-up removes the images they built
        for obj in emulator.list_objects(PLURAL, NAMESPACE):
            status = obj.get('status') or {}
            ids = {status.get('deploymentId')} | {h.get('deploymentId') for h in status.get('history') or []}
            printer.deployment_ids.update(i for i in ids if i)
    stack.callback(collect_deployment_ids)

    health = HealthEndpoint()
    stack.callback(health.server_close)
    stack.callback(health.shutdown)
    silent = SilentGitServer()
    stack.callback(silent.close)
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'Dockerfile').write_text(f'FROM {sandbox.base_image}\nCOPY token /token\n')
    (outside / 'token').write_text('not-for-the-image')
    marker = uuid.uuid4().hex[:12]
    cases = hostile_cases(f'FROM {sandbox.base_image}\n', outside=outside, silent_url=silent.url(), marker=marker)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        ordinary = list(pool.map(lambda i: make_repository(tmp_path / 'git', i, sandbox.base_image), range(ORDINARY)))
        urls = list(pool.map(lambda case: case.url or make_hostile_repository(tmp_path / 'hostile', case), cases))
    core = kubernetes.client.CoreV1Api(sandbox.api)
    core.create_namespaced_secret(NAMESPACE, {'metadata': {'name': 'aws-creds'}, 'stringData': dict(SANDBOX_KEYS)})

    def body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'PandaDeploy',
                'metadata': {'name': name, 'namespace': NAMESPACE}, 'spec': spec}
    hostile_bodies = [body(case.resource, hostile_spec(case, url=url, sandbox=sandbox, health=health))
                      for case, url in zip(cases, urls, strict=True)]
    ordinary_bodies = [body(name_of(i), spec_for(i, url=url, sandbox=sandbox, health=health))
                       for i, (url, _) in enumerate(ordinary)]
    # Interleaved, so that hostile and ordinary runs share the pool from the start.
    bodies = [b for pair in itertools.zip_longest(hostile_bodies, ordinary_bodies) for b in pair if b is not None]
    total = len(bodies)

    gits = GitProcesses(sandbox.operator.pid)
    started = time.monotonic()
    with WatchingSampler(emulator, sandbox.operator.pid, gits) as sampler:
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda b: sandbox.custom.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, b), bodies))
        await_finished(emulator, sandbox, count=total, deadline=started + TIMEOUT)
        wall = time.monotonic() - started
        sampler.take()
    alive = sandbox.operator.poll() is None
    peak = proc_status(sandbox.operator.pid) if alive else {'VmHWM': 0, 'VmRSS': 0}
    gits.sample()
    gits_left = gits.alive()
    tmp_left = sorted(str(p.relative_to(operator_tmp)) for p in operator_tmp.rglob('*'))
    steps_left = [c['Id'][:12] for c in docker_client.api.containers() if marker in (c.get('Command') or '')]
    log = sandbox.operator_log.read_text(errors='replace')
    statuses = {o['metadata']['name']: (o, o.get('status') or {}) for o in emulator.list_objects(PLURAL, NAMESPACE)}

    # The figures first, so that a failure below still shows them.
    hwm_mib, sampled_mib = peak['VmHWM'] / 1024, sampler.samples.rss_kib / 1024
    sizes = {name: len(json.dumps(status)) for name, (_, status) in statuses.items()}
    outcomes = {case.name: (f'{status.get("phase")}/{((status.get("stages") or [{}])[0]).get("reason")} '
                            f'{status.get("durationSeconds")}s')
                for case in cases for _, status in [statuses[case.resource]]}
    ready = sum(statuses[name_of(i)][1].get('phase') == 'Succeeded' for i in range(ORDINARY))
    print(f'\nhostile beside ordinary: {len(cases)} hostile + {ORDINARY} ordinary resources, {WORKERS} workers, '
          f'wall {wall:.0f} s; operator peak RSS {hwm_mib:.0f} MiB (VmHWM; sampled VmRSS max {sampled_mib:.0f} MiB, '
          f'{sampler.samples.taken} samples) of its {limit_written} limit; ordinary Ready {ready}/{ORDINARY}; '
          f'largest status {max(sizes.values())} B; git processes seen {len(gits.seen)}, left {len(gits_left)}; '
          f'silent server connections {len(silent.connections)}')
    print('per case: ' + ', '.join(f'{name}: {outcome}' for name, outcome in outcomes.items()))
    for case in cases:
        build = ((statuses[case.resource][1].get('stages') or [{}])[0])
        print(f'  {case.resource}: {len(build.get("message") or "")} characters: {(build.get("message") or "")[:160]!r}')
    series = sampler.samples.rss_series
    print('operator over time (s: RSS MiB): ' + ', '.join(
        f'{t:.0f}: {kib / 1024:.0f}' for t, kib, _ in series[::max(1, len(series) // 20)]))

    assert alive, f'the operator exited:\n{tail(sandbox)}'
    # Every ordinary resource Ready, its status complete.
    ecs = sandbox.clients('ecs')
    names = [name_of(i) for i in range(ORDINARY)]
    services = {s['serviceName']: s
                for s in ecs.describe_services(cluster=sandbox.world.cluster, services=names)['services']}
    problems: list[str] = []
    for i, (_, sha) in enumerate(ordinary):
        name = name_of(i)
        obj, status = statuses[name]
        problems += [f'{name}: {p}' for p in incomplete(obj, status, sha=sha, url=health.url(f'/{name}'),
                                                        sandbox=sandbox, service=services.get(name),
                                                        checks=health.checks.get(f'/{name}', 0))]
    # Each hostile one Failed at Build with its reason and a message naming what is at fault.
    for case in cases:
        obj, status = statuses[case.resource]
        found = hostile_problems(case, obj, status)
        if found:
            lines = [line for line in log.splitlines() if f'[{NAMESPACE}/{case.resource}]' in line][-8:]
            problems += [f'{case.resource}: {p}' for p in found] + [f'    log: {line[:400]}' for line in lines]
    # Every status small, every message in it capped.
    problems += [f'{name}: status of {size} B' for name, size in sizes.items() if size >= STATUS_LIMIT]
    problems += [f'{name}: a message of {len(m)} characters' for name, (_, status) in statuses.items()
                 for m in messages(status) if len(m) > MESSAGE_LIMIT]
    assert problems == [], '\n'.join(problems)

    # The silent server was reached, git waited on it, and nothing git started is left.
    assert silent.connections, 'the silent git server was never connected to'
    assert any(str(silent.port) in ' '.join(argv) for argv in gits.seen.values()), gits.seen
    assert gits_left == [], f'git processes left below the operator: {gits_left}'
    # Nothing on disk, no build step left running, no run died on an operator error.
    assert tmp_left == [], f'left in the operator\'s TMPDIR: {tmp_left[:20]}'
    assert steps_left == [], f'the endless line\'s step container still runs: {steps_left}'
    trouble = [line for line in log.splitlines() if TROUBLE.search(line)]
    assert trouble == [], '\n'.join(trouble[:20])
    # Memory bounded by the Deployment's limit.
    assert 0 < peak['VmHWM'] * 1024 < limit and sampler.samples.rss_kib * 1024 < limit, \
        f'peak RSS {hwm_mib:.0f} MiB (sampled {sampled_mib:.0f} MiB), limit {limit_written}'
