"""`kubectl pd`'s own logic without a cluster: the run's lines from a status, the `get` table, the requests."""
from __future__ import annotations

import datetime
import io

import pytest

from controller.plugin import commands
from controller.plugin.lines import printable, run_lines
from controller.plugin.main import run
from controller.plugin.watch import Follower

RUN = 'dep_abcdefghij'


def verifying(message: str, **status: object) -> dict:
    return {'metadata': {'name': 'app'}, 'status': {
        'deploymentId': RUN, 'observedGeneration': 3, 'phase': 'Progressing', 'message': message,
        'stages': [{'number': 1, 'name': 'Build', 'result': 'Succeeded', 'message': 'Built app:abc'},
                   {'number': 5, 'name': 'Verify', 'result': 'Running'}], **status}}


def test_a_check_count_in_status_means_each_check_up_to_it():
    lines = run_lines(verifying('HealthCheck in progress - Check 3/5'))
    assert lines == [f'Run {RUN} started for generation 3', '[Stage 1] Build started', '[Stage 1] Built app:abc',
                     '[Stage 5] Verify started', '[Stage 5] HealthCheck in progress - Check 1/5',
                     '[Stage 5] HealthCheck in progress - Check 2/5', '[Stage 5] HealthCheck in progress - Check 3/5']


def test_live_lines_come_out_once_each_in_order_and_the_end_sets_the_exit_code():
    out = io.StringIO()
    follower = Follower(out)
    assert follower.show(verifying('HealthCheck in progress - Check 2/5')) is None
    assert follower.show(verifying('Canary step 1/2: 10% of production on the new revision', healthCheck={
        'url': 'http://t/health', 'passed': 5, 'failed': 0, 'total': 5})) is None
    ended = verifying('Run failed', phase='Failed', history=[{'deploymentId': RUN, 'result': 'Failed'}])
    assert follower.show(ended) == 1
    lines = out.getvalue().splitlines()
    assert [line for line in lines if 'Check' in line] == [
        f'[Stage 5] HealthCheck in progress - Check {k}/5' for k in range(1, 6)]
    assert lines[-2:] == ['[Stage 5] Canary step 1/2: 10% of production on the new revision',
                          f'Run {RUN} Failed: Run failed']
    assert len(lines) == len(set(lines))


def test_an_escape_sequence_in_a_status_does_not_reach_the_terminal():
    out = io.StringIO()
    Follower(out).show(verifying('x', stages=[{'number': 1, 'name': 'Build', 'result': 'Failed', 'reason': 'R',
                                               'message': '\x1b]0;owned\x07\x1b[2J' + 'y' * 100_000}]))
    assert '\x1b' not in out.getvalue() and '\x07' not in out.getvalue()
    assert max(len(line) for line in out.getvalue().splitlines()) <= 2048
    assert printable('a\x9bb') == 'a b'
    row = commands.table([{'metadata': {'name': 'app', 'creationTimestamp': '2026-01-01T00:00:00Z'},
                           'status': {'phase': '\x1b[31mSucceeded', 'stage': 'z' * 10_000}}], namespaces=False)[1]
    assert '\x1b' not in row and len(row) < 200


def test_the_get_table_and_ages_read_as_kubectl_writes_them():
    at = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.timezone.utc)
    assert [commands.age(f'2026-11-30T{t}Z', at=at) for t in ('11:59:18', '11:55:00', '11:30:00', '07:00:00')] == [
        '42s', '5m0s', '30m', '5h']
    assert commands.age('2026-11-20T12:00:00Z', at=at) == '10d'
    rows = commands.table([
        {'metadata': {'name': 'web', 'namespace': 'b'}, 'status': {'phase': 'Succeeded', 'stage': '6/6 Complete',
                                                                   'revisionShort': 'abc1234', 'activeColor': 'blue'}},
        {'metadata': {'name': 'api', 'namespace': 'a'}}], namespaces=True)
    assert rows[0].split() == ['NAMESPACE', 'NAME', 'PHASE', 'STAGE', 'REVISION', 'COLOUR', 'AGE']
    assert rows[1].split()[:2] == ['a', 'api'] and rows[2].split()[:7] == [
        'b', 'web', 'Succeeded', '6/6', 'Complete', 'abc1234', 'blue']


def test_undo_picks_the_newest_succeeded_run_with_another_image():
    def entry(run: str, result: str, digest: str) -> dict:
        return {'deploymentId': run, 'result': result, 'imageDigest': digest, 'taskDefinitionArn': 'arn:td'}
    status = {'history': [entry('dep_0000000003', 'Succeeded', 'sha256:c'), entry('dep_0000000002', 'Failed',
                          'sha256:b'), entry('dep_000000001b', 'Succeeded', 'sha256:c'),
                          entry('dep_000000001a', 'Succeeded', 'sha256:a')]}
    annotation, value = commands.undo_value(status, 'app', to=None)
    assert annotation == 'deploy.panda.dev/undo' and value.startswith('dep_000000001a@')
    with pytest.raises(commands.Refused, match='no earlier succeeded run'):
        commands.undo_value({'history': status['history'][:1]}, 'app', to=None)


@pytest.mark.parametrize(('argv', 'named'), [
    ([], 'COMMAND'), (['promote'], 'NAME'), (['get', '-A', '-n', 'x'], '-A/--all-namespaces'),
    (['undo', 'app', '--to'], '--to'), (['watch', 'a', 'b'], 'unrecognized arguments: b')])
def test_bad_usage_exits_2_naming_the_argument(argv, named, capsys):
    with pytest.raises(SystemExit) as exited:
        run(argv, io.StringIO(), io.StringIO())
    assert exited.value.code == 2 and named in capsys.readouterr().err
