"""`kubectl pd` against the operator process and the API emulator: get, watch (a run replayed that started
before it was called, then followed live), promote, abort, retry, undo and reconcile, and bad usage.

kubectl runs the plugin as it would once the package is installed: a `kubectl-pd` executable on PATH, made
here from the console script that pyproject.toml declares (what pip writes for it). One emulator, operator
and fake world serve the module; each test has its own resources.
"""
from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from controller.sandbox.kube import ClusterServer
from tests.e2e.conftest import ROOT, Cluster, Operator, wait_for
from tests.e2e.test_operator import SECRETS, SPEC
from tests.fakes import World

pytestmark = pytest.mark.skipif(shutil.which('kubectl') is None, reason='kubectl is not on PATH')

UNDO, RETRY, PROMOTE, ABORT = ('deploy.panda.dev/undo', 'deploy.panda.dev/retry', 'deploy.panda.dev/promote',
                               'deploy.panda.dev/abort')


def spec(repo: str, **more: Any) -> dict[str, Any]:
    return {**SPEC, 'source': {**SPEC['source'], 'repo': f'your-org/{repo}'}, **more}


@pytest.fixture(scope='module')
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Operator, World, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp('kubectl-pd')
    entry = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']['kubectl-pd']
    module, function = entry.split(':')
    bin_dir = tmp / 'bin'
    bin_dir.mkdir()
    script = bin_dir / 'kubectl-pd'
    script.write_text(f'#!{sys.executable}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n')
    script.chmod(0o755)
    with ClusterServer() as server:
        for doc in yaml.safe_load_all((ROOT / 'crds' / 'pandadeploys.yaml').read_text()):
            server.emulator.add_crd(doc)
        cluster = Cluster(server, server.write_kubeconfig(tmp / 'kubeconfig'))
        cluster.apply_secrets(**SECRETS)
        world = World(tmp / 'world')
        operator = Operator(kubeconfig=cluster.kubeconfig, world=world, log=tmp / 'operator.log', env={})
        operator.start()
        env = {**os.environ, 'KUBECONFIG': str(cluster.kubeconfig), 'PYTHONPATH': str(ROOT),
               'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}'}
        try:
            yield cluster, operator, world, env
        finally:
            operator.stop()
            print(operator.log()[-5000:])


@pytest.fixture
def cluster(stack) -> Cluster:
    return stack[0]


@pytest.fixture
def world(stack) -> World:
    world = stack[2]
    world.set_script()
    return world


