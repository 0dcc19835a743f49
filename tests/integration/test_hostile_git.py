"""The git source as a stranger attacks it: a server that never answers or trickles, a token aimed elsewhere, no git.

Each test plays the attacker against the real git adapter, most of them
through `panda-deploy run` (the real engine, its stage timeout and its
worker pool), and checks what a platform team running one operator for many
tenants needs:

- a git server that accepts the connection and then says nothing, or one
  byte a second, while refs are listed or while the pack is fetched: the run
  ends `StageTimeout` within the stage timeout (measured from the stage's
  start) plus a few seconds, every process git started is gone (sampled from
  /proc while the run goes, checked after), and no temporary checkout is
  left; git's own low-speed limit ends a trickle without the engine, and a
  cancelled call ends at once;
- a token (`tokenSecretRef`) for a URL whose host the operator does not allow
  (PANDA_DEPLOY_GIT_HOSTS, default `github.com` over https): refused as
  `SourceNotAllowed` before any connection (the server counts them: zero);
  a URL without a token is not restricted;
- no `git` on the operator's PATH: `GitNotInstalled`, saying so.
"""
from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import pathlib
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import yaml

from controller.adapters.git import GitRepository
from controller.errors import StageFailed, Transient
from tests.integration import githttp
from tests.integration.test_git import Origin

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = 'ghp_hostile0git0token0a1b2c3d4e5f6a7b8c9'
STAGE_SECONDS = 6
SLACK_SECONDS = 5  # from the stage's timeout to the run's exit: the kill, the clean-up, the interpreter's exit
LOCAL_HOSTS = 'http://127.0.0.1:*'


# ---------------------------------------------------------------------------------------------
# Processes: every one below a root, sampled while it runs.


def _process_table() -> dict[int, tuple[int, str, list[str]]]:
    """pid -> (parent pid, start time, argv) of every live, non-zombie process."""
    table = {}
    for entry in pathlib.Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text()
            argv = (entry / 'cmdline').read_bytes().split(b'\0')
        except OSError:
            continue
        fields = stat.rsplit(')', 1)[1].split()
        if fields[0] in ('Z', 'X'):
            continue
        table[int(entry.name)] = (int(fields[1]), fields[19], [a.decode(errors='replace') for a in argv if a])
    return table


