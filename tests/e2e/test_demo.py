"""`panda-deploy demo` as a newcomer runs it: one command, three rollouts, nothing left behind.

The demo is run as a subprocess in a session of its own, so that its process
group is exactly what it started (the operator, the registry, git): after it
exits, no process of that group may remain, and no container carrying the
demo's labels for that process id. It needs a Docker engine: where `CI` is
set, a missing engine fails the test; elsewhere it skips, saying how to start
one.
"""
from __future__ import annotations

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
from controller.sandbox.stack.manifests import SANDBOX_KEYS
from controller.sandbox.stack.tasks import LABEL
from tests.conftest import unavailable

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 240
pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope='module')
def engine(docker_client: docker.DockerClient) -> docker.DockerClient:
    return docker_client


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


def test_demo_rolls_out_three_times_switching_colours_and_leaves_nothing_behind(
        engine: docker.DockerClient) -> None:
    done, pgid = run_demo()
    output = done.stdout
    if done.returncode == 2 and 'not installed' in done.stderr:
        unavailable(done.stderr.strip())  # docker-registry or busybox-static missing

    assert done.returncode == 0, f'{output}\n{done.stderr}'
    blocks = rollouts(output)
    assert len(blocks) == ROLLOUTS, output
    for block in blocks:
        stages = [int(m.group(1)) for line in block if (m := re.match(r'\[Stage (\d)\] ', line))]
        assert stages == sorted(stages) and set(stages) == {1, 2, 3, 4, 5, 6}, block
        assert any('HealthCheck in progress - Check 5/5' in line for line in block), block
        ended = [i for i, line in enumerate(block) if line.startswith('Run dep_') and ' Succeeded: ' in line]
        last_stage = max(i for i, line in enumerate(block) if line.startswith('[Stage 6] '))
        assert len(ended) == 1 and ended[0] > last_stage, block
    assert re.findall(r'Traffic switched to (blue|green)', output) == ['green', 'blue'], output
    assert re.findall(r'\[Stage 6\] (blue|green) is active', output) == ['blue', 'green', 'blue'], output
    assert 'Succeeded, Ready=True' in output.split('== Rollout ')[-1], output
    assert SANDBOX_KEYS['secretAccessKey'] not in output + done.stderr

    started = re.findall(rf'container (panda-demo-{pgid}-\S+) serves', output)
    assert len(started) == ROLLOUTS, output  # the filter below is not vacuous
    left = engine.containers.list(all=True, filters={'label': [f'{LABEL}=1', f'{LABEL}.pid={pgid}']})
    assert [c.name for c in left] == []
    assert processes_in_group(pgid) == []
