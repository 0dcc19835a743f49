"""Git through the real git binary: resolve a branch to a commit, shallow-clone exactly that commit.

Why it is built this way:

- The real `git` speaks every transport and protocol version the remote may
  want, including shallow fetches by SHA, which is what GitHub serves
  fastest; we only classify its failures. Each git runs through
  `gitprocess`: in a session of its own, killed with its whole process tree
  at its deadline or as soon as the engine abandons the stage (`cancel`).
- A token goes only to the hosts the operator allows (`token_hosts`,
  PANDA_DEPLOY_GIT_HOSTS, default github.com over https): a call with a token
  for any other URL is `SourceNotAllowed` before git starts. The reconciler
  refuses such a resource before its run (controller.egress); this is the
  same rule where the token is actually handed over, whoever calls.
- The token reaches git through a pipe only: the parent writes
  `username=…` / `password=…` into a pipe whose read end the git child
  inherits, and a credential helper scoped to the remote's scheme, host and
  port (`credential.<origin>.helper`, given through `GIT_CONFIG_*`) prints
  what the pipe holds when git asks. Nothing secret is in argv (`ps`), in the
  environment (`/proc/<pid>/environ`), in `.git/config` or in any file; in
  the URL it would be in all three. A redirect to another host does not
  match the helper's scope, so it never receives the token. `os.environ` is
  never changed (other threads run other deployments with other tokens).
- git never prompts (`GIT_TERMINAL_PROMPT=0`, empty askpass, ssh BatchMode)
  and every call has a timeout, because nobody is at a terminal and a hung
  call would hold a worker forever. A server that accepts the connection and
  then sends nothing, or a trickle, is cut off by git itself: under
  `low_speed_limit` bytes a second for `low_speed_seconds`
  (`http.lowSpeedLimit`/`lowSpeedTime`; ssh's ConnectTimeout and
  ServerAlive settings likewise).
- No git on PATH is `GitNotInstalled`: the operator's image, not the
  repository, is at fault.
- System and user git configuration are ignored, and credential helpers
  reset, so a host's helper, `insteadOf` rule or stored credential can
  neither answer for the token nor send the clone elsewhere; settings a
  deployment does need (a CA bundle, a proxy) are passed to the constructor.
- The clone has no remote configured: `.git/config` holds no URL at all, so a
  Dockerfile that copies `.git` into an image copies nothing sensitive.
- Every message that leaves this module goes through `redact` with the token,
  and URLs are shown without their user-info.
- A repository may be far larger checked out than fetched (a pack of a few
  KiB can hold gigabytes of zeros), so with `max_checkout_bytes` the
  commit's tree is measured (`git ls-tree -l`) before any file is written.
  The pack comes first and the server decides what it holds, so the fetch
  is held to the same limit on disk (`gitprocess.DiskWatch`) and stopped
  there: a checkout takes at most about twice the limit.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
import tempfile
import threading
import urllib.parse
from collections.abc import Mapping, Sequence

from controller import tempdirs
from controller.adapters import gitprocess
from controller.adapters.git_failures import (
    AUTH_FAILED,
    NETWORK,
    NOT_FOUND,
    SHA_REFUSED,
    GitNotInstalled,
    RepositoryTooLarge,
    RevisionNotFound,
    SourceAuthFailed,
    SourceNotFound,
    matches,
    summary,
    tree_bytes,
)
from controller.credentials import redact
from controller.egress import GitHosts
from controller.errors import PandaDeployError, Reason, StageFailed, Transient, format_bytes

logger = logging.getLogger(__name__)

_FULL_SHA = re.compile(r'^[0-9a-f]{40}$')
_SHORT_SHA = re.compile(r'^[0-9a-f]{4,39}$')

# The credential helper: for `get`, print what the inherited pipe holds; `store` and `erase` do nothing.
# Only the pipe's file descriptor number travels in the environment.
_FD_VARIABLE = 'PANDA_DEPLOY_GIT_CREDENTIAL_FD'
_HELPER = ('!f() { cat >/dev/null; test "$1" = get && test -n "$%s" && cat "/dev/fd/$%s"; }; f'
           % (_FD_VARIABLE, _FD_VARIABLE))


class _GitFailed(Exception):
    """One git command exited non-zero or was stopped (internal: classified by the caller)."""

    def __init__(self, *, action: str, status: int | None, stderr: str, stopped: str | None) -> None:
        super().__init__(f'git {action} exited {status}' if stopped is None else f'git {action} {stopped}')
        self.action, self.status, self.stderr, self.stopped = action, status, stderr, stopped


@dataclasses.dataclass(frozen=True)
class _Remote:
    """What every git call of one `resolve` or `checkout` shares."""
    url: str
    token: str | None
    env: Mapping[str, str]
    cancel: threading.Event | None


def display_url(url: str) -> str:
    """The URL without user-info (user names and passwords stay out of messages)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and '@' in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit('@', 1)[1])
        return urllib.parse.urlunsplit(parts)
    return url