class GitProcesses(threading.Thread):
    """Every process below `root` that is git or was started by one, as seen every 20 ms."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.seen: dict[tuple[int, str], list[str]] = {}  # (pid, start time) -> argv
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            time.sleep(0.02)

    def sample(self) -> None:
        table = _process_table()
        for pid, (_, start, argv) in table.items():
            chain, up, in_git = [], pid, False
            while up in table and up != self.root and len(chain) < 64:
                chain.append(up)
                in_git = in_git or bool(table[up][2]) and os.path.basename(table[up][2][0]).startswith('git')
                up = table[up][0]
            if up == self.root and chain and in_git:
                self.seen[pid, start] = argv

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def alive(self) -> list[str]:
        """Those seen that still run (the same pid with the same start time)."""
        table = _process_table()
        return [' '.join(argv) for (pid, start), argv in self.seen.items()
                if pid in table and table[pid][1] == start]

    def kill_leftovers(self) -> None:
        table = _process_table()
        for pid, start in self.seen:
            if pid in table and table[pid][1] == start:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# The attackers.


class HostileGitServer(githttp.GitHttpServer):
    """Serves the repositories under `root` like githttp, but at `when` ('refs': from the first request on;
    'fetch': the pack request) says nothing ('silent') or one byte a second ('trickle'), for ever."""

    def __init__(self, root: pathlib.Path, *, how: str, when: str, token: str | None = None,
                 host: str = '127.0.0.1') -> None:
        socketserver.TCPServer.__init__(self, (host, 0), _HostileHandler)
        self.root, self.token, self.error_text, self.requests = root, token, None, []
        self.how, self.when = how, when
        self.attacks = 0
        self.connections = 0
        self.stopping = threading.Event()

    def get_request(self) -> tuple[socket.socket, object]:
        self.connections += 1
        return super().get_request()


class _HostileHandler(githttp._Handler):
    server: HostileGitServer

    def _serve(self) -> None:
        if self.server.when == 'refs' or (self.command == 'POST' and self._is_fetch()):
            self.server.attacks += 1
            self._misbehave()
            return
        super()._serve()

    def _is_fetch(self) -> bool:
        body = githttp._Handler._body(self)
        self._body = lambda: body  # type: ignore[method-assign]  # read once; served from here on
        text = gzip.decompress(body) if self.headers.get('Content-Encoding') == 'gzip' else body
        return b'command=fetch' in text or b'want ' in text

    def _misbehave(self) -> None:
        if self.server.how == 'silent':
            self.server.stopping.wait()
            return
        answer = itertools.chain(b'HTTP/1.1 200 OK\r\nX-Trickle: ', itertools.repeat(ord('.')))
        for byte in answer:
            if self.server.stopping.wait(1.0):
                return
            try:
                self.wfile.write(bytes([byte]))
            except OSError:
                return


@contextlib.contextmanager
def hostile(root: pathlib.Path, *, how: str, when: str, token: str | None = TOKEN,
            host: str = '127.0.0.1') -> Iterator[HostileGitServer]:
    server = HostileGitServer(root, how=how, when=when, token=token, host=host)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# `panda-deploy run`, watched.


def write_run_files(tmp_path: pathlib.Path, url: str, *, token: bool = True) -> tuple[pathlib.Path, pathlib.Path]:
    source: dict[str, object] = {'url': url, 'branch': 'main'}
    if token:
        source['tokenSecretRef'] = {'name': 'github-token', 'key': 'token'}
    manifest = {'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
                'metadata': {'name': 'hostile', 'namespace': 'default'},
                'spec': {'source': source, 'aws': {'region': 'ap-northeast-2'},
                         'image': {'repository': 'hostile-app'},
                         'timeouts': {'stageSeconds': STAGE_SECONDS, 'totalSeconds': 600}}}
    secrets = [{'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'github-token'},
                'stringData': {'token': TOKEN}}]
    (tmp_path / 'app.yaml').write_text(yaml.safe_dump(manifest))
    (tmp_path / 'secrets.yaml').write_text(yaml.safe_dump_all(secrets))
    return tmp_path / 'app.yaml', tmp_path / 'secrets.yaml'


class Run:
    """`python -m controller run … --until Build` in its own session; its output lines with their arrival times."""

    def __init__(self, tmp_path: pathlib.Path, env: dict[str, str]) -> None:
        manifest, secrets = tmp_path / 'app.yaml', tmp_path / 'secrets.yaml'
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'controller', 'run', '-f', str(manifest), '-s', str(secrets), '--until', 'Build'],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self.gits = GitProcesses(self.process.pid)
        self.gits.start()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line.rstrip('\n')))

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = -1
        self.ended = time.monotonic()
        self._reader.join(timeout=5)
        self.gits.stop()
        return code

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.gits.kill_leftovers()

    @property
    def output(self) -> str:
        return '\n'.join(line for _, line in self.lines)

    def when(self, fragment: str) -> float:
        return next(moment for moment, line in self.lines if fragment in line)


def run_env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    temp_root, home = tmp_path / 'tmp', tmp_path / 'home'
    temp_root.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('AWS_', 'PANDA_DEPLOY_'))}
    env.update(TMPDIR=str(temp_root), HOME=str(home), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED='1',
               AWS_EC2_METADATA_DISABLED='true', AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
               AWS_ACCESS_KEY_ID='AKIDHOSTILETEST', AWS_SECRET_ACCESS_KEY='hostile-test-secret', **extra)
    return env


@contextlib.contextmanager
def running(tmp_path: pathlib.Path, env: dict[str, str]) -> Iterator[Run]:
    run = Run(tmp_path, env)
    try:
        yield run
    finally:
        run.kill()


# ---------------------------------------------------------------------------------------------
# A git server that never answers, or trickles.


@pytest.mark.parametrize(('how', 'when'), [('silent', 'refs'), ('trickle', 'refs'),
                                           ('silent', 'fetch'), ('trickle', 'fetch')])
def test_a_hostile_git_server_ends_the_run_at_the_stage_timeout_with_no_git_left_and_no_checkout(
        tmp_path: pathlib.Path, aws_endpoint: str, how: str, when: str) -> None:
    origin = Origin(tmp_path / 'origin')
    with hostile(origin.root, how=how, when=when) as server:
        write_run_files(tmp_path, server.url('app.git'))
        env = run_env(tmp_path, AWS_ENDPOINT_URL=aws_endpoint, PANDA_DEPLOY_GIT_HOSTS=LOCAL_HOSTS)
        with running(tmp_path, env) as run:
            code = run.wait(timeout=STAGE_SECONDS + 90)
            leftovers = run.gits.alive()
        attacks = server.attacks
    print(run.output)
    assert code == 1, f'exit {code}'
    assert 'StageTimeout' in run.output
    assert f'Stage 1 (Build) timed out after {STAGE_SECONDS} seconds' in run.output
    if when == 'fetch':  # the refs were listed: the hang came while the pack was fetched into the checkout
        assert 'Revision ' in run.output and attacks >= 1
    else:
        assert attacks >= 1
    ended = run.ended - run.when('[Stage 1] Build started')
    assert ended < STAGE_SECONDS + SLACK_SECONDS, f'the run ended {ended:.1f}s after its stage began'
    assert run.gits.seen, 'the sampler saw git at work'
    assert leftovers == [], f'git processes left running: {leftovers}'
    assert sorted(p.name for p in (tmp_path / 'tmp').iterdir() if p.name.startswith('panda-deploy-')) == []


@pytest.fixture
def local_hosts() -> object:
    from controller.egress import GitHosts
    return GitHosts.parse(LOCAL_HOSTS)


def test_git_gives_up_on_a_trickle_below_its_low_speed_limit_by_itself(tmp_path: pathlib.Path,
                                                                       local_hosts: object) -> None:
    """Without the engine: git's http.lowSpeedLimit/lowSpeedTime end a transfer of one byte a second."""
    origin = Origin(tmp_path / 'origin')
    gits = GitProcesses(os.getpid())
    gits.start()
    adapter = GitRepository(token_hosts=local_hosts, low_speed_seconds=2, ls_remote_timeout=60)
    with hostile(origin.root, how='trickle', when='refs') as server:
        url = server.url('app.git')
        started = time.monotonic()
        with pytest.raises(Transient) as caught:
            adapter.resolve(url=url, branch='main', revision=None, token=TOKEN)
        took = time.monotonic() - started
    gits.stop()
    assert caught.value.reason == 'SourceUnavailable'
    assert url in caught.value.message and 'too slow' in caught.value.message.lower()
    assert TOKEN not in caught.value.message
    assert took < 2 + SLACK_SECONDS, f'{took:.1f}s'
    assert gits.seen and gits.alive() == []


