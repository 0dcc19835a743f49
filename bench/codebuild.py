"""Stages 1-2 of N resources at once: the Docker-engine path against the CodeBuild path, in the sandbox.

    .venv/bin/python bench/codebuild.py [--resources 20] [--workers 5] [--json FILE]

The operator's engine and real adapters run in this process (a worker pool of
`--workers`, as PANDA_DEPLOY_WORKERS); the AWS sandbox (moto, and its
CodeBuild runner) runs in a child process, so this process's CPU time and
memory are the operator's own. Each resource has a repository of its own
(a commit of its own, so every image is really built) and an ECR repository
of its own; each path runs in a fresh child process (its memory its own); both paths build the same commits' contents into fresh
repositories and push to the same registry (PANDA_TEST_REGISTRY, or one
started here). CodeBuild builds are polled every second (`--poll`).

What the figures show: the wall time for N rollouts' stages 1-2 to finish on
each path, and the operator's own CPU seconds and memory growth per
concurrent build. What they do not show: AWS's parallelism. The sandbox's
runner runs every CodeBuild build on this machine's one Docker engine, the
engine the Docker path uses, so the CodeBuild wall time here is the Docker
path's work plus the CodeBuild path's own (zip, S3 upload, polling), not
what N builds on N CodeBuild machines would take (where each build also
pays CodeBuild's provisioning, tens of seconds, but none waits for another).
The operator's CPU and memory are the figures that carry over to AWS.
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import json
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import docker

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.adapters import AdapterSettings  # noqa: E402
from controller.adapters.wiring import make_adapters  # noqa: E402
from controller.credentials import AwsKeys, Credentials  # noqa: E402
from controller.models import PandaDeploySpec, PandaDeployStatus, RunResult, StageName  # noqa: E402
from controller.pipeline import Engine, Recorder, Run, default_stages  # noqa: E402
from controller.sandbox.stack import localdocker  # noqa: E402

GIT = ['git', '-c', 'user.name=bench', '-c', 'user.email=bench@example.test']
ROLE = 'arn:aws:iam::123456789012:role/codebuild-bench'


class Sink:
    """Status writes, Events and progress lines dropped (the bench measures the work, not a terminal)."""

    async def save(self, status: PandaDeployStatus) -> None: ...

    async def event(self, *, type: str, reason: str, message: str) -> None: ...

    def progress(self, line: str) -> None: ...


def repositories(scratch: pathlib.Path, count: int) -> list[pathlib.Path]:
    """`count` bare repositories of the sample app, each at a commit of its own."""
    work = scratch / 'work'
    shutil.copytree(ROOT / 'examples' / 'sample-app', work)
    subprocess.run(['git', 'init', '-q', '-b', 'main', str(work)], check=True)
    bares = []
    for n in range(count):
        (work / 'www' / 'round.txt').write_text(f'resource {n} {time.time()}\n')
        subprocess.run([*GIT, '-C', str(work), 'add', '.'], check=True)
        subprocess.run([*GIT, '-C', str(work), 'commit', '-qm', f'resource {n}'], check=True)
        bare = scratch / 'repos' / f'app-{n}.git'
        subprocess.run(['git', 'clone', '-q', '--bare', str(work), str(bare)], check=True)
        bares.append(bare)
    return bares


def start_sandbox() -> tuple[subprocess.Popen[str], str]:
    """`python -m controller.sandbox.aws` in a child process; (process, its URL)."""
    process = subprocess.Popen([sys.executable, '-m', 'controller.sandbox.aws', '--port', '0'], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith('listening on '):
        raise SystemExit(f'the AWS sandbox did not start: {line!r}')
    return process, line.removeprefix('listening on ').strip()


def make_run(bare: pathlib.Path, *, repository: str, base: str, engine: str) -> Run:
    build: dict[str, Any] = {'engine': engine}
    if engine == 'codeBuild':
        build['codeBuild'] = {'serviceRoleArn': ROLE}
    spec = PandaDeploySpec.model_validate({
        'source': {'url': f'file://{bare}', 'buildArgs': {'BASE_IMAGE': base}},
        'aws': {'region': 'eu-west-1', 'credentialsSecretRef': {'name': 'aws'}},
        'image': {'repository': repository}, 'build': build})
    recorder = Recorder(sink=Sink(), status=PandaDeployStatus(), generation=1)
    recorder.begin()
    keys = AwsKeys(access_key_id='AKIDBENCH', secret_access_key='bench-secret')
    return Run(spec=spec, credentials=Credentials(aws=keys), recorder=recorder, logger=logging.getLogger('bench'))


class Memory(threading.Thread):
    """Samples this process's resident set size (VmRSS) until stopped; keeps the peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = self.now()
        self.stopping = threading.Event()

    @staticmethod
    def now() -> int:
        for line in pathlib.Path('/proc/self/status').read_text().splitlines():
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
        return 0

    def run(self) -> None:
        while not self.stopping.wait(0.05):
            self.peak = max(self.peak, self.now())


