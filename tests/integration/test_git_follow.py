"""Following a branch with real git over smart HTTP: the head by ls-remote, the paths a new head touches.

The server (tests/integration/githttp.py, `git http-backend`) demands the
token as GitHub does and records each request, so what following costs the
server is seen here.
"""
from __future__ import annotations

import pathlib
import secrets
from collections.abc import Iterator

import pytest

from controller.adapters.git import SourceAuthFailed
from controller.adapters.git_changes import BranchWatcher
from controller.egress import GitHosts
from tests.integration.githttp import GitHttpServer, serving
from tests.integration.test_git import run_git, token  # noqa: F401 -- the token fixture


class Monorepo:
    """A bare repository `srv/mono.git` whose main touches services/web, then only docs."""

    def __init__(self, root: pathlib.Path) -> None:
        self.work = root / 'work'
        run_git('init', '--quiet', '--initial-branch=main', str(self.work))
        self.web = self.commit({'services/web/app.py': 'v1\n', 'services/api/app.py': 'v1\n'})
        self.root = root / 'srv'
        self.path = self.root / 'mono.git'
        run_git('clone', '--quiet', '--bare', str(self.work), str(self.path))
        run_git('config', 'uploadpack.allowFilter', 'true', cwd=self.path)
        run_git('remote', 'add', 'origin', str(self.path), cwd=self.work)

    def commit(self, files: dict[str, str]) -> str:
        for name, content in files.items():
            (self.work / name).parent.mkdir(parents=True, exist_ok=True)
            (self.work / name).write_text(content)
        run_git('add', '-A', cwd=self.work)
        run_git('commit', '--quiet', '-m', ', '.join(files), cwd=self.work)
        return run_git('rev-parse', 'HEAD', cwd=self.work)

    def push(self, *, force: bool = False) -> None:
        run_git('push', '--quiet', *(['--force'] if force else []), 'origin', 'HEAD:main', cwd=self.work)


@pytest.fixture
def mono(tmp_path: pathlib.Path) -> Monorepo:
    return Monorepo(tmp_path)


@pytest.fixture
def server(mono: Monorepo, token: str) -> Iterator[GitHttpServer]:
    with serving(mono.root, token=token) as running:
        yield running


@pytest.fixture
def watcher() -> BranchWatcher:
    return BranchWatcher(token_hosts=GitHosts.parse('http://127.0.0.1:*'))


def test_the_head_is_one_ls_remote(watcher: BranchWatcher, mono: Monorepo, server: GitHttpServer,
                                   token: str) -> None:
    url = server.url('mono.git')
    assert watcher.head(url=url, branch='main', token=token) == mono.web
    mono.commit({'docs/readme.md': 'hello\n'})
    mono.push()
    server.requests.clear()
    assert watcher.head(url=url, branch='main', token=token) == run_git('rev-parse', 'HEAD', cwd=mono.work)
    paths = [path.split('?')[0] for _, path, _ in server.requests]
    assert all(path.endswith(('/info/refs', '/git-upload-pack')) for path in paths), paths
    # git's anonymous try (401), then the refs with the token and, in protocol v2, one ls-refs: no fetch.
    assert len(paths) <= 3, paths
    with pytest.raises(SourceAuthFailed):
        watcher.head(url=url, branch='main', token='ghp_wrong')


def test_a_head_touching_only_other_paths_is_told_apart(watcher: BranchWatcher, mono: Monorepo,
                                                        server: GitHttpServer, token: str) -> None:
    url = server.url('mono.git')
    docs = mono.commit({'docs/readme.md': 'hello\n'})
    mono.push()
    assert watcher.touches(url=url, old=mono.web, new=docs, patterns=['services/web/**'], token=token) is False
    assert watcher.touches(url=url, old=mono.web, new=docs, patterns=['docs/*.md'], token=token) is True
    assert watcher.touches(url=url, old=mono.web, new=docs, patterns=['docs'], token=token) is True
    assert watcher.touches(url=url, old=mono.web, new=docs, patterns=['*.md'], token=token) is False  # one level
    assert watcher.touches(url=url, old=mono.web, new=docs, patterns=['**/*.md'], token=token) is True
    web = mono.commit({'services/web/app.py': 'v2\n'})
    mono.push()
    # From the deployed commit: the change set is the trees' difference, whatever came between.
    assert watcher.touches(url=url, old=mono.web, new=web, patterns=['services/web/**'], token=token) is True
    assert watcher.touches(url=url, old=docs, new=web, patterns=['services/api/**'], token=token) is False


