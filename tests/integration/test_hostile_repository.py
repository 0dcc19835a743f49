"""A repository is input from a stranger: each hostile one ends the run Failed with its own reason, the
operator's memory and disk stay bounded, and nothing is left on disk.

Each case is a git repository made here (file://), built by `panda-deploy run --until Push` as a child
process with the real adapters (git, the Docker engine, a registry, moto for STS and ECR) under an
address-space cap, so that a run that would eat memory fails inside its cap instead of taking the
machine. The child's own peak RSS is its VmHWM, sampled while it runs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import docker
import pytest
import yaml

from controller.models import MESSAGE_LIMIT

ROOT = pathlib.Path(__file__).resolve().parents[2]
MEMORY_CAP = 2 * 1024 ** 3  # address space of the `panda-deploy run` child
PEAK_RSS_LIMIT = 150 * 1024 ** 2  # a normal `run --until Push` peaks near 70 MiB (VmHWM)
STATUS_LIMIT = 64 * 1024  # bytes of the whole status as JSON
MiB = 1024 ** 2
BASE = 'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n'


@dataclasses.dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    status: dict[str, Any]
    peak_rss: int  # bytes
    seconds: float

    @property
    def build(self) -> dict[str, Any]:
        return self.status['stages'][0]

    def describe(self) -> str:
        return f'exit {self.code}, peak RSS {self.peak_rss / MiB:.0f} MiB\n{self.stdout[-3000:]}\n{self.stderr[-3000:]}'


class Hostile:
    """Makes a repository, runs `panda-deploy run --until Push` on it, reports what happened."""

    def __init__(self, tmp_path: pathlib.Path, base_image: str, registry: str, endpoint: str) -> None:
        self.tmp_path, self.base_image, self.registry, self.endpoint = tmp_path, base_image, registry, endpoint
        self.temp_root = tmp_path / 'tmp'
        self.temp_root.mkdir()

    def repository(self, files: Mapping[str, str | bytes], symlinks: Mapping[str, str] = {}) -> str:
        """A bare repository with one commit of `files` and `symlinks` (path -> target); its file:// URL."""
        work = self.tmp_path / 'work'
        work.mkdir()
        for name, content in files.items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        for name, target in symlinks.items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(target)
        git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.test', '-C', str(work)]
        subprocess.run(['git', 'init', '-q', '-b', 'main', str(work)], check=True)
        subprocess.run([*git, 'add', '-A'], check=True)
        subprocess.run([*git, 'commit', '-qm', 'hostile'], check=True)
        bare = self.tmp_path / 'repos' / 'app.git'
        subprocess.run(['git', 'clone', '-q', '--bare', str(work), str(bare)], check=True)
        return f'file://{bare}'

    def run(self, url: str, *, source: Mapping[str, Any] = {}, image: Mapping[str, Any] | None = None,
            spec: Mapping[str, Any] = {}, env: Mapping[str, str] = {}, timeout: float = 240) -> Outcome:
        manifest = {
            'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
            'metadata': {'name': 'hostile', 'namespace': 'default'},
            'spec': {
                'source': {'url': url, 'branch': 'main', 'buildArgs': {'BASE_IMAGE': self.base_image}, **source},
                'aws': {'region': 'ap-northeast-2', 'credentialsSecretRef': {'name': 'aws-creds'}},
                'image': dict(image) if image is not None else {'repository': f'hostile-{uuid.uuid4().hex[:12]}'},
                **spec,
            },
        }
        secret = {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'aws-creds'},
                  'stringData': {'accessKeyId': 'AKIDHOSTILETEST', 'secretAccessKey': 'hostile-secret-1a2b3c'}}
        (self.tmp_path / 'app.yaml').write_text(yaml.safe_dump(manifest))
        (self.tmp_path / 'secrets.yaml').write_text(yaml.safe_dump(secret))
        status_path = self.tmp_path / 'status.yaml'
        status_path.unlink(missing_ok=True)
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(('AWS_', 'PANDA_DEPLOY_'))}
        child_env.update(AWS_ENDPOINT_URL=self.endpoint, AWS_EC2_METADATA_DISABLED='true',
                         PANDA_DEPLOY_REGISTRY=self.registry, TMPDIR=str(self.temp_root),
                         HOME=str(self.tmp_path / 'home'), PYTHONPATH=str(ROOT), **env)
        return _run_capped([sys.executable, '-m', 'controller', 'run', '-f', 'app.yaml', '-s', 'secrets.yaml',
                            '--until', 'Push', '--status-out', str(status_path)],
                           cwd=self.tmp_path, env=child_env, timeout=timeout, status_path=status_path)

    def leftovers(self) -> list[pathlib.Path]:
        """Whatever the run left in its temporary directory (the operator's temp dirs are named by tempdirs)."""
        return list(self.temp_root.rglob('*'))


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _run_capped(argv: list[str], *, cwd: pathlib.Path, env: dict[str, str], timeout: float,
                status_path: pathlib.Path) -> Outcome:
    """Run `argv` under MEMORY_CAP; its exit code, output, status file and its own peak RSS.

    The peak is the child's VmHWM, sampled until it exits: its `ru_maxrss` would start at this (pytest)
    process's RSS, which a forked child inherits as its high-water mark at exec."""
    out, err = cwd / 'stdout.txt', cwd / 'stderr.txt'
    started = time.monotonic()
    peak = 0
    with out.open('wb') as stdout, err.open('wb') as stderr:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr,
                                   preexec_fn=_cap_memory)
        while process.poll() is None:
            peak = max(peak, _high_water_mark(process.pid))
            if time.monotonic() - started > timeout:
                process.kill()
            time.sleep(0.05)
    status = yaml.safe_load(status_path.read_text()) if status_path.exists() else {}
    print(f'panda-deploy run: exit {process.returncode}, peak RSS {peak / MiB:.0f} MiB, '
          f'{time.monotonic() - started:.1f} s')  # shown with -s: the figures in the README
    return Outcome(code=process.returncode, stdout=out.read_text(errors='replace'),
                   stderr=err.read_text(errors='replace'), status=status or {}, peak_rss=peak,
                   seconds=time.monotonic() - started)