class GitRepository:
    """The `Git` adapter: `git ls-remote` to resolve, `git fetch --depth 1` of one commit to check out."""

    def __init__(self, *, fetch_timeout: float = 300.0, ls_remote_timeout: float = 60.0,
                 token_username: str = 'x-access-token', config: Mapping[str, str] | None = None,
                 token_hosts: GitHosts | None = None, low_speed_limit: int = 1000,
                 low_speed_seconds: int = 30, max_checkout_bytes: int | None = None) -> None:
        """`config`: extra git settings for every call (e.g. `http.sslCAInfo`, `http.proxy`), never secrets.
        `token_hosts`: where a token may go (default: github.com over https); `max_checkout_bytes`: the most
        a commit's files may add up to (RepositoryTooLarge above it)."""
        self.max_checkout_bytes = max_checkout_bytes
        self.fetch_timeout = fetch_timeout
        self.ls_remote_timeout = ls_remote_timeout
        self.token_username = token_username
        self.config = dict(config or {})
        self.token_hosts = token_hosts if token_hosts is not None else GitHosts.default()
        self.low_speed_limit = low_speed_limit
        self.low_speed_seconds = low_speed_seconds

    # The protocol.

    def resolve(self, *, url: str, branch: str | None, revision: str | None, token: str | None,
                cancel: threading.Event | None = None) -> str:
        """The commit SHA `revision` or `branch` names on the remote; also the connection and token check.

        A full SHA is returned as given once the remote answers (checkout tells
        whether it exists). An abbreviated SHA is expanded: from the remote's
        branch and tag tips when exactly one matches, else from a commits-only
        (`--filter=tree:0`) fetch into a temporary directory. Neither branch
        nor revision: the remote's default branch (HEAD).
        """
        remote = self._remote(url, token, cancel)
        if revision:
            revision = revision.lower()
            if _FULL_SHA.match(revision):
                self._ls_remote(remote, patterns=['HEAD'])
                return revision
            if not _SHORT_SHA.match(revision):
                raise RevisionNotFound(f'revision {revision!r} is not a commit SHA')
            return self._expand(remote, prefix=revision)
        name = f'refs/heads/{branch}' if branch else 'HEAD'
        refs = self._ls_remote(remote, patterns=[name])
        for sha, ref in refs:
            if ref == name:
                return sha
        if branch:
            raise RevisionNotFound(f'branch {branch!r} not found in {self._show(remote)}')
        raise RevisionNotFound(f'{self._show(remote)} has no default branch (empty repository?)')

    def checkout(self, *, url: str, revision: str, token: str | None, into: pathlib.Path,
                 cancel: threading.Event | None = None) -> None:
        """Shallow clone (depth 1) of exactly `revision` into the empty directory `into`, detached at it.

        Fetches the commit by SHA; a server that refuses that (protocol v0
        without `allowReachableSHA1InWant`) gets a shallow fetch of a branch
        or tag whose tip is that commit instead.
        """
        remote = self._remote(url, token, cancel)
        if not _FULL_SHA.match(revision):
            raise ValueError(f'checkout needs a full commit SHA, not {revision!r} (resolve it first)')
        into.mkdir(parents=True, exist_ok=True)
        if any(into.iterdir()):
            raise ValueError(f'checkout directory {into} is not empty')
        self._git(['init', '--quiet', '--template=', str(into)], remote, timeout=self.ls_remote_timeout)
        fetch = ['fetch', '--quiet', '--depth', '1', '--no-tags', '--no-recurse-submodules', url]
        try:
            self._fetch(fetch + [revision], remote, into=into, revision=revision)
        except _GitFailed as failed:
            if failed.stopped or not matches(failed.stderr, SHA_REFUSED):
                raise self._classify(failed, remote) from None
            logger.debug('fetch by SHA refused by %s; looking for a ref at %s', self._show(remote), revision)
            ref = self._ref_at(remote, revision=revision)
            try:
                self._fetch(fetch + [ref], remote, into=into, revision=revision)
            except _GitFailed as failed_again:
                raise self._classify(failed_again, remote) from None
            fetched = self._git(['rev-parse', '--verify', 'FETCH_HEAD^{commit}'], remote,
                                timeout=self.ls_remote_timeout, cwd=into)
            if fetched != revision:
                raise RevisionNotFound(f'{ref} moved from {revision[:12]} to {fetched[:12]} in '
                                       f'{self._show(remote)} while fetching; the server refuses '
                                       'fetching commits by SHA') from None
        if self.max_checkout_bytes is not None:
            self._check_size(remote, revision=revision, into=into)
        self._git(['-c', 'advice.detachedHead=false', 'checkout', '--quiet', '--detach', revision], remote,
                  timeout=self.fetch_timeout, cwd=into)
        head = self._git(['rev-parse', 'HEAD'], remote, timeout=self.ls_remote_timeout, cwd=into)
        if head != revision:
            raise RevisionNotFound(f'checkout of {self._show(remote)} ended at {head[:12]}, not {revision[:12]}')
        logger.debug('checked out %s at %s into %s', self._show(remote), revision, into)

    # Steps.

    def _remote(self, url: str, token: str | None, cancel: threading.Event | None) -> _Remote:
        """The URL checked (usable; a token only for an allowed host), with the environment of its gits."""
        _check_url(url)
        if token:
            self.token_hosts.check(url)
        return _Remote(url=url, token=token, env=self._environment(url=url, token=token), cancel=cancel)

    def _ls_remote(self, remote: _Remote, *, patterns: Sequence[str] = ()) -> list[tuple[str, str]]:
        """(sha, ref) pairs the remote advertises (exact names only for `patterns`: git matches their tails)."""
        out = self._git(['ls-remote', remote.url, *patterns], remote, timeout=self.ls_remote_timeout)
        refs = []
        for line in out.splitlines():
            sha, _, ref = line.partition('\t')
            if _FULL_SHA.match(sha) and ref:
                refs.append((sha, ref))
        return refs

    def _ref_at(self, remote: _Remote, *, revision: str) -> str:
        """A branch (preferred) or tag of the remote whose tip is `revision`."""
        refs = self._ls_remote(remote)
        names = [ref.removesuffix('^{}') for sha, ref in refs
                 if sha == revision and ref.startswith(('refs/heads/', 'refs/tags/'))]
        if not names:
            raise RevisionNotFound(f'commit {revision} not found in {self._show(remote)}')
        return sorted(names, key=lambda ref: (not ref.startswith('refs/heads/'), ref))[0]

    def _expand(self, remote: _Remote, *, prefix: str) -> str:
        """The full SHA of the one commit whose SHA starts with `prefix`."""
        refs = self._ls_remote(remote)
        peeled = {ref.removesuffix('^{}') for _, ref in refs if ref.endswith('^{}')}
        tips = {sha for sha, ref in refs if sha.startswith(prefix) and ref not in peeled}
        if len(tips) == 1:
            return tips.pop()
        with tempfile.TemporaryDirectory(prefix=tempdirs.prefix('resolve')) as tmp:
            self._git(['init', '--quiet', '--bare', '--template=', tmp], remote, timeout=self.ls_remote_timeout)
            self._git(['fetch', '--quiet', '--filter=tree:0', '--no-tags', remote.url,
                       '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*'],
                      remote, timeout=self.fetch_timeout, cwd=pathlib.Path(tmp))
            try:
                return self._run(['rev-parse', '--verify', f'{prefix}^{{commit}}'], remote,
                                 timeout=self.ls_remote_timeout, cwd=pathlib.Path(tmp), action='rev-parse')
            except _GitFailed as failed:
                if failed.stopped:
                    raise self._classify(failed, remote) from None
                which = 'is ambiguous' if 'ambiguous' in failed.stderr else 'not found'
                raise RevisionNotFound(f'commit {prefix} {which} in {self._show(remote)}') from None

    def _fetch(self, args: list[str], remote: _Remote, *, into: pathlib.Path, revision: str) -> None:
        """`git fetch` into `into`; with `max_checkout_bytes`, what it writes is held to that limit as well: the
        server decides what the pack holds, and it comes before the tree can be measured."""
        if self.max_checkout_bytes is None:
            self._run(args, remote, timeout=self.fetch_timeout, cwd=into, action='fetch')
            return
        with gitprocess.DiskWatch(into, limit=self.max_checkout_bytes, cancel=remote.cancel) as watch:
            failed: _GitFailed | None = None
            try:
                self._run(args, dataclasses.replace(remote, cancel=watch.stop), timeout=self.fetch_timeout,
                          cwd=into, action='fetch')
            except _GitFailed as exc:
                failed = exc
            if watch.over or (failed is None and watch.measure_once()):
                raise RepositoryTooLarge(
                    f'fetching {revision[:7]} from {self._show(remote)} wrote over '
                    f'{format_bytes(self.max_checkout_bytes)} to disk, the operator\'s limit for a checkout '
                    '(PANDA_DEPLOY_MAX_CHECKOUT_BYTES): the commit\'s files are larger, or the server sent more '
                    'than the commit; the fetch was stopped')
            if failed is not None:
                raise failed

    def _check_size(self, remote: _Remote, *, revision: str, into: pathlib.Path) -> None:
        """RepositoryTooLarge when the files of `revision` (fetched, not checked out) exceed the limit."""
        assert self.max_checkout_bytes is not None
        listing = self._git(['ls-tree', '-r', '-l', '-z', '--full-tree', revision], remote,
                            timeout=self.ls_remote_timeout, cwd=into)
        size = tree_bytes(listing)
        if size > self.max_checkout_bytes:
            raise RepositoryTooLarge(f'repository {self._show(remote)} at {revision[:7]} has '
                                     f'{format_bytes(size)} of files, over the operator\'s limit of '
                                     f'{format_bytes(self.max_checkout_bytes)} (PANDA_DEPLOY_MAX_CHECKOUT_BYTES)')

    # Running git.

    def _environment(self, *, url: str, token: str | None) -> dict[str, str]:
        """Variables for the git child process only: no prompts, no host config, time limits, the scoped
        credential helper."""
        settings = [('credential.helper', ''), ('core.askPass', ''), ('init.defaultBranch', 'main'),
                    ('maintenance.auto', 'false'), ('gc.auto', '0'),
                    ('http.lowSpeedLimit', str(self.low_speed_limit)),
                    ('http.lowSpeedTime', str(self.low_speed_seconds)), *self.config.items()]
        origin = _http_origin(url)
        if token and origin:
            settings.append((f'credential.{origin.rstrip("/")}.helper', _HELPER))
        alive = max(1, self.low_speed_seconds // 3)
        env = {
            'GIT_TERMINAL_PROMPT': '0', 'GIT_ASKPASS': '', 'SSH_ASKPASS': '',
            'GIT_SSH_COMMAND': f'ssh -o BatchMode=yes -o ConnectTimeout={self.low_speed_seconds} '
                               f'-o ServerAliveInterval={alive} -o ServerAliveCountMax=3',
            'GIT_CONFIG_NOSYSTEM': '1', 'GIT_CONFIG_GLOBAL': '/dev/null',
            'GIT_CONFIG_COUNT': str(len(settings)),
        }
        for index, (key, value) in enumerate(settings):
            env[f'GIT_CONFIG_KEY_{index}'] = key
            env[f'GIT_CONFIG_VALUE_{index}'] = value
        return env

    def _git(self, args: list[str], remote: _Remote, *, timeout: float, cwd: pathlib.Path | None = None) -> str:
        """Run git; a failure becomes the `PandaDeployError` its stderr calls for."""
        try:
            return self._run(args, remote, timeout=timeout, cwd=cwd, action=args[0])
        except _GitFailed as failed:
            raise self._classify(failed, remote) from None

    def _run(self, args: list[str], remote: _Remote, *, timeout: float, cwd: pathlib.Path | None,
             action: str) -> str:
        """Run `git args…` (see gitprocess); its stdout, or `_GitFailed`. The token goes in a pipe (see above)."""
        # C locale: the messages classified above are git's English ones.
        env = {**os.environ, 'LANGUAGE': 'C', 'LC_ALL': 'C', **remote.env}
        read_end = None
        if remote.token and _http_origin(remote.url):
            read_end, write_end = os.pipe()
            with os.fdopen(write_end, 'w') as pipe:  # a few bytes: the pipe's buffer holds them
                pipe.write(f'username={self.token_username}\npassword={remote.token}\n')
            env[_FD_VARIABLE] = str(read_end)
        try:
            # '/' as the default directory: a repository around the operator's cwd must not lend its config.
            finished = gitprocess.run(['git', *args], env=env, cwd=str(cwd) if cwd is not None else '/',
                                      timeout=timeout, cancel=remote.cancel,
                                      pass_fds=(read_end,) if read_end is not None else ())
        except FileNotFoundError:
            raise GitNotInstalled(f"git is not installed: no 'git' executable on the operator's PATH "
                                  f"({env.get('PATH', '')}); the operator's image must include git") from None
        finally:
            if read_end is not None:
                os.close(read_end)
        if finished.stopped is not None or finished.status != 0:
            raise _GitFailed(action=action, status=finished.status, stderr=finished.stderr.strip(),
                             stopped=finished.stopped)
        return finished.stdout.strip()

    def _classify(self, failed: _GitFailed, remote: _Remote) -> PandaDeployError:
        """The run's verdict on a failed git command, as a redacted, specific error."""
        where, token = self._show(remote), remote.token
        detail = summary(redact(failed.stderr, [token] if token else []))
        if failed.stopped == gitprocess.ABANDONED:  # nobody waits for this answer any more
            return StageFailed(f'git {failed.action} of {where} stopped: the stage was abandoned',
                               reason=Reason.CANCELLED)
        if failed.stopped == gitprocess.TIMED_OUT:
            timeout = self.fetch_timeout if failed.action == 'fetch' else self.ls_remote_timeout
            return Transient(f'git {failed.action} of {where} timed out after {timeout:g} seconds',
                             reason=Reason.SOURCE_UNAVAILABLE)
        if failed.stopped == gitprocess.TOO_MUCH_OUTPUT:
            return StageFailed(f'git {failed.action} of {where} stopped: the server sent more than '
                               f'{gitprocess.MAX_STDOUT >> 20} MiB', reason=Reason.SOURCE_UNAVAILABLE)
        if matches(failed.stderr, AUTH_FAILED):
            hint = '' if token else '; no token given (set spec.source.tokenSecretRef for a private repository)'
            return SourceAuthFailed(f'authentication to {where} failed: {detail}{hint}')
        if matches(failed.stderr, NOT_FOUND):
            hint = '' if token or not _http_origin(remote.url) else \
                '; a private repository needs spec.source.tokenSecretRef'
            return SourceNotFound(f'repository {where} not found: {detail}{hint}')
        if matches(failed.stderr, NETWORK):
            return Transient(f'git {failed.action} of {where} failed: {detail}', reason=Reason.SOURCE_UNAVAILABLE)
        return StageFailed(f'git {failed.action} of {where} failed (exit {failed.status}): {detail}',
                           reason=Reason.SOURCE_NOT_FOUND)

    @staticmethod
    def _show(remote: _Remote) -> str:
        return redact(display_url(remote.url), [remote.token] if remote.token else [])


def _check_url(url: str) -> None:
    if not url or url.startswith('-') or url.lower().startswith('ext::'):
        raise SourceNotFound(f'not a usable git URL: {display_url(url)!r}')


def _http_origin(url: str) -> str | None:
    """`scheme://host[:port]/` of an http(s) URL (the header's scope), else None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ('http', 'https') or not parts.hostname:
        return None
    host = parts.hostname if ':' not in parts.hostname else f'[{parts.hostname}]'
    port = f':{parts.port}' if parts.port else ''
    return f'{parts.scheme.lower()}://{host}{port}/'


__all__ = ['GitNotInstalled', 'GitRepository', 'RepositoryTooLarge', 'RevisionNotFound', 'SourceAuthFailed',
           'SourceNotFound', 'display_url', 'tree_bytes']
