"""The git adapter against real git: repositories in tmp_path, over file://, plain paths and smart HTTP.

The HTTP server (tests/integration/githttp.py) runs `git http-backend` and
demands the token as basic auth, as GitHub does. No network is used.
"""
from __future__ import annotations

import base64
import logging
import os
import pathlib
import secrets
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from controller.adapters import gitprocess
from controller.adapters.git import GitRepository, RevisionNotFound, SourceAuthFailed, SourceNotFound, display_url
from controller.egress import GitHosts
from controller.errors import Reason, StageFailed, Transient
from tests.integration.githttp import GitHttpServer, serving

ISOLATED = {
    'GIT_CONFIG_NOSYSTEM': '1', 'GIT_CONFIG_GLOBAL': '/dev/null',
    'GIT_AUTHOR_NAME': 'Test', 'GIT_AUTHOR_EMAIL': 'test@example.com',
    'GIT_COMMITTER_NAME': 'Test', 'GIT_COMMITTER_EMAIL': 'test@example.com',
}


def run_git(*args: str, cwd: pathlib.Path | None = None) -> str:
    """The git CLI, with no host configuration."""
    done = subprocess.run(['git', *args], cwd=cwd, env={**os.environ, **ISOLATED}, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


class Origin:
    """A bare repository `srv/app.git`: main with three commits (one Dockerfile each), a feature branch, a tag."""

    def __init__(self, root: pathlib.Path) -> None:
        work = root / 'work'
        run_git('init', '--quiet', '--initial-branch=main', str(work))
        self.commits: list[str] = []
        for number in range(1, 4):
            (work / 'Dockerfile').write_text(f'FROM scratch\nLABEL commit={number}\n')
            run_git('add', 'Dockerfile', cwd=work)
            run_git('commit', '--quiet', '-m', f'commit {number}', cwd=work)
            self.commits.append(run_git('rev-parse', 'HEAD', cwd=work))
        run_git('tag', '-a', '-m', 'first', 'v1', self.commits[0], cwd=work)
        run_git('checkout', '--quiet', '-b', 'feature', self.commits[1], cwd=work)
        (work / 'feature.txt').write_text('feature\n')
        run_git('add', 'feature.txt', cwd=work)
        run_git('commit', '--quiet', '-m', 'feature', cwd=work)
        self.feature = run_git('rev-parse', 'HEAD', cwd=work)
        run_git('checkout', '--quiet', 'main', cwd=work)
        self.root = root / 'srv'
        self.path = self.root / 'app.git'
        run_git('clone', '--quiet', '--bare', str(work), str(self.path))
        self.url = self.path.as_uri()

    @property
    def head(self) -> str:
        return self.commits[-1]


@pytest.fixture
def origin(tmp_path: pathlib.Path) -> Origin:
    return Origin(tmp_path)


# The test's git servers run here: tokens may go to them (PANDA_DEPLOY_GIT_HOSTS in the operator).
LOCAL_HOSTS = GitHosts.parse('http://127.0.0.1:*')


@pytest.fixture
def adapter() -> GitRepository:
    return GitRepository(fetch_timeout=30, ls_remote_timeout=15, token_hosts=LOCAL_HOSTS)


@pytest.fixture
def token() -> str:
    return 'ghp_' + secrets.token_hex(18)


@pytest.fixture
def server(origin: Origin, token: str) -> Iterator[GitHttpServer]:
    with serving(origin.root, token=token) as running:
        yield running


def assert_shallow_checkout(into: pathlib.Path, revision: str) -> None:
    assert run_git('rev-parse', 'HEAD', cwd=into) == revision
    assert run_git('rev-list', '--count', 'HEAD', cwd=into) == '1'
    assert (into / '.git' / 'shallow').read_text().split() == [revision]
    assert run_git('status', '--porcelain', cwd=into) == ''
    config = (into / '.git' / 'config').read_text()
    assert 'url' not in config and 'extraheader' not in config.lower()


# Resolve.

@pytest.mark.parametrize('form', ['file', 'path'])
def test_resolve_branch_head(adapter: GitRepository, origin: Origin, form: str) -> None:
    url = origin.url if form == 'file' else str(origin.path)
    assert adapter.resolve(url=url, branch='main', revision=None, token=None) == origin.head
    assert adapter.resolve(url=url, branch='feature', revision=None, token=None) == origin.feature


def test_resolve_without_branch_takes_the_default_branch(adapter: GitRepository, origin: Origin) -> None:
    assert adapter.resolve(url=origin.url, branch=None, revision=None, token=None) == origin.head


def test_full_revision_is_pinned_as_given(adapter: GitRepository, origin: Origin) -> None:
    first = origin.commits[0]
    assert adapter.resolve(url=origin.url, branch=None, revision=first.upper(), token=None) == first


@pytest.mark.parametrize('which', ['tip', 'older'])
def test_abbreviated_revision_is_expanded(adapter: GitRepository, origin: Origin, which: str) -> None:
    full = origin.feature if which == 'tip' else origin.commits[0]
    assert adapter.resolve(url=origin.url, branch=None, revision=full[:8], token=None) == full


def test_unknown_abbreviated_revision(adapter: GitRepository, origin: Origin) -> None:
    missing = next(p for p in ('0000000', 'fffffff', '1234567') if not any(c.startswith(p) for c in origin.commits))
    with pytest.raises(RevisionNotFound, match=f'commit {missing} not found in {origin.url}'):
        adapter.resolve(url=origin.url, branch=None, revision=missing, token=None)


def test_missing_branch(adapter: GitRepository, origin: Origin) -> None:
    with pytest.raises(RevisionNotFound) as caught:
        adapter.resolve(url=origin.url, branch='nope', revision=None, token=None)
    assert caught.value.reason == Reason.REVISION_NOT_FOUND == 'RevisionNotFound'
    assert caught.value.message == f"branch 'nope' not found in {origin.url}"


def test_branch_match_is_exact(adapter: GitRepository, origin: Origin) -> None:
    """ls-remote matches pattern tails; `ature` must not find `feature`."""
    with pytest.raises(RevisionNotFound):
        adapter.resolve(url=origin.url, branch='ature', revision=None, token=None)


@pytest.mark.parametrize('form', ['file', 'path'])
def test_missing_repository(adapter: GitRepository, tmp_path: pathlib.Path, form: str) -> None:
    path = tmp_path / 'nowhere.git'
    url = path.as_uri() if form == 'file' else str(path)
    with pytest.raises(SourceNotFound) as caught:
        adapter.resolve(url=url, branch='main', revision=None, token=None)
    assert caught.value.reason == 'SourceNotFound'
    assert 'does not appear to be a git repository' in caught.value.message


def test_display_url_drops_user_info() -> None:
    assert display_url('https://user:hunter2@example.com/a/b.git') == 'https://example.com/a/b.git'
    assert display_url('file:///srv/a.git') == 'file:///srv/a.git'
    assert display_url('/srv/a.git') == '/srv/a.git'


# Checkout.

@pytest.mark.parametrize('which', [0, 1, 2])
def test_checkout_gives_exactly_that_commit_at_depth_one(adapter: GitRepository, origin: Origin,
                                                         tmp_path: pathlib.Path, which: int) -> None:
    revision = origin.commits[which]
    into = tmp_path / 'clone'
    into.mkdir()
    adapter.checkout(url=origin.url, revision=revision, token=None, into=into)
    assert_shallow_checkout(into, revision)
    assert (into / 'Dockerfile').read_text() == f'FROM scratch\nLABEL commit={which + 1}\n'
    assert not (into / 'feature.txt').exists()


def test_checkout_of_missing_commit(adapter: GitRepository, origin: Origin, tmp_path: pathlib.Path) -> None:
    with pytest.raises(RevisionNotFound, match=f'commit {"ab" * 20} not found in {origin.url}'):
        adapter.checkout(url=origin.url, revision='ab' * 20, token=None, into=tmp_path / 'clone')


def test_checkout_when_the_server_refuses_fetching_by_sha(adapter: GitRepository, origin: Origin,
                                                          tmp_path: pathlib.Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Protocol v0 serves only advertised tips: a tip works, an older commit is RevisionNotFound."""
    monkeypatch.setenv('GIT_CONFIG_PARAMETERS', "'protocol.version'='0'")
    adapter.checkout(url=origin.url, revision=origin.feature, token=None, into=tmp_path / 'tip')
    assert_shallow_checkout(tmp_path / 'tip', origin.feature)
    with pytest.raises(RevisionNotFound, match='not found'):
        adapter.checkout(url=origin.url, revision=origin.commits[1], token=None, into=tmp_path / 'older')


def test_checkout_falls_back_to_the_branch_at_that_commit(adapter: GitRepository, origin: Origin,
                                                          tmp_path: pathlib.Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that refuses every want-by-SHA: the branch whose tip it is gets fetched shallow."""
    real = gitprocess.run
    refused: list[str] = []

    def refuse_sha(argv: list[str], **kwargs: Any) -> gitprocess.Finished:
        if argv[:2] == ['git', 'fetch'] and argv[-1] == origin.feature:
            refused.append(argv[-1])
            return gitprocess.Finished(status=128, stdout='', stderr='fatal: remote error: upload-pack: not our ref')
        return real(argv, **kwargs)

    monkeypatch.setattr(gitprocess, 'run', refuse_sha)
    adapter.checkout(url=origin.url, revision=origin.feature, token=None, into=tmp_path / 'clone')
    assert refused == [origin.feature]
    assert_shallow_checkout(tmp_path / 'clone', origin.feature)


def test_checkout_needs_a_full_sha_and_an_empty_directory(adapter: GitRepository, origin: Origin,
                                                          tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match='full commit SHA'):
        adapter.checkout(url=origin.url, revision=origin.head[:8], token=None, into=tmp_path / 'a')
    (tmp_path / 'b').mkdir()
    (tmp_path / 'b' / 'x').write_text('x')
    with pytest.raises(ValueError, match='not empty'):
        adapter.checkout(url=origin.url, revision=origin.head, token=None, into=tmp_path / 'b')


# Smart HTTP with a token.

def test_http_with_the_right_token(adapter: GitRepository, origin: Origin, server: GitHttpServer,
                                   token: str, tmp_path: pathlib.Path) -> None:
    url = server.url('app.git')
    assert adapter.resolve(url=url, branch='main', revision=None, token=token) == origin.head
    adapter.checkout(url=url, revision=origin.commits[1], token=token, into=tmp_path / 'clone')
    assert_shallow_checkout(tmp_path / 'clone', origin.commits[1])
    # Each git asks without credentials first, gets 401, then asks the helper: every upload-pack POST carries them.
    posts = [sent for method, _, sent in server.requests if method == 'POST']
    assert posts and all(posts)
    assert sum(sent for _, _, sent in server.requests) >= 3  # ls-remote, and fetch's GET and POST


@pytest.mark.parametrize('given', ['wrong', None])
def test_http_with_a_wrong_or_no_token(adapter: GitRepository, origin: Origin, server: GitHttpServer,
                                       token: str, tmp_path: pathlib.Path, given: str | None) -> None:
    url = server.url('app.git')
    wrong = 'ghp_' + secrets.token_hex(18) if given else None
    with pytest.raises(SourceAuthFailed) as caught:
        adapter.resolve(url=url, branch='main', revision=None, token=wrong)
    assert caught.value.reason == 'SourceAuthFailed'
    assert caught.value.message.startswith(f'authentication to {url} failed')
    assert ('no token given' in caught.value.message) == (wrong is None)
    with pytest.raises(SourceAuthFailed):
        adapter.checkout(url=url, revision=origin.head, token=wrong, into=tmp_path / 'clone')
    for text in (caught.value.message, str(caught.value)):
        assert token not in text and (wrong is None or wrong not in text)


def test_http_missing_repository(adapter: GitRepository, server: GitHttpServer, token: str) -> None:
    with pytest.raises(SourceNotFound, match='not found'):
        adapter.resolve(url=server.url('nope.git'), branch='main', revision=None, token=token)


def test_server_error_text_is_redacted(adapter: GitRepository, origin: Origin, token: str,
                                       tmp_path: pathlib.Path) -> None:
    with serving(origin.root, token=token, error_text=f'token {token} lacks the repo scope') as server:
        url = server.url('app.git')
        with pytest.raises(StageFailed) as resolving:
            adapter.resolve(url=url, branch='main', revision=None, token=token)
        with pytest.raises(StageFailed) as checking_out:
            adapter.checkout(url=url, revision=origin.head, token=token, into=tmp_path / 'clone')
    for caught in (resolving, checking_out):
        message = str(caught.value)
        assert 'lacks the repo scope' in message and '***' in message
        assert token not in message and token not in repr(caught.value.args)


def config_of(env: dict[str, str]) -> dict[str, str]:
    """The git settings an adapter environment carries (GIT_CONFIG_KEY_n = GIT_CONFIG_VALUE_n)."""
    return {env[f'GIT_CONFIG_KEY_{n}']: env[f'GIT_CONFIG_VALUE_{n}'] for n in range(int(env['GIT_CONFIG_COUNT']))}


def test_credential_helper_is_scoped_to_the_remote_origin(adapter: GitRepository, token: str) -> None:
    env = adapter._environment(url='https://github.com:443/o/r.git', token=token)
    config = config_of(env)
    helper = config.pop('credential.https://github.com:443.helper')
    assert helper.startswith('!') and 'PANDA_DEPLOY_GIT_CREDENTIAL_FD' in helper
    assert config['credential.helper'] == ''  # the host's helpers are reset; ours answers for that origin only
    assert not any(key.startswith('credential.') and key != 'credential.helper' for key in config)
    assert not any(token in value for value in env.values())
    file_config = config_of(adapter._environment(url='file:///x', token=token))
    assert not any(key.startswith('credential.') and key != 'credential.helper' for key in file_config)


# The token stays out of argv, the environment of our own process, files and logs.

def _proc_cmdlines() -> list[str]:
    """argv, then environment, of every process (NUL-separated, as /proc shows them)."""
    found = []
    for entry in pathlib.Path('/proc').iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')
                environ = (entry / 'environ').read_bytes().replace(b'\0', b' ').decode(errors='replace')
                found.append(f'{argv} {environ}')
            except OSError:
                pass
    return found


def test_token_never_in_argv_files_or_logs(adapter: GitRepository, origin: Origin, server: GitHttpServer,
                                           token: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    header = base64.b64encode(f'x-access-token:{token}'.encode()).decode()
    calls: list[tuple[list[str], dict[str, str]]] = []
    real_spawn = gitprocess.spawn

    def recording_spawn(argv: list[str], **kwargs: Any) -> Any:
        calls.append((list(argv), dict(kwargs.get('env') or {})))
        return real_spawn(argv, **kwargs)

    monkeypatch.setattr(gitprocess, 'spawn', recording_spawn)
    sampled: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            sampled.extend(line for line in _proc_cmdlines() if 'git' in line)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    environ_before = dict(os.environ)
    caplog.set_level(logging.DEBUG)
    scratch = tmp_path / 'tmp'  # where resolve's temporary repository goes, to be scanned too
    scratch.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
    try:
        url = server.url('app.git')
        older = adapter.resolve(url=url, branch=None, revision=origin.commits[0][:9], token=token)
        assert older == origin.commits[0]  # an abbreviated non-tip: a commits-only fetch in a temporary repository
        revision = adapter.resolve(url=url, branch=None, revision=origin.head[:9], token=token)
        adapter.checkout(url=url, revision=revision, token=token, into=tmp_path / 'clone')
        with pytest.raises(SourceAuthFailed):
            adapter.resolve(url=url, branch='main', revision=None, token=token[::-1])
    finally:
        stop.set()
        sampler.join()

    assert_shallow_checkout(tmp_path / 'clone', origin.head)
    assert dict(os.environ) == environ_before
    # argv of every git the adapter started, and of every process seen while it ran (git's own children too).
    assert len(calls) >= 6 and sampled
    for argv, env in calls:
        assert not any(token in arg or header in arg for arg in argv)
        assert not any(token in value or header in value for value in env.values())  # it travels in a pipe
        assert env['GIT_TERMINAL_PROMPT'] == '0' and env['GIT_ASKPASS'] == ''
    assert any(url in line for line in sampled)  # the sampler did see the adapter's gits at work
    assert not any(token in line or header in line for line in sampled)
    assert any('git' in argv[0] and argv[1] == 'fetch' for argv, _ in calls)
    # Files: the clone, the served repositories, and whatever else landed under tmp.
    for path in tmp_path.rglob('*'):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert token.encode() not in data and header.encode() not in data, path
    assert not list(scratch.iterdir())
    assert caplog.records and not any(token in r.getMessage() or header in r.getMessage() for r in caplog.records)


# Network trouble is Transient (retried), not a verdict on the source.

def test_connection_refused_is_transient(adapter: GitRepository) -> None:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    with pytest.raises(Transient) as caught:
        adapter.resolve(url=f'http://127.0.0.1:{port}/app.git', branch='main', revision=None, token='t0ken-xyz')
    assert 'connect' in caught.value.message.lower()


def test_a_hung_server_times_out_as_transient(token: str) -> None:
    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen(8)  # accepts connections in the kernel, never answers
        url = f'http://127.0.0.1:{silent.getsockname()[1]}/app.git'
        started = time.monotonic()
        with pytest.raises(Transient, match='timed out after 1 seconds'):
            GitRepository(ls_remote_timeout=1, token_hosts=LOCAL_HOSTS).resolve(url=url, branch='main',
                                                                                revision=None, token=token)
        assert time.monotonic() - started < 10