def _high_water_mark(pid: int) -> int:
    """VmHWM of `pid` in bytes (0 when it is gone)."""
    try:
        for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.fixture
def hostile(tmp_path: pathlib.Path, base_image: str, registry: str, aws_endpoint: str) -> Iterator[Hostile]:
    yield Hostile(tmp_path, base_image, registry, aws_endpoint)


def assert_failed_contained(outcome: Outcome, hostile: Hostile, *, reason: str, says: tuple[str, ...]) -> None:
    """Failed at Build with `reason`, the message saying each of `says`, memory and disk bounded."""
    assert outcome.code == 1, outcome.describe()
    assert outcome.status['phase'] == 'Failed', outcome.describe()
    assert (outcome.build['name'], outcome.build['result'], outcome.build['reason']) == \
        ('Build', 'Failed', reason), outcome.describe()
    for text in says:
        assert text in outcome.build['message'], (text, outcome.build['message'])
    assert f'Warning {reason}: ' in outcome.stdout
    assert outcome.peak_rss < PEAK_RSS_LIMIT, outcome.describe()
    assert_status_bounded(outcome.status)
    assert hostile.leftovers() == []


def assert_status_bounded(status: Mapping[str, Any]) -> None:
    """Every message within MESSAGE_LIMIT characters and the whole status far from the API server's limit."""
    messages = [status.get('message') or '']
    messages += [s.get('message', '') for s in status.get('stages', [])]
    messages += [c.get('message', '') for c in status.get('conditions', [])]
    messages += [h.get('message', '') for h in status.get('history', [])]
    assert max(len(m) for m in messages) <= MESSAGE_LIMIT
    assert len(json.dumps(status)) < STATUS_LIMIT


# -- read through a symlink, or outside the clone ------------------------------------------

@pytest.mark.docker
def test_a_dockerignore_that_is_a_symlink_to_dev_zero_is_refused(hostile: Hostile) -> None:
    url = hostile.repository({'Dockerfile': BASE}, symlinks={'.dockerignore': '/dev/zero'})
    outcome = hostile.run(url)
    assert_failed_contained(outcome, hostile, reason='SymlinkNotAllowed',
                            says=('.dockerignore', '/dev/zero'))


@pytest.mark.docker
def test_a_dockerfile_that_is_a_symlink_is_refused(hostile: Hostile) -> None:
    url = hostile.repository({'real.Dockerfile': BASE}, symlinks={'Dockerfile': 'real.Dockerfile'})
    outcome = hostile.run(url, source={'dockerfile': 'Dockerfile'})
    assert_failed_contained(outcome, hostile, reason='SymlinkNotAllowed', says=("'Dockerfile'", 'real.Dockerfile'))