def test_after_a_force_push_trees_are_compared_and_a_lost_commit_is_not_proved_unchanged(
        watcher: BranchWatcher, mono: Monorepo, server: GitHttpServer, token: str) -> None:
    url = server.url('mono.git')
    deployed = mono.commit({'services/web/app.py': 'v2\n'})
    mono.push()
    # History rewritten: the deployed commit is no ancestor of the new head, whose tree has web at v2 too.
    run_git('reset', '--quiet', '--hard', mono.web, cwd=mono.work)
    rewritten = mono.commit({'services/web/app.py': 'v2\n', 'docs/readme.md': 'x\n'})
    mono.push(force=True)
    assert watcher.touches(url=url, old=deployed, new=rewritten, patterns=['services/web/**'], token=token) is False
    # The server forgets the deployed commit (gc after the force-push): nothing can be proved, so None.
    run_git('reflog', 'expire', '--expire=now', '--all', cwd=mono.path)
    run_git('gc', '--quiet', '--prune=now', cwd=mono.path)
    assert watcher.touches(url=url, old=deployed, new=rewritten, patterns=['services/web/**'], token=token) is None



@pytest.mark.parametrize('server_filters', [True, False])
def test_comparing_fetches_no_file_contents_and_stops_a_server_that_sends_them(
        mono: Monorepo, server: GitHttpServer, token: str, server_filters: bool) -> None:
    """Two commits with 4 MB of incompressible files: their trees alone are a few KB. A server that filters
    sends just those (the answer stays within a 256 KB budget); one that ignores the filter is stopped at the
    budget, and the answer is 'cannot tell'."""
    if not server_filters:
        run_git('config', 'uploadpack.allowFilter', 'false', cwd=mono.path)
    old = mono.commit({'services/web/big.bin': secrets.token_hex(1 << 20), 'docs/a.md': 'a\n'})
    new = mono.commit({'services/web/big.bin': secrets.token_hex(1 << 20), 'docs/a.md': 'b\n'})
    mono.push()
    watcher = BranchWatcher(token_hosts=GitHosts.parse('http://127.0.0.1:*'), max_compare_bytes=256 << 10)
    answer = watcher.touches(url=server.url('mono.git'), old=old, new=new, patterns=['docs/**'], token=token)
    assert answer is (True if server_filters else None)


def test_a_fetch_that_ends_before_the_disk_watch_looks_is_measured_all_the_same(
        mono: Monorepo, server: GitHttpServer, token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The watch polls; a server fast enough to send everything between two polls (a fast network) must not
    get its oversized answer compared: CI once saw `True` here where the budget calls for 'cannot tell'."""
    monkeypatch.setattr('controller.adapters.gitprocess.WATCH_SECONDS', 60.0)  # no poll during the fetch
    run_git('config', 'uploadpack.allowFilter', 'false', cwd=mono.path)
    old = mono.commit({'services/web/big.bin': secrets.token_hex(1 << 19), 'docs/a.md': 'a\n'})
    new = mono.commit({'services/web/big.bin': secrets.token_hex(1 << 19), 'docs/a.md': 'b\n'})
    mono.push()
    watcher = BranchWatcher(token_hosts=GitHosts.parse('http://127.0.0.1:*'), max_compare_bytes=256 << 10)
    assert watcher.touches(url=server.url('mono.git'), old=old, new=new, patterns=['docs/**'], token=token) is None
