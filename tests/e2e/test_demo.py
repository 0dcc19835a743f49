"""`panda-deploy demo` as a newcomer runs it: one command, four ECS native rollouts, nothing left behind.

The demo runs once for the module, as a subprocess in a session of its own,
so that its process group is exactly what it started (the operator, the
registry, git); the tests read what it printed -- the stages from the
resource's status and Events, production's answers through the
load-balancer stand-in, the canary's counted split, ECS's word on the
rollback -- and what it left: no process of that group, no container
carrying the demo's labels for that process id. The demo exits 0 only when
every rollout ended as planned, so the exit code is checked first, and the
outcomes are checked again here from the output. It needs a Docker engine:
where `CI` is set, a missing engine fails the test; elsewhere it skips,
saying how to start one.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import sys

import docker
import docker.errors
import pytest

from controller.sandbox.demo import ROLLOUTS
from controller.sandbox.demo_plan import CANARY_PERCENT, PLAN, REQUESTS
from controller.sandbox.stack.manifests import SANDBOX_KEYS
from controller.sandbox.stack.tasks import LABEL
from tests.conftest import unavailable

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 300
pytestmark = [pytest.mark.docker, pytest.mark.slow]


@dataclasses.dataclass(frozen=True)
class DemoRun:
    """The finished demo, its process group id, and what was left of it right after it exited."""
    done: subprocess.CompletedProcess[str]
    pgid: int
    containers_left: list[str]
    processes_left: list[str]

    @property
    def output(self) -> str:
        return self.done.stdout


def run_demo() -> tuple[subprocess.CompletedProcess[str], int]:
    """(the finished demo, its process group id)."""
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'PYTHONUNBUFFERED': '1'}
    process = subprocess.Popen([sys.executable, '-m', 'controller', 'demo'], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # the demo cleans up on SIGTERM, as on Ctrl-C
        out, err = process.communicate(timeout=60)
        pytest.fail(f'the demo took more than {TIMEOUT}s:\n{out}\n{err}', pytrace=False)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), process.pid


def processes_in_group(pgid: int) -> list[str]:
    """Command lines of the processes whose process group is `pgid`."""
    found = []
    for stat in pathlib.Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
            if int(fields[2]) == pgid:
                found.append((stat.parent / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace'))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.fixture(scope='module')
def demo(docker_client: docker.DockerClient) -> DemoRun:
    done, pgid = run_demo()
    if done.returncode == 2 and 'not installed' in done.stderr:
        unavailable(done.stderr.strip())  # docker-registry or busybox-static missing
    left = docker_client.containers.list(all=True, filters={'label': [f'{LABEL}=1', f'{LABEL}.pid={pgid}']})
    return DemoRun(done, pgid, [c.name for c in left], processes_in_group(pgid))


def rollouts(output: str) -> list[list[str]]:
    """The lines of each rollout, from its `== Rollout k/N` header to the next header or the summary."""
    blocks: list[list[str]] = []
    for line in output.splitlines():
        if line.startswith('== Rollout '):
            blocks.append([])
        elif line.startswith('== '):
            break
        elif blocks:
            blocks[-1].append(line)
    return blocks


def production_answers(block: list[str]) -> list[tuple[str, str, str]]:
    """(colour, task definition, heading) of each `[demo] GET` of production in a rollout."""
    return re.findall(r'^\[demo\] GET http://\S+/ -> HTTP 200 from (\w+) \((\S+)\): "(.*)"$', '\n'.join(block),
                      flags=re.MULTILINE)


def stages(block: list[str]) -> list[int]:
    return [int(m.group(1)) for line in block if (m := re.match(r'\[Stage (\d)\] ', line))]


def test_the_demo_exits_0_after_every_rollout_ended_as_planned(demo: DemoRun) -> None:
    assert demo.done.returncode == 0, f'{demo.output}\n{demo.done.stderr}'
    assert len(rollouts(demo.output)) == ROLLOUTS == len(PLAN) == 4, demo.output
    assert f'all {ROLLOUTS} rollouts ended as expected' in demo.output
    assert re.search(r'^\[demo\] Shortened for the demo: a simulated AWS minute lasts', demo.output, re.MULTILINE)


def test_ecs_native_rollouts_succeed_and_switch_production_between_colours(demo: DemoRun) -> None:
    succeeded = rollouts(demo.output)[:3]
    for block in succeeded:
        assert stages(block) == sorted(stages(block)) and set(stages(block)) == {1, 2, 3, 4, 5, 6}, block
        assert any('waits at the PAUSE hook (POST_TEST_TRAFFIC_SHIFT)' in line for line in block), block
        assert any('HealthCheck in progress - Check 5/5 (listener :8080' in line for line in block), block
        ended = [i for i, line in enumerate(block) if line.startswith('Run dep_') and ' Succeeded: ' in line]
        last_stage = max(i for i, line in enumerate(block) if line.startswith('[Stage 6] '))
        assert len(ended) == 1 and ended[0] > last_stage, block
    active = [re.search(r'\[Stage 6\] (blue|green) is active; (\w+) service deployment \S+ SUCCESSFUL',
                        '\n'.join(block)) for block in succeeded]
    assert [(m.group(1), m.group(2)) if m else None for m in active] == [
        ('blue', 'BlueGreen'), ('green', 'BlueGreen'), ('blue', 'Canary')], demo.output
    assert [production_answers(block) for block in succeeded] == [
        [('blue', 'sample-app:1', 'Hello from the panda-deploy sample app')],
        [('green', 'sample-app:2', 'Hello from the panda-deploy sample app (v2)')],
        [('blue', 'sample-app:3', 'Hello from the panda-deploy sample app (v3)')]], demo.output


def test_while_the_canary_step_holds_production_answers_split_by_its_percent(demo: DemoRun) -> None:
    canary = rollouts(demo.output)[2]
    counted = [line for line in canary if f'{REQUESTS} requests to ' in line and 'canary step holds' in line]
    assert len(counted) == 1, canary
    rule = counted[0].split('weights: ', 1)[1].split(')', 1)[0]
    weights = {colour: int(weight) for colour, weight in re.findall(r'(blue|green) (\d+)', rule)}
    counts = {colour: (int(n), task) for n, colour, task in re.findall(r'(\d+) from (\w+) \((\S+)\)', counted[0])}
    # v3 (the new revision, on blue) gets the canary's share; v2 (green, production until then) the rest
    assert weights == {'blue': CANARY_PERCENT, 'green': 100 - CANARY_PERCENT}, counted
    assert counts == {'blue': (REQUESTS * CANARY_PERCENT // 100, 'sample-app:3'),
                      'green': (REQUESTS * (100 - CANARY_PERCENT) // 100, 'sample-app:2')}, counted
    assert any(line.startswith('[Stage 5] Check while production moves (listener :8080 -> blue, HTTP 200)')
               for line in canary), canary


def test_the_broken_commit_fails_its_checks_is_rolled_back_and_production_stays_on_the_old_version(
        demo: DemoRun) -> None:
    broken = rollouts(demo.output)[3]
    text = '\n'.join(broken)
    assert set(stages(broken)) == {1, 2, 3, 4, 5}, broken  # never completed
    assert text.count('HTTP 404)') >= 5 and 'Health checks 0/5 passed' in text, broken
    assert re.search(r'^Warning HealthCheckFailed: Health check of http://\S+:8080/health failed 5/5 checks',
                     text, re.MULTILINE), broken
    assert re.search(r'^\[demo\] ECS service deployment \S+: ROLLBACK_SUCCESSFUL \(Service deployment rolled back '
                     r'by ContinueServiceDeployment at the POST_TEST_TRAFFIC_SHIFT lifecycle hook', text,
                     re.MULTILINE), broken
    assert production_answers(broken) == [('blue', 'sample-app:3', 'Hello from the panda-deploy sample app (v3)')]
    assert not any(' Succeeded: ' in line for line in broken), broken
    end = demo.output.split('\n== default/sample-app: ', 1)[1]
    assert end.startswith('Failed, Ready=False (HealthCheckFailed: '), end
    history = re.findall(r'^ {16}(\d)\s+\w{7}\s+(\w+)\s+(\w+)', end, re.MULTILINE)
    assert history == [('4', 'Failed', 'blue'), ('3', 'Succeeded', 'blue'), ('2', 'Succeeded', 'green'),
                       ('1', 'Succeeded', 'blue')], end


def test_the_demo_leaves_no_process_container_or_secret_behind(demo: DemoRun) -> None:
    started = set(re.findall(rf'container (panda-demo-{demo.pgid}-\S+) serves', demo.output))
    assert len(started) == ROLLOUTS, demo.output  # one per task definition: the filter below is not vacuous
    assert demo.containers_left == []
    assert demo.processes_left == []
    assert SANDBOX_KEYS['secretAccessKey'] not in demo.output + demo.done.stderr