def pd(stack, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(['kubectl', 'pd', *args], capture_output=True, text=True, timeout=timeout, env=stack[3])
    if check and result.returncode != 0:
        raise AssertionError(f'kubectl pd {" ".join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}')
    return result


def run_ended(cluster: Cluster, name: str, after: str | None = None) -> dict[str, Any]:
    """The status once a run other than `after` ended."""
    def ended() -> dict[str, Any] | None:
        status = cluster.status(name)
        history = status.get('history') or []
        if history and history[0]['deploymentId'] == status.get('deploymentId') != after:
            return status
        return None
    status: dict[str, Any] = wait_for(ended, timeout=30, what=f'a run of {name} to end')
    return status


def test_get_lists_resources_and_bad_usage_exits_2_naming_the_argument(stack, cluster: Cluster, world: World):
    cluster.create('listed', spec('listed'))
    status = run_ended(cluster, 'listed')

    table = pd(stack, 'get').stdout.splitlines()
    assert table[0].split() == ['NAME', 'PHASE', 'STAGE', 'REVISION', 'COLOUR', 'AGE']
    row = next(line.split() for line in table if line.startswith('listed '))
    assert row[:6] == ['listed', 'Succeeded', '6/6', 'Complete', status['revision'][:7], 'green']
    assert pd(stack, 'get', '-A').stdout.splitlines()[0].split()[:2] == ['NAMESPACE', 'NAME']
    assert pd(stack, 'get', 'listed', '-n', 'elsewhere', check=False).returncode == 1

    for args, named in ((['undo'], 'NAME'), (['watch'], 'NAME'), (['get', '-A', '-n', 'x'], '-A/--all-namespaces'),
                        (['undo', 'listed', '--to', 'true'], '--to'), (['undo', 'listed', '--to', 'dep_0ther0run0'],
                                                                       '--to'), (['rollback', 'listed'], 'COMMAND')):
        result = pd(stack, *args, check=False)
        assert result.returncode == 2 and named in result.stderr, (args, result.stderr)
    refused = pd(stack, 'retry', 'listed', check=False)
    assert refused.returncode == 1 and 'the newest run did not fail' in refused.stderr
    assert UNDO not in (cluster.get('listed')['metadata'].get('annotations') or {}), 'bad usage annotates nothing'


def test_watch_replays_a_run_that_started_before_it_then_follows_it_live(stack, cluster: Cluster, world: World):
    cluster.create('watched', spec('watched', healthCheck={'checks': 5, 'intervalSeconds': 1}))
    wait_for(lambda: 'Check 2/5' in (cluster.status('watched').get('message') or ''), timeout=30,
             what='the checks under way')

    watched = pd(stack, 'watch', 'watched')

    lines = watched.stdout.splitlines()
    status = cluster.status('watched')
    run = status['deploymentId']
    assert lines[0] == f'Run {run} started for generation 1'
    assert lines[1] == '[Stage 1] Build started' and lines[2].startswith('[Stage 1] Built ')  # replayed
    checks = [line for line in lines if 'HealthCheck in progress' in line]
    assert checks == [f'[Stage 5] HealthCheck in progress - Check {k}/5' for k in range(1, 6)]  # some live
    assert lines.index(checks[-1]) < lines.index(next(line for line in lines if 'Health checks 5/5 passed' in line))
    assert lines[-1] == f'Run {run} Succeeded: {status["message"]}'
    assert len(lines) == len(set(lines))
    # The write budget, counted by the API emulator (tests/unit/test_progress_budget.py for more checks): 8 status
    # patches + checks 2-4 shown while they ran, 7 Events, Kopf's finalizer and annotation: 20 (25 at most).
    writes = [w for w in cluster.writes_for('watched') if w != ('POST', 'pandadeploys', None)]  # but the create
    assert len(writes) == 20 and writes.count(('PATCH', 'pandadeploys', 'status')) == 11, writes
    # Called after the run ended: the whole run again, and its result.
    assert pd(stack, 'watch', 'watched').stdout.splitlines() == lines


def test_promote_then_abort_through_kubectl_pd(stack, cluster: Cluster, world: World):
    manual = spec('manual', blueGreen={'promotion': 'manual'})
    cluster.create('manual', manual)
    wait_for(lambda: cluster.status('manual').get('promotion'), what='run 1 waiting for promotion')
    first = cluster.status('manual')['deploymentId']
    assert pd(stack, 'abort', 'listed-nowhere', check=False).returncode == 1

    said = pd(stack, 'promote', 'manual').stdout
    assert said.strip() == (f'pandadeploy.deploy.panda.dev/manual: promotion of run {first} requested '
                            f'({PROMOTE}={first})')
    assert run_ended(cluster, 'manual')['phase'] == 'Succeeded'

    world.set_script(commit='two')
    cluster.patch('manual', {'spec': {'healthCheck': {'checks': 2}}})
    wait_for(lambda: cluster.status('manual').get('promotion') and cluster.status('manual')['deploymentId'] != first,
             what='run 2 waiting for promotion')
    second = cluster.status('manual')['deploymentId']
    pd(stack, 'abort', 'manual')
    watched = pd(stack, 'watch', 'manual', check=False)

    assert watched.returncode == 1, watched.stdout
    assert watched.stdout.splitlines()[-1].startswith(f'Run {second} Failed: Run {second} aborted at stage 5/6 Verify')
    assert cluster.status('manual')['history'][0]['reason'] == 'Aborted'
    assert world.state()['active'] == 'green', 'production stays where run 1 put it'
    refused = pd(stack, 'promote', 'manual', check=False)
    assert refused.returncode == 1 and 'no run is in flight' in refused.stderr


def test_retry_runs_the_failed_run_again_at_its_revision(stack, cluster: Cluster, world: World):
    world.set_script(health=[503])
    cluster.create('retried', spec('retried'))
    failed = run_ended(cluster, 'retried')
    assert failed['phase'] == 'Failed'
    world.set_script(health=[200], commit='moved-on')  # the branch moved: a retry stays at the failed revision

    said = pd(stack, 'retry', 'retried').stdout
    assert f'retry of run {failed["deploymentId"]} requested ({RETRY}={failed["deploymentId"]}@' in said
    status = run_ended(cluster, 'retried', after=failed['deploymentId'])

    assert status['phase'] == 'Succeeded' and status['revision'] == failed['revision']
    assert status['history'][0]['trigger'] == {'kind': 'Retry', 'of': failed['deploymentId']}
    assert status['history'][1]['trigger'] == {'kind': 'Build'}
    assert status['lastHandledRetry'].startswith(failed['deploymentId'] + '@')
    started = next(e for e in cluster.events('retried') if e['message'].startswith(f'Run {status["deploymentId"]}'))
    assert started['message'].endswith(f': retry of {failed["deploymentId"]}')

    # A value by hand that names no failed run: refused once, with its reason, whatever else happens.
    cluster.patch('retried', {'metadata': {'annotations': {RETRY: failed['deploymentId']}}})
    wait_for(lambda: [e for e in cluster.events('retried') if e['reason'] == 'RetryNotApplicable'], timeout=10,
             what='the refusal')
    cluster.patch('retried', {'metadata': {'labels': {'team': 'payments'}}})
    time.sleep(1.5)
    refusals = [e for e in cluster.events('retried') if e['reason'] == 'RetryNotApplicable']
    assert len(refusals) == 1 and refusals[0]['type'] == 'Warning'
    assert f'a later run ({status["deploymentId"]}) came after it' in refusals[0]['message']
    assert cluster.status('retried')['lastHandledRetry'] == failed['deploymentId']
    assert cluster.status('retried')['deploymentId'] == status['deploymentId'], 'no run started'


def test_undo_goes_back_to_the_earlier_image_and_task_definition_without_a_build(
        stack, cluster: Cluster, world: World):
    cluster.create('undone', spec('undone'))
    first = run_ended(cluster, 'undone')
    world.set_script(commit='two')
    cluster.patch('undone', {'spec': {'healthCheck': {'checks': 2}}})
    second = run_ended(cluster, 'undone', after=first['deploymentId'])
    assert second['revision'] != first['revision']
    builds = len(world.calls('docker.build'))

    said = pd(stack, 'undo', 'undone').stdout
    assert f'undo to run {first["deploymentId"]} requested ({UNDO}={first["deploymentId"]}@' in said
    status = run_ended(cluster, 'undone', after=second['deploymentId'])

    assert status['phase'] == 'Succeeded', status['message']
    assert status['history'][0]['trigger'] == {'kind': 'Undo', 'of': first['deploymentId']}
    assert (status['revision'], status['image']['digest'], status['taskDefinitionArn']) == (
        first['revision'], first['image']['digest'], first['taskDefinitionArn'])
    assert len(world.calls('docker.build')) == builds, 'no build'
    assert [s['result'] for s in status['stages']] == ['Skipped', 'Skipped', 'Skipped', 'Succeeded', 'Succeeded',
                                                      'Succeeded'], 'a deployment and the health gate'
    deployment = world.state()['deployments'][status['codeDeployDeploymentId']]
    assert deployment['taskdef'] == first['taskDefinitionArn']
    watched = pd(stack, 'watch', 'undone').stdout.splitlines()
    assert watched[0] == f'Run {status["deploymentId"]} started for generation 2: undo to {first["deploymentId"]}'
    assert watched[1] == f'[Stage 1] Undo to {first["deploymentId"]}: revision {first["revision"][:7]}, no build'

    # --to names the run; the same run asked for again is a new request (the value carries the time).
    pd(stack, 'undo', 'undone', '--to', second['deploymentId'])
    again = run_ended(cluster, 'undone', after=status['deploymentId'])
    assert again['taskDefinitionArn'] == second['taskDefinitionArn'] and again['phase'] == 'Succeeded'


def test_reconcile_sets_requested_at_to_the_time_and_a_run_starts_at_the_branch_head(stack, cluster: Cluster,
                                                                                      world: World):
    cluster.create('requested', spec('requested'))
    first = run_ended(cluster, 'requested')
    before = time.time()
    pd(stack, 'reconcile', 'requested')
    value = cluster.get('requested')['metadata']['annotations']['deploy.panda.dev/requestedAt']
    assert before - 1 <= datetime.datetime.fromisoformat(value).timestamp() <= time.time()

    # Nothing changed (same generation, same head), yet the operator runs again and says which value it handled.
    status = run_ended(cluster, 'requested', after=first['deploymentId'])
    assert status['phase'] == 'Succeeded' and status['observedGeneration'] == first['observedGeneration']
    assert status['lastHandledRequestedAt'] == value
    assert [h['deploymentId'] for h in status['history'][:2]] == [status['deploymentId'], first['deploymentId']]
    assert 'RedeployRequested' in [e['reason'] for e in cluster.events('requested')]


def test_an_undo_supersedes_the_run_in_flight(stack, cluster: Cluster, world: World):
    cluster.create('rushed', spec('rushed'))
    first = run_ended(cluster, 'rushed')
    world.set_script(commit='slow', delay={'docker.build': 30})
    cluster.patch('rushed', {'spec': {'healthCheck': {'checks': 2}}})
    wait_for(lambda: cluster.status('rushed').get('stageName') == 'Build'
             and cluster.status('rushed')['deploymentId'] != first['deploymentId'], what='run 2 building')
    building = cluster.status('rushed')['deploymentId']

    refused = pd(stack, 'undo', 'rushed', check=False)  # run 2 is not in history yet: nothing else to go back to
    assert refused.returncode == 1 and 'no earlier succeeded run' in refused.stderr
    pd(stack, 'undo', 'rushed', '--to', first['deploymentId'])
    status = run_ended(cluster, 'rushed', after=building)

    assert [(h['deploymentId'], h['result'], h['trigger']['kind']) for h in status['history'][:3]] == [
        (status['deploymentId'], 'Succeeded', 'Undo'), (building, 'Superseded', 'Build'),
        (first['deploymentId'], 'Succeeded', 'Build')]
    wait_for(lambda: world.calls('docker.build:cancelled'), timeout=10, what='the superseded build told to stop')
    assert status['taskDefinitionArn'] == first['taskDefinitionArn']
