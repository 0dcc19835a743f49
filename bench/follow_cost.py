"""What following branches costs at rest (issue 14 item 1): N Ready resources, each asking for its branch head.

The Kubernetes API emulator (in this process, recording every request) holds
N PandaDeploys that follow `main` of one repository on a local smart-HTTP git
server (tests/integration/githttp.py: `git http-backend`, recording every
request) every `--interval` seconds, all Ready at the branch head. The
operator runs as `python -m controller operator`, as in a pod. After one
interval (every resource has had its first, randomly placed look) the
benchmark measures, over `--seconds`: the operator's CPU (utime + stime of
its process; the git children it starts included once reaped), the requests
the git server saw (an anonymous `git ls-remote` over smart HTTP is a GET of
info/refs and, in protocol v2, one POST), and the Kubernetes API writes.

    .venv/bin/python bench/follow_cost.py [--resources 1000] [--repositories N] [--interval 60] [--seconds 60]

By default each resource follows a repository of its own (one repository
served under N names): one `ls-remote` per resource per interval.
`--repositories 1` is a monorepo whose services are told apart by
`spec.source.paths`: their looks share answers (controller.follow).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.operator_cost import GROUP, PLURAL, VERSION, classify, proc_cpu  # noqa: E402
from tests.e2e.test_operator import SECRETS  # noqa: E402


def children_cpu(pid: int) -> float:
    """cutime + cstime: the CPU of the process's reaped children (the git processes it ran), in seconds."""
    fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf('SC_CLK_TCK')


def ready_status(revision: str) -> dict[str, Any]:
    now = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    return {'observedGeneration': 1, 'phase': 'Succeeded', 'revision': revision, 'revisionShort': revision[:7],
            'conditions': [{'type': 'Ready', 'status': 'True', 'reason': 'Succeeded', 'message': 'deployed',
                            'observedGeneration': 1, 'lastTransitionTime': now}],
            'history': [{'deploymentId': 'dep_bench00000', 'generation': 1, 'revision': revision,
                         'result': 'Succeeded', 'startedAt': now, 'completedAt': now, 'durationSeconds': 1.0}]}


def wait_quiet(emulator: Any, *, at_least: float, quiet: float = 10.0, timeout: float = 900.0) -> float:
    """Seconds until at least `at_least` have passed and no API write came for `quiet` seconds."""
    started = time.monotonic()
    count, since = len(emulator.writes), time.monotonic()
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        if len(emulator.writes) != count:
            count, since = len(emulator.writes), time.monotonic()
        elif time.monotonic() - since >= quiet and time.monotonic() - started >= at_least:
            return time.monotonic() - started
    raise SystemExit(f'the API writes did not stop within {timeout:g}s')


def measure(scratch: pathlib.Path, *, resources: int, repositories: int, interval: float,
            seconds: float) -> dict[str, Any]:
    import yaml

    from controller.sandbox.kube import ClusterServer
    from tests.e2e.conftest import Cluster, Operator
    from tests.fakes import World
    from tests.integration.githttp import serving
    from tests.integration.test_git import run_git
    from tests.integration.test_git_follow import Monorepo

    mono = Monorepo(scratch / 'git')
    head = run_git('rev-parse', 'HEAD', cwd=mono.work)
    with serving(mono.root) as git, ClusterServer() as server:
        for doc in yaml.safe_load_all((ROOT / 'crds' / 'pandadeploys.yaml').read_text()):
            server.emulator.add_crd(doc)
        cluster = Cluster(server, server.write_kubeconfig(scratch / 'kubeconfig'))
        cluster.apply_secrets(**{'aws-creds': SECRETS['aws-creds']})
        for index in range(repositories):  # one repository under many names: each its own URL
            (mono.root / f'repo-{index:04d}.git').symlink_to(mono.path)
        for index in range(resources):
            name = f'app-{index:04d}'
            url = git.url(f'repo-{index % repositories:04d}.git')
            cluster.create(name, {
                'source': {'url': url, 'branch': 'main', 'interval': f'{interval:g}s'},
                'aws': {'region': 'ap-northeast-2', 'credentialsSecretRef': {'name': 'aws-creds'}}})
            cluster.custom.patch_namespaced_custom_object_status(GROUP, VERSION, 'default', PLURAL, name,
                                                                 {'status': ready_status(head)})
        operator = Operator(kubeconfig=cluster.kubeconfig, world=World(scratch / 'world'),
                            log=scratch / 'operator.log',
                            env={'PANDA_DEPLOY_ADAPTERS': 'bench.operator_cost:make_adapters',
                                 'PANDA_DEPLOY_MIN_INTERVAL_SECONDS': '1'})
        operator.start()
        try:
            # Kopf's first contact with each resource (its finalizer, its annotation) is over, and every
            # resource had its first look (at a random time within one interval): then the steady state.
            settled_after = wait_quiet(server.emulator, at_least=interval + 2)
            assert operator.process is not None
            pid = operator.process.pid
            cpu, child, requests, writes = proc_cpu(pid), children_cpu(pid), len(git.requests), len(
                server.emulator.writes)
            started = time.monotonic()
            time.sleep(seconds)
            elapsed = time.monotonic() - started
            cpu, child = proc_cpu(pid) - cpu, children_cpu(pid) - child
            seen = git.requests[requests:]
            window_writes = server.emulator.writes[writes:]
        finally:
            operator.stop()
    per_minute = 60.0 / elapsed
    return {'cpu': cpu * per_minute, 'git_cpu': child * per_minute,
            'requests': len(seen) * per_minute,
            'ls_remotes': sum(1 for _, path, _ in seen if path.split('?')[0].endswith('/info/refs')) * per_minute,
            'writes': classify(window_writes), 'settled_after': settled_after}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--resources', type=int, default=1000)
    parser.add_argument('--repositories', type=int, default=0,
                        help='distinct repositories they follow (default: one each; 1: a monorepo)')
    parser.add_argument('--interval', type=float, default=60.0)
    parser.add_argument('--seconds', type=float, default=60.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='follow-bench-') as tmp:
        repositories = args.repositories or args.resources
        r = measure(pathlib.Path(tmp), resources=args.resources, repositories=repositories,
                    interval=args.interval, seconds=args.seconds)
    what = (f'{args.resources} Ready resources following a branch of {repositories} repositories '
            f'every {args.interval:g}s')
    print(f'machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}')
    print('| item | measure | value | target |')
    print('|---|---|---|---|')
    print(f'| {what} | operator CPU (its own, per minute) | {r["cpu"]:.1f} s | |')
    print(f'| {what} | CPU of the git processes it ran (per minute) | {r["git_cpu"]:.1f} s | |')
    print(f'| {what} | requests to the git server (per minute) | {r["requests"]:.0f} '
          f'({r["ls_remotes"]:.0f} ls-remote) | at most {args.resources * 60 / args.interval:.0f} ls-remote |')
    writes = ', '.join(f'{k} {v}' for k, v in r['writes'].items() if k != 'total')
    print(f'| {what} | Kubernetes API writes (per minute) | {r["writes"]["total"]} ({writes}) | 0 |')
    print(f'(steady state after {r["settled_after"]:.0f}s: Kopf\'s first contact with each resource, '
          'its finalizer and annotation, is a one-off)')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