@pytest.mark.docker
def test_a_context_that_is_a_symlink_out_of_the_clone_is_refused(hostile: Hostile) -> None:
    outside = hostile.tmp_path / 'outside'
    outside.mkdir()
    (outside / 'Dockerfile').write_text(BASE + 'COPY token /token\n')
    (outside / 'token').write_text('not-for-the-image')
    url = hostile.repository({'README': 'x'}, symlinks={'ctx': str(outside)})
    outcome = hostile.run(url, source={'context': 'ctx', 'dockerfile': 'ctx/Dockerfile'})
    assert_failed_contained(outcome, hostile, reason='SymlinkNotAllowed', says=("'ctx'", str(outside)))


@pytest.mark.docker
@pytest.mark.parametrize(('link', 'target'), [
    ('up', '..'), ('data/token', '/var/run/secrets/kubernetes.io/serviceaccount')])
def test_a_symlink_in_the_context_resolving_out_of_the_clone_is_refused(hostile: Hostile, link: str,
                                                                        target: str) -> None:
    url = hostile.repository({'Dockerfile': BASE + 'COPY . /ctx/\n'}, symlinks={link: target})
    outcome = hostile.run(url)
    assert_failed_contained(outcome, hostile, reason='SymlinkNotAllowed', says=(f"'{link}'", target))


@pytest.mark.docker
def test_symlinks_inside_the_context_are_sent_as_symlinks(hostile: Hostile) -> None:
    """Legitimate: Docker sends them as links, it does not follow them. And .dockerignore still applies."""
    dockerfile = BASE + ('COPY . /ctx/\n'
                         'RUN test "$(readlink /ctx/alias.txt)" = real.txt && test "$(cat /ctx/alias.txt)" = real'
                         ' && test -L /ctx/shared && test ! -e /ctx/ignored.bin\n')
    url = hostile.repository({'Dockerfile': dockerfile, 'real.txt': 'real', 'lib/x.txt': 'x',
                              '.dockerignore': 'ignored.bin\n', 'ignored.bin': b'\0' * 1024},
                             symlinks={'alias.txt': 'real.txt', 'shared': 'lib'})
    outcome = hostile.run(url)
    assert outcome.code == 0, outcome.describe()
    assert [(s['name'], s['result']) for s in outcome.status['stages']] == [('Build', 'Succeeded'),
                                                                            ('Push', 'Succeeded')]
    assert outcome.peak_rss < PEAK_RSS_LIMIT, outcome.describe()
    assert hostile.leftovers() == []


# -- output ------------------------------------------------------------------------------

@pytest.mark.docker
def test_a_64_mb_line_then_a_failure_keeps_memory_and_message_bounded(hostile: Hostile) -> None:
    """64 MB, under the default output limit (64 MiB): the build runs to its failure."""
    dockerfile = BASE + 'RUN yes | tr -d "\\n" | head -c 64000000; echo; echo the-last-words; exit 3\n'
    url = hostile.repository({'Dockerfile': dockerfile})
    outcome = hostile.run(url)
    assert_failed_contained(outcome, hostile, reason='BuildFailed', says=('(exit code 3)', 'the-last-words'))
    assert max(len(line) for line in outcome.stdout.splitlines()) < 2 * MESSAGE_LIMIT


@pytest.mark.docker
def test_output_without_end_stops_the_build(hostile: Hostile, docker_client: docker.DockerClient) -> None:
    marker = uuid.uuid4().hex[:12]
    dockerfile = BASE + f'RUN echo {marker} >/dev/null; yes | tr -d "\\n"\n'
    url = hostile.repository({'Dockerfile': dockerfile})
    outcome = hostile.run(url, spec={'timeouts': {'stageSeconds': 90}},
                          env={'PANDA_DEPLOY_MAX_BUILD_OUTPUT_BYTES': str(8 * MiB)})
    assert_failed_contained(outcome, hostile, reason='BuildOutputTooLarge', says=('8.0 MiB',))
    assert outcome.seconds < 120
    running = [c for c in docker_client.containers.list() if marker in ' '.join(c.attrs['Args'] or [])]
    assert running == []


# -- size --------------------------------------------------------------------------------

