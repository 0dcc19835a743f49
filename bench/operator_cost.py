"""The operator's own cost: API writes per deployment, no-op cost, idle scale (issue 7, items 2, 3 and 5).

The Kubernetes API emulator (controller.sandbox.kube.ClusterServer, CRD from
crds/pandadeploys.yaml) runs in this process and records every request; the
operator runs as `python -m controller operator`, as in a pod, with the fake
adapters of tests/fakes.py standing in for git, Docker and AWS (no delays).
So every figure here is the operator's OWN cost (Kopf, the reconciler, the
Kubernetes API traffic), not the cost of the work it drives.

    .venv/bin/python bench/operator_cost.py [--resources 1000] [--idle-seconds 60]

The adapters are tests.fakes' with one change: the fake health-check HTTP
client answers 200 without re-reading the whole journal on every check
(tests.fakes.FakeHttp does that, which is quadratic and would be charged to
the operator's CPU at 1,000 resources). Select it with
PANDA_DEPLOY_ADAPTERS=bench.operator_cost:make_adapters (done here).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import signal
import sys
import tempfile
import time
from collections import Counter
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GROUP, VERSION, PLURAL = 'deploy.panda.dev', 'v1alpha1', 'pandadeploys'
from tests.e2e.test_operator import SECRETS, SPEC  # noqa: E402 (the resource the e2e tests drive)

# Fake calls that change something outside (Docker, registry, ECS, CodeDeploy).
MUTATING = ('docker.build', 'docker.push', 'ecs.registered', 'codedeploy.create_deployment',
            'codedeploy.continue_deployment', 'codedeploy.stop_deployment')
CLK_TCK = os.sysconf('SC_CLK_TCK')


# -- adapters used by the operator process --------------------------------------------------------

def make_adapters(spec: Any, credentials: Any, *, registry: str | None = None, limits: Any = None,
                  root: pathlib.Path | None = None) -> Any:
    """tests.fakes.make_adapters with a constant-time fake HTTP client (always 200)."""
    import dataclasses

    from controller.adapters import Probe
    from tests import fakes

    adapters = fakes.make_adapters(spec, credentials, registry=registry, root=root)

    class QuickHttp:
        def __init__(self, world: fakes.World) -> None:
            self.world = world

        def get(self, url: str, *, timeout: float) -> Probe:
            self.world.log('http.get')
            return Probe(status=200, seconds=0.001)

    world = adapters.git.world
    try:
        return dataclasses.replace(adapters, http=QuickHttp(world))
    except TypeError:
        adapters.http = QuickHttp(world)
        return adapters


# -- measuring helpers ----------------------------------------------------------------------------

def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def proc_mem(pid: int) -> tuple[float, float]:
    """(VmHWM, VmRSS) in MiB."""
    values = {}
    for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
        key, _, rest = line.partition(':')
        if key in ('VmHWM', 'VmRSS'):
            values[key] = int(rest.split()[0]) / 1024
    return values['VmHWM'], values['VmRSS']


def journal_len(world: Any) -> int:
    return len(world.journal())


def journal_since(world: Any, start: int) -> Counter[str]:
    return Counter(entry['call'] for entry in world.journal()[start:])


def mutating(calls: Counter[str]) -> dict[str, int]:
    return {name: calls[name] for name in MUTATING if calls[name]}


def classify(writes: list[Any]) -> dict[str, int]:
    counts = {'status patches': 0, 'other patches': 0, 'event creates': 0, 'other': 0}
    for w in writes:
        if w.method == 'PATCH' and w.plural == PLURAL and w.subresource == 'status':
            counts['status patches'] += 1
        elif w.method == 'PATCH' and w.plural == PLURAL:
            counts['other patches'] += 1
        elif w.method == 'POST' and w.plural == 'events':
            counts['event creates'] += 1
        else:
            counts['other'] += 1
    counts['total'] = len(writes)
    return counts


def writes_for(writes: list[Any], name: str) -> list[Any]:
    return [w for w in writes if (w.plural == PLURAL and w.name == name)
            or (w.plural == 'events' and (w.name or '').startswith(f'{name}.'))]


def without_own(writes: list[Any], own: tuple[str, str, str | None, str, str | None]) -> list[Any]:
    """The writes minus the first one matching the benchmark's own request."""
    out, dropped = [], False
    for w in writes:
        if not dropped and tuple(w) == own:
            dropped = True
            continue
        out.append(w)
    return out