def rollouts(bares: list[pathlib.Path], *, engine: str, base: str, registry: str, workers: int,
             poll: float) -> dict[str, float]:
    """Stages 1-2 of one resource per repository, all at once; wall, CPU and memory figures."""
    runs = [make_run(bare, repository=f'bench-{engine.lower()}-{n}-{int(time.time())}', base=base, engine=engine)
            for n, bare in enumerate(bares)]
    settings = AdapterSettings(registry=registry)
    memory = Memory()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        engine_ = Engine(stages=default_stages(poll_seconds=poll), pool=pool,
                         adapters=functools.partial(make_adapters, settings=settings))

        async def all_at_once() -> list[RunResult]:
            return list(await asyncio.gather(*(engine_.drive(run, until=StageName.push) for run in runs)))
        before, cpu, start = memory.peak, time.process_time(), time.perf_counter()
        memory.start()
        results = asyncio.run(all_at_once())
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        memory.stopping.set()
    failed = [r.status.message for r, result in zip(runs, results, strict=True) if result != RunResult.succeeded]
    if failed:
        raise SystemExit(f'{len(failed)} {engine} rollouts failed, e.g.: {failed[0]}')
    return {'wall': wall, 'cpu': cpu, 'rss': float(memory.peak - before)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--resources', type=int, default=20)
    parser.add_argument('--workers', type=int, default=5)
    parser.add_argument('--poll', type=float, default=1.0, help='seconds between polls of a CodeBuild build')
    parser.add_argument('--json', type=pathlib.Path, help='also write the summary rows here (for bench/table.py)')
    parser.add_argument('--one', nargs=3, metavar=('ENGINE', 'REPOSITORIES', 'REGISTRY'), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    client = docker.from_env()
    base = localdocker.ensure_base_image(client)
    if args.one:  # a child: one path, in a process of its own, so that its memory is its own
        engine, found, registry = args.one
        bares = sorted(pathlib.Path(found).glob('*.git'), key=lambda p: int(p.stem.split('-')[1]))
        print(json.dumps(rollouts(bares, engine=engine, base=base, registry=registry, workers=args.workers,
                                  poll=args.poll)))
        return
    scratch = pathlib.Path(tempfile.mkdtemp(prefix='panda-bench-codebuild-'))
    registry_process = None
    registry = os.environ.get('PANDA_TEST_REGISTRY', '')
    if not registry:
        registry_process, registry, _ = localdocker.start_registry(scratch / 'registry', auth=False)
    sandbox, url = start_sandbox()
    try:
        bares = repositories(scratch, args.resources)
        figures = {engine: one_path(engine, bares[0].parent, registry=registry, url=url, args=args)
                   for engine in ('docker', 'codeBuild')}
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
        if registry_process is not None:
            localdocker.stop(registry_process)
        shutil.rmtree(scratch, ignore_errors=True)
    report(figures, args=args, client=client)


def one_path(engine: str, repositories: pathlib.Path, *, registry: str, url: str,
             args: argparse.Namespace) -> dict[str, float]:
    """One path's figures, measured in a child process (this script with --one)."""
    env = {**os.environ, 'AWS_ENDPOINT_URL': url, 'AWS_EC2_METADATA_DISABLED': 'true'}
    result = subprocess.run([sys.executable, __file__, '--one', engine, str(repositories), registry,
                             '--workers', str(args.workers), '--poll', str(args.poll)],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f'the {engine} path failed:\n{result.stdout}\n{result.stderr}')
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    print(f'{engine}: {figures}', flush=True)
    return figures


def report(figures: dict[str, dict[str, float]], *, args: argparse.Namespace, client: docker.DockerClient) -> None:
    n = args.resources
    where = (f'{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, '
             f'Docker {client.version()["Version"]} (storage {client.info()["Driver"]})')
    rows = []
    for engine, label in (('docker', 'Docker engine'), ('codeBuild', 'CodeBuild (sandbox runner, same engine)')):
        found = figures[engine]
        item = f'{n} rollouts at once, stages 1-2, {label}'
        rows += [[item, 'wall seconds', f'{found["wall"]:.1f}', ''],
                 [item, 'operator CPU seconds per build', f'{found["cpu"] / n:.3f}', ''],
                 [item, 'operator memory growth per build (MiB)', f'{found["rss"] / n / 2 ** 20:.1f}', '']]
    print(f'machine: {where}; {args.workers} workers; CodeBuild polled every {args.poll:g} s')
    print('| item | measure | value | target |')
    print('|---|---|---|---|')
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({'bench': 'codebuild', 'machine': where, 'rows': rows}, indent=1))


if __name__ == '__main__':
    main()