@pytest.mark.docker
def test_a_repository_over_the_checkout_limit_is_refused(hostile: Hostile) -> None:
    """3 MiB of incompressible files: the pack alone passes the 2 MiB limit, so the fetch is stopped there
    (tests/integration/test_git_disk.py); compressible files are measured from the tree (below)."""
    url = hostile.repository({'Dockerfile': BASE, 'big.bin': os.urandom(3 * MiB)})
    outcome = hostile.run(url, env={'PANDA_DEPLOY_MAX_CHECKOUT_BYTES': str(2 * MiB)})
    assert_failed_contained(outcome, hostile, reason='RepositoryTooLarge',
                            says=('2.0 MiB', 'PANDA_DEPLOY_MAX_CHECKOUT_BYTES', 'the fetch was stopped'))


@pytest.mark.docker
def test_a_compressible_repository_over_the_limit_is_refused_before_its_files_are_written(hostile: Hostile) -> None:
    """A few KiB of pack that would check out 64 MiB of zeros: the sizes are read from the commit's tree."""
    url = hostile.repository({'Dockerfile': BASE, **{f'zeros/{i}.bin': b'\0' * (16 * MiB) for i in range(4)}})
    outcome = hostile.run(url, env={'PANDA_DEPLOY_MAX_CHECKOUT_BYTES': str(8 * MiB)})
    assert_failed_contained(outcome, hostile, reason='RepositoryTooLarge', says=('64.0 MiB', '8.0 MiB'))


@pytest.mark.docker
def test_a_context_over_the_limit_is_refused_and_dockerignore_counts(hostile: Hostile) -> None:
    url = hostile.repository({'Dockerfile': BASE + 'COPY . /ctx/\n', 'kept.bin': os.urandom(3 * MiB),
                              'ignored.bin': os.urandom(4 * MiB), '.dockerignore': '.git\nignored.bin\n'})
    outcome = hostile.run(url, env={'PANDA_DEPLOY_MAX_CONTEXT_BYTES': str(2 * MiB)})
    assert_failed_contained(outcome, hostile, reason='ContextTooLarge', says=('3.0 MiB', '2.0 MiB'))


# -- messages ----------------------------------------------------------------------------

@pytest.mark.docker
def test_a_400_kb_failure_message_is_capped_everywhere(hostile: Hostile) -> None:
    """The engine's error repeats the whole failed command: 400 kB here (eight 50 kB arguments, each on a
    continuation line under the parser's 64 KiB line limit). Status, conditions, history and the Event
    printed stay capped, and the exit code is still read from the end of that message."""
    arguments = ', '.join(f'"{"x" * 50_000}"' for _ in range(8)).replace(', ', ', \\\n    ')
    url = hostile.repository({'Dockerfile': BASE + f'RUN ["sh", "-c", "exit 5", {arguments}]\n'})
    outcome = hostile.run(url)
    assert_failed_contained(outcome, hostile, reason='BuildFailed', says=('(exit code 5)',))
    warning = next(line for line in outcome.stdout.splitlines() if line.startswith('Warning BuildFailed: '))
    assert len(warning) <= MESSAGE_LIMIT + len('Warning BuildFailed: ')


# -- wrong reasons -----------------------------------------------------------------------

@pytest.mark.docker
def test_a_dockerfile_outside_the_context_has_its_own_reason(hostile: Hostile) -> None:
    url = hostile.repository({'Dockerfile': BASE, 'app/index.html': 'hi'})
    outcome = hostile.run(url, source={'dockerfile': 'Dockerfile', 'context': 'app'})
    assert_failed_contained(outcome, hostile, reason='DockerfileOutsideContext',
                            says=("'Dockerfile'", "'app'", 'spec.source.context'))


@pytest.mark.docker
def test_a_derived_repository_name_that_ecr_refuses_is_an_invalid_spec(hostile: Hostile) -> None:
    url = hostile.repository({'Dockerfile': BASE})
    bad = pathlib.Path(url.removeprefix('file://')).parent / 'x..app.git'
    pathlib.Path(url.removeprefix('file://')).rename(bad)
    outcome = hostile.run(f'file://{bad}', image={})
    assert outcome.code == 2, outcome.describe()
    assert 'spec.image.repository' in outcome.stderr and "'repos-x..app'" in outcome.stderr, outcome.describe()
    assert 'Revision' not in outcome.stdout  # refused before git, Docker or AWS were asked anything