@pytest.mark.parametrize('when', ['refs', 'fetch'])
def test_a_cancelled_git_call_ends_at_once_and_takes_its_children_with_it(tmp_path: pathlib.Path,
                                                                          local_hosts: object, when: str) -> None:
    """The engine gives up on a stage (`ctx.cancel`): the git call and every process below it end within a second."""
    origin = Origin(tmp_path / 'origin')
    adapter = GitRepository(token_hosts=local_hosts)
    gits = GitProcesses(os.getpid())
    gits.start()
    cancel = threading.Event()
    with hostile(origin.root, how='silent', when=when) as server:
        url = server.url('app.git')
        timer = threading.Timer(1.5, cancel.set)
        timer.start()
        started = time.monotonic()
        with pytest.raises(StageFailed) as caught:
            if when == 'refs':
                adapter.resolve(url=url, branch='main', revision=None, token=TOKEN, cancel=cancel)
            else:
                adapter.checkout(url=url, revision=origin.head, token=TOKEN, into=tmp_path / 'clone', cancel=cancel)
        took = time.monotonic() - started
        timer.cancel()
    gits.stop()
    assert 1.5 <= took < 3.0, f'{took:.1f}s'
    assert 'abandoned' in caught.value.message
    assert gits.seen and gits.alive() == []


# ---------------------------------------------------------------------------------------------
# A token only for the hosts the operator allows.


@pytest.mark.parametrize('allowed', [None, 'github.com,https://127.0.0.1:*', 'http://127.0.0.1:1'],
                         ids=['default', 'https-only', 'another-port'])
def test_a_token_for_a_host_the_operator_does_not_allow_is_refused_before_any_connection(
        tmp_path: pathlib.Path, allowed: str | None) -> None:
    origin = Origin(tmp_path / 'origin')
    with hostile(origin.root, how='silent', when='refs') as server:
        url = server.url('app.git')
        write_run_files(tmp_path, url)
        env = run_env(tmp_path, **({'PANDA_DEPLOY_GIT_HOSTS': allowed} if allowed is not None else {}))
        with running(tmp_path, env) as run:
            code = run.wait(timeout=60)
        connections = server.connections
    print(run.output)
    assert connections == 0, 'the token-carrying request reached the server'
    assert code == 2, f'exit {code}'  # refused before the run: invalid input, as a stall would be
    assert 'SourceNotAllowed' in run.output
    port = url.split(':')[2].split('/')[0]
    assert f'http://127.0.0.1:{port}' in run.output and 'PANDA_DEPLOY_GIT_HOSTS' in run.output
    assert TOKEN not in run.output


def test_the_adapter_itself_sends_a_token_only_to_allowed_hosts_and_anything_without_one(
        tmp_path: pathlib.Path) -> None:
    """Defence in depth: whoever calls the adapter, a token never leaves for a host not allowed (default:
    github.com over https); a public repository needs no permission."""
    from controller.egress import SourceNotAllowed
    origin = Origin(tmp_path / 'origin')
    adapter = GitRepository()
    with hostile(origin.root, how='silent', when='refs') as server:
        with pytest.raises(SourceNotAllowed) as caught:
            adapter.resolve(url=server.url('app.git'), branch='main', revision=None, token=TOKEN)
        with pytest.raises(SourceNotAllowed):
            adapter.checkout(url=server.url('app.git'), revision=origin.head, token=TOKEN, into=tmp_path / 'c')
        assert server.connections == 0
    assert caught.value.reason == 'SourceNotAllowed'
    with githttp.serving(origin.root) as public:
        assert adapter.resolve(url=public.url('app.git'), branch='main', revision=None, token=None) == origin.head


# ---------------------------------------------------------------------------------------------
# No git at all.


def test_no_git_on_the_path_fails_the_run_as_git_not_installed(tmp_path: pathlib.Path) -> None:
    origin = Origin(tmp_path / 'origin')
    write_run_files(tmp_path, origin.url, token=False)
    empty = tmp_path / 'empty-bin'
    empty.mkdir()
    with running(tmp_path, run_env(tmp_path, PATH=str(empty))) as run:
        code = run.wait(timeout=60)
    print(run.output)
    assert code == 1, f'exit {code}'
    assert '[Stage 1] failed: GitNotInstalled: ' in run.output
    assert "no 'git' executable on the operator's PATH" in run.output