def fmt(counts: dict[str, int]) -> str:
    return ', '.join(f'{k} {v}' for k, v in counts.items())


def wait_ready(cluster: Any, name: str, timeout: float = 60) -> float:
    start = time.perf_counter()
    while not cluster.ready(name):
        if time.perf_counter() - start > timeout:
            raise SystemExit(f'{name} not Ready after {timeout}s: {cluster.status(name)}')
        time.sleep(0.02)
    return time.perf_counter() - start


def wait_for_generation(cluster: Any, name: str, generation: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = cluster.status(name)
        if status.get('observedGeneration') == generation and status.get('phase') in ('Succeeded', 'Failed'):
            return
        time.sleep(0.05)
    raise SystemExit(f'{name} did not finish generation {generation} within {timeout}s')


class Env:
    """Emulator (in this process) + fake world + operator process, in a scratch directory."""

    def __init__(self, scratch: pathlib.Path, workers: int | None = None) -> None:
        import yaml

        from controller.sandbox.kube import ClusterServer
        from tests.e2e.conftest import Cluster, Operator
        from tests.fakes import World

        scratch.mkdir(parents=True, exist_ok=True)
        self.server = ClusterServer().start()
        for doc in yaml.safe_load_all((ROOT / 'crds' / 'pandadeploys.yaml').read_text()):
            self.server.emulator.add_crd(doc)
        kubeconfig = self.server.write_kubeconfig(scratch / 'kubeconfig')
        self.cluster = Cluster(self.server, kubeconfig)
        self.emulator = self.server.emulator
        self.world = World(scratch / 'world')
        env = {'PANDA_DEPLOY_ADAPTERS': 'bench.operator_cost:make_adapters'}
        if workers is not None:
            env['PANDA_DEPLOY_WORKERS'] = str(workers)
        self.operator = Operator(kubeconfig=kubeconfig, world=self.world, log=scratch / 'operator.log', env=env)
        self.cluster.apply_secrets(**SECRETS)

    @property
    def pid(self) -> int:
        assert self.operator.process is not None
        return self.operator.process.pid

    def close(self) -> None:
        try:
            self.operator.stop()
        finally:
            self.server.stop()


# -- items 3 and 2 --------------------------------------------------------------------------------

def per_deployment_and_noop(scratch: pathlib.Path, window: float) -> dict[str, Any]:
    env = Env(scratch / 'single')
    r: dict[str, Any] = {}
    try:
        env.operator.start()
        c, em, world = env.cluster, env.emulator, env.world

        # Item 3: one resource created -> Ready.
        c.create('app', SPEC)
        r['first_ready_s'] = wait_ready(c, 'app')
        time.sleep(1)  # let the last writes land
        own = [w for w in writes_for(em.writes, 'app') if w.method == 'POST' and w.plural == PLURAL]
        r['first_writes'] = classify([w for w in writes_for(em.writes, 'app') if w not in own])
        calls = journal_since(world, 0)
        r['first_builds'], r['first_mutating'] = calls['docker.build'], mutating(calls)
        print('[3] what each status patch carried (status keys; stage = status.stage):', flush=True)
        for k, q in enumerate(q for q in list(em._requests)
                              if q.method is not None and q.method.value.upper() == 'PATCH'
                              and q.url.path.endswith('/pandadeploys/app/status')):
            body = (q.data or {}).get('status') or {}
            print(f'      {k + 1:2d}. {body.get("stage", "")!s:14} {sorted(body)}', flush=True)
        print(f'[3] one deployment -> Ready in {r["first_ready_s"]:.2f}s; API writes: {fmt(r["first_writes"])}; '
              f'fake calls: {dict(calls)}', flush=True)

        # Item 2a: re-apply the unchanged resource; then a metadata-only change.
        for label, patch in (('same spec', {'spec': SPEC}),
                             ('label change', {'metadata': {'labels': {'team': 'payments'}}})):
            w0, j0 = len(em.writes), journal_len(world)
            c.patch('app', patch)
            time.sleep(window)
            ops = without_own(em.writes[w0:], ('PATCH', PLURAL, 'default', 'app', None))
            calls = journal_since(world, j0)
            r[f'reapply {label}'] = (classify(ops), calls['docker.build'], mutating(calls), dict(calls))
            print(f'[2a] re-apply ({label}): operator API writes in {window:.0f}s: {fmt(classify(ops))}; '
                  f'fake calls {dict(calls) or "none"}', flush=True)

        # Item 2a': a spec change that keeps the commit (pin spec.source.revision to the deployed one):
        # a new generation whose stages 1-5 find their work done.
        revision = c.status('app')['revision']
        w0, j0 = len(em.writes), journal_len(world)
        c.patch('app', {'spec': {'source': {'branch': None, 'revision': revision}}})
        wait_for_generation(c, 'app', 2)
        time.sleep(1)
        ops = without_own(em.writes[w0:], ('PATCH', PLURAL, 'default', 'app', None))
        calls = journal_since(world, j0)
        r['pinned_writes'] = classify(ops)
        r['pinned_builds'], r['pinned_mutating'] = calls['docker.build'], mutating(calls)
        r['pinned_stages'] = {s['name']: s['result'] for s in c.status('app').get('stages', [])}
        print(f"[2a'] spec change at the deployed commit (revision pinned) -> Ready; builds {r['pinned_builds']}; "
              f"mutating fake calls {r['pinned_mutating'] or 'none'}; API writes: {fmt(r['pinned_writes'])}; "
              f"stages {r['pinned_stages']}; fake calls {dict(calls)}", flush=True)

        # Item 2b: a second resource at the already-built commit.
        w0, j0 = len(em.writes), journal_len(world)
        c.create('app2', SPEC)
        r['second_ready_s'] = wait_ready(c, 'app2')
        time.sleep(1)
        ops = [w for w in em.writes[w0:] if not (w.method == 'POST' and w.plural == PLURAL)]
        calls = journal_since(world, j0)
        r['second_writes'] = classify(ops)
        r['second_builds'], r['second_mutating'], r['second_calls'] = calls['docker.build'], mutating(calls), dict(calls)
        stages = {s['name']: s['result'] for s in c.status('app2').get('stages', [])}
        r['second_stages'] = stages
        print(f'[2b] second resource, same commit -> Ready in {r["second_ready_s"]:.2f}s; builds '
              f'{r["second_builds"]}; mutating fake calls {r["second_mutating"] or "none"}; API writes: '
              f'{fmt(r["second_writes"])}; stages {stages}; fake calls {dict(calls)}', flush=True)

        # Item 2c: operator restart over Ready resources.
        env.operator.kill(signal.SIGTERM)
        w0, j0 = len(em.writes), journal_len(world)
        env.operator.start()
        time.sleep(window)
        ops = em.writes[w0:]
        calls = journal_since(world, j0)
        r['restart_writes'] = classify(ops)
        r['restart_mutating'] = mutating(calls)
        print(f'[2c] restart over 2 Ready resources: API writes in {window:.0f}s after start: '
              f'{fmt(classify(ops))} {[tuple(w) for w in ops]}; fake calls {dict(calls) or "none"}', flush=True)
    finally:
        env.close()
    return r


# -- item 5 ---------------------------------------------------------------------------------------

def idle_scale(scratch: pathlib.Path, n: int, idle: float, ready_timeout: float) -> dict[str, Any]:
    env = Env(scratch / 'scale', workers=5)
    r: dict[str, Any] = {'n': n}
    try:
        env.operator.start()
        em = env.emulator
        cpu0 = proc_cpu(env.pid)
        start = time.perf_counter()
        for i in range(n):
            em.create({'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'PandaDeploy',
                       'metadata': {'name': f'app-{i:04d}', 'namespace': 'default'}, 'spec': SPEC})
        last_print, ready = 0.0, 0
        while True:
            objs = em.list_objects(PLURAL, 'default')
            ready = sum(1 for o in objs for cond in (o.get('status') or {}).get('conditions', [])
                        if cond['type'] == 'Ready' and cond['status'] == 'True')
            failed = sum(1 for o in objs if (o.get('status') or {}).get('phase') == 'Failed')
            elapsed = time.perf_counter() - start
            if ready + failed >= n or elapsed > ready_timeout:
                break
            if elapsed - last_print >= 30:
                hwm, rss = proc_mem(env.pid)
                print(f'[5] {elapsed:.0f}s: {ready}/{n} Ready, RSS {rss:.0f} MiB', flush=True)
                last_print = elapsed
            time.sleep(1)
        r['ramp_s'], r['ready'], r['failed'] = elapsed, ready, failed
        r['ramp_cpu'] = proc_cpu(env.pid) - cpu0
        r['ramp_writes'] = classify([w for w in em.writes if w.plural in (PLURAL, 'events')])  # not the secrets
        print(f'[5] {ready}/{n} Ready ({failed} failed) in {elapsed:.1f}s; operator CPU {r["ramp_cpu"]:.1f}s; '
              f'API writes {fmt(r["ramp_writes"])}', flush=True)

        time.sleep(5)  # settle: last events and patches
        w0, q0, j0, cpu0 = len(em.writes), len(em._requests), journal_len(env.world), proc_cpu(env.pid)
        t0 = time.perf_counter()
        time.sleep(idle)
        minutes = (time.perf_counter() - t0) / 60
        r['idle_cpu'] = proc_cpu(env.pid) - cpu0
        r['idle_writes'] = len(em.writes) - w0
        requests = list(em._requests[q0:])
        r['idle_requests'] = len(requests)
        r['idle_requests_by'] = dict(Counter(f'{q.method.value.upper() if q.method else "?"} {q.url.path}'
                                             for q in requests).most_common(5))
        r['idle_fake_calls'] = dict(journal_since(env.world, j0))
        r['per_minute'] = minutes
        r['hwm'], r['rss'] = proc_mem(env.pid)
        r['idle_s'] = minutes * 60
        print(f'[5] idle {r["idle_s"]:.0f}s over {ready} Ready: CPU {r["idle_cpu"]:.2f}s; API writes '
              f'{r["idle_writes"]}; API requests {len(requests)} {r["idle_requests_by"]}; fake calls '
              f'{r["idle_fake_calls"] or "none"}; VmHWM {r["hwm"]:.0f} MiB, VmRSS {r["rss"]:.0f} MiB', flush=True)
    finally:
        env.close()
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--resources', type=int, default=1000, help='resources for the idle-scale run')
    parser.add_argument('--idle-seconds', type=float, default=60)
    parser.add_argument('--window', type=float, default=5, help='seconds watched after a no-op change')
    parser.add_argument('--ready-timeout', type=float, default=1800, help='give up the scale ramp after this')
    args = parser.parse_args()
    os.environ['PYTHONPATH'] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))

    print('Fake adapters stand in for git, Docker and AWS (no delays): these figures are the operator\'s '
          'OWN cost, not the work it drives.', flush=True)
    with tempfile.TemporaryDirectory(prefix='panda-opcost-') as tmp:
        scratch = pathlib.Path(tmp)
        a = per_deployment_and_noop(scratch, args.window)
        b = idle_scale(scratch, args.resources, args.idle_seconds, args.ready_timeout)

    fw, s2 = a['first_writes'], a['second_writes']
    same, label = a['reapply same spec'], a['reapply label change']

    def yn(ok: bool) -> str:
        return 'met' if ok else 'MISSED'

    per_min = lambda v: v / b['per_minute']  # noqa: E731
    print()
    print(f'machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python '
          f'{platform.python_version()}; operator with fake adapters (its own cost only), emulator in-process')
    print('| item | measure | value | target |')
    print('|---|---|---|---|')
    print(f'| 3 | API writes, one deployment → Ready (status patches / other patches / events) | '
          f'{fw["total"]} ({fw["status patches"]} / {fw["other patches"]} / {fw["event creates"]}) | '
          f'≤ 20: {yn(fw["total"] <= 20)} |')
    print(f'| 3 | time to Ready, first deployment (fakes, no delays) | {a["first_ready_s"]:.2f} s | |')
    for name, (w, builds, mut, _) in (('same spec', same), ('label change', label)):
        print(f'| 2a | re-apply, {name}: operator API writes / builds / mutating AWS calls ({args.window:.0f} s) | '
              f'{w["total"]} / {builds} / {sum(mut.values())} | ≤ 2 / 0 / 0: '
              f'{yn(w["total"] <= 2 and builds == 0 and not mut)} |')
    pw, pm = a['pinned_writes'], a['pinned_mutating']
    print(f"| 2a' | spec change at the deployed commit (revision pinned): builds / mutating AWS calls / API writes | "
          f"{a['pinned_builds']} / {sum(pm.values())} / {pw['total']} ({pw['status patches']} status, "
          f"{pw['other patches']} other, {pw['event creates']} events) | 0 / 0 / ≤ 2: "
          f"{yn(a['pinned_builds'] == 0 and not pm and pw['total'] <= 2)} |")
    mut2 = a['second_mutating']
    print(f'| 2b | second resource, built commit: time to Ready | {a["second_ready_s"]:.2f} s | |')
    print(f'| 2b | second resource: builds / mutating AWS calls / API writes | {a["second_builds"]} / '
          f'{sum(mut2.values())}{" " + str(mut2) if mut2 else ""} / {s2["total"]} ({s2["status patches"]} status, '
          f'{s2["other patches"]} other, {s2["event creates"]} events) | 0 / 0 / ≤ 2: '
          f'{yn(a["second_builds"] == 0 and not mut2 and s2["total"] <= 2)} |')
    rw = a['restart_writes']
    print(f'| 2c | operator restart over 2 Ready resources: API writes / mutating AWS calls ({args.window:.0f} s) | '
          f'{rw["total"]} / {sum(a["restart_mutating"].values())} | 0 / 0: '
          f'{yn(rw["total"] == 0 and not a["restart_mutating"])} |')
    partial = '' if b['ready'] == b['n'] else f' (only {b["ready"]} of {b["n"]} Ready before --ready-timeout)'
    print(f'| 5 | {b["n"]} resources created → all Ready, 5 workers{partial} | {b["ramp_s"]:.1f} s '
          f'({b["ready"] / b["ramp_s"]:.1f}/s), operator CPU {b["ramp_cpu"]:.1f} s | |')
    print(f'| 5 | peak RSS (VmHWM) / RSS after idle, {b["ready"]} Ready | {b["hwm"]:.0f} / {b["rss"]:.0f} MiB | '
          f'< 300 MiB: {yn(b["hwm"] < 300)} |')
    print(f'| 5 | CPU over {b["idle_s"]:.0f} s idle | {b["idle_cpu"]:.2f} s | |')
    print(f'| 5 | API writes / requests per minute while idle | {per_min(b["idle_writes"]):.1f} / '
          f'{per_min(b["idle_requests"]):.1f} | 0 writes: {yn(b["idle_writes"] == 0)} |')


if __name__ == '__main__':
    main()
