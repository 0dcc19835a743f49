"""Git through the real git binary: resolve a branch to a commit, shallow-clone exactly that commit.

Why it is built this way:

- The real `git` (driven by gitpython's `Git.execute`) speaks every transport
  and protocol version the remote may want, including shallow fetches by SHA,
  which is what GitHub serves fastest; we only classify its failures.
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
  call would hold a worker forever.
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
"""
from __future__ import annotations

import logging
import os
import pathlib
import re
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from git.cmd import Git as GitCommand
from git.exc import GitCommandError, GitCommandNotFound

from controller import tempdirs
from controller.credentials import redact
from controller.errors import PandaDeployError, Reason, StageFailed, Transient, format_bytes

logger = logging.getLogger(__name__)

_FULL_SHA = re.compile(r'^[0-9a-f]{40}$')
_SHORT_SHA = re.compile(r'^[0-9a-f]{4,39}$')

# Substrings of git's stderr (lower-cased, LC_ALL=C) and what they mean.
_AUTH_FAILED = (
    'authentication failed', 'could not read username', 'could not read password',
    'terminal prompts disabled', 'returned error: 401', 'returned error: 403',
    'invalid username or password', 'permission denied', 'access denied', 'bad credentials',
)
_NOT_FOUND = (
    'does not appear to be a git repository', 'repository not found', 'returned error: 404',
    'not valid: is this a git repository', "' not found",
)
_NETWORK = (
    'timed out', 'timeout', 'connection reset', 'connection refused', 'connection closed',
    'could not resolve host', 'temporary failure in name resolution', 'failed to connect',
    'early eof', 'rpc failed', 'unexpected disconnect', 'the remote end hung up',
    'returned error: 5', 'returned error: 429', 'ssl_error', 'gnutls', 'network is unreachable',
    'empty reply from server', 'transfer closed',
)
# The server will not hand out a commit by its SHA (or does not have it).
_SHA_REFUSED = ('not our ref', 'unadvertised object', "couldn't find remote ref", 'no such remote ref')

# The credential helper: for `get`, print what the inherited pipe holds; `store` and `erase` do nothing.
# Only the pipe's file descriptor number travels in the environment.
_FD_VARIABLE = 'PANDA_DEPLOY_GIT_CREDENTIAL_FD'
_HELPER = ('!f() { cat >/dev/null; test "$1" = get && test -n "$%s" && cat "/dev/fd/$%s"; }; f'
           % (_FD_VARIABLE, _FD_VARIABLE))


class SourceNotFound(StageFailed):
    reason = Reason.SOURCE_NOT_FOUND


class RevisionNotFound(StageFailed):
    reason = Reason.REVISION_NOT_FOUND


class SourceAuthFailed(StageFailed):
    reason = Reason.SOURCE_AUTH_FAILED


class RepositoryTooLarge(StageFailed):
    reason = Reason.REPOSITORY_TOO_LARGE


class _GitFailed(Exception):
    """One git command exited non-zero (internal: classified by the caller)."""

    def __init__(self, *, action: str, status: object, stderr: str, timed_out: bool) -> None:
        super().__init__(f'git {action} exited {status}')
        self.action, self.status, self.stderr, self.timed_out = action, status, stderr, timed_out


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
                 max_checkout_bytes: int | None = None) -> None:
        """`config`: extra git settings for every call (e.g. `http.sslCAInfo`, `http.proxy`), never secrets;
        `max_checkout_bytes`: the most a commit's files may add up to (RepositoryTooLarge above it)."""
        self.max_checkout_bytes = max_checkout_bytes
        self.fetch_timeout = fetch_timeout
        self.ls_remote_timeout = ls_remote_timeout
        self.token_username = token_username
        self.config = dict(config or {})

    # The protocol.

    def resolve(self, *, url: str, branch: str | None, revision: str | None, token: str | None) -> str:
        """The commit SHA `revision` or `branch` names on the remote; also the connection and token check.

        A full SHA is returned as given once the remote answers (checkout tells
        whether it exists). An abbreviated SHA is expanded: from the remote's
        branch and tag tips when exactly one matches, else from a commits-only
        (`--filter=tree:0`) fetch into a temporary directory. Neither branch
        nor revision: the remote's default branch (HEAD).
        """
        _check_url(url)
        if revision:
            revision = revision.lower()
            if _FULL_SHA.match(revision):
                self._ls_remote(url=url, token=token, patterns=['HEAD'])
                return revision
            if not _SHORT_SHA.match(revision):
                raise RevisionNotFound(f'revision {revision!r} is not a commit SHA')
            return self._expand(url=url, token=token, prefix=revision)
        name = f'refs/heads/{branch}' if branch else 'HEAD'
        refs = self._ls_remote(url=url, token=token, patterns=[name])
        for sha, ref in refs:
            if ref == name:
                return sha
        if branch:
            raise RevisionNotFound(f'branch {branch!r} not found in {self._show(url, token)}')
        raise RevisionNotFound(f'{self._show(url, token)} has no default branch (empty repository?)')

    def checkout(self, *, url: str, revision: str, token: str | None, into: pathlib.Path) -> None:
        """Shallow clone (depth 1) of exactly `revision` into the empty directory `into`, detached at it.

        Fetches the commit by SHA; a server that refuses that (protocol v0
        without `allowReachableSHA1InWant`) gets a shallow fetch of a branch
        or tag whose tip is that commit instead.
        """
        _check_url(url)
        if not _FULL_SHA.match(revision):
            raise ValueError(f'checkout needs a full commit SHA, not {revision!r} (resolve it first)')
        into.mkdir(parents=True, exist_ok=True)
        if any(into.iterdir()):
            raise ValueError(f'checkout directory {into} is not empty')
        env = self._environment(url=url, token=token)
        self._git(['init', '--quiet', '--template=', str(into)], env=env, timeout=self.ls_remote_timeout,
                  url=url, token=token)
        fetch = ['fetch', '--quiet', '--depth', '1', '--no-tags', '--no-recurse-submodules', url]
        try:
            self._run(fetch + [revision], env=env, timeout=self.fetch_timeout, cwd=into, action='fetch',
                      url=url, token=token)
        except _GitFailed as failed:
            if failed.timed_out or not _matches(failed.stderr, _SHA_REFUSED):
                raise self._classify(failed, url=url, token=token) from None
            logger.debug('fetch by SHA refused by %s; looking for a ref at %s', self._show(url, token), revision)
            ref = self._ref_at(url=url, token=token, revision=revision)
            self._git(fetch + [ref], env=env, timeout=self.fetch_timeout, cwd=into, url=url, token=token)
            fetched = self._git(['rev-parse', '--verify', 'FETCH_HEAD^{commit}'], env=env,
                                timeout=self.ls_remote_timeout, cwd=into, url=url, token=token)
            if fetched != revision:
                raise RevisionNotFound(f'{ref} moved from {revision[:12]} to {fetched[:12]} in '
                                       f'{self._show(url, token)} while fetching; the server refuses '
                                       'fetching commits by SHA') from None
        if self.max_checkout_bytes is not None:
            self._check_size(url=url, token=token, revision=revision, into=into, env=env)
        self._git(['-c', 'advice.detachedHead=false', 'checkout', '--quiet', '--detach', revision], env=env,
                  timeout=self.fetch_timeout, cwd=into, url=url, token=token)
        head = self._git(['rev-parse', 'HEAD'], env=env, timeout=self.ls_remote_timeout, cwd=into,
                         url=url, token=token)
        if head != revision:
            raise RevisionNotFound(f'checkout of {self._show(url, token)} ended at {head[:12]}, not {revision[:12]}')
        logger.debug('checked out %s at %s into %s', self._show(url, token), revision, into)

    # Steps.

    def _ls_remote(self, *, url: str, token: str | None, patterns: Sequence[str] = ()) -> list[tuple[str, str]]:
        """(sha, ref) pairs the remote advertises (exact names only for `patterns`: git matches their tails)."""
        env = self._environment(url=url, token=token)
        out = self._git(['ls-remote', url, *patterns], env=env, timeout=self.ls_remote_timeout, url=url, token=token)
        refs = []
        for line in out.splitlines():
            sha, _, ref = line.partition('\t')
            if _FULL_SHA.match(sha) and ref:
                refs.append((sha, ref))
        return refs

    def _ref_at(self, *, url: str, token: str | None, revision: str) -> str:
        """A branch (preferred) or tag of the remote whose tip is `revision`."""
        refs = self._ls_remote(url=url, token=token)
        names = [ref.removesuffix('^{}') for sha, ref in refs
                 if sha == revision and ref.startswith(('refs/heads/', 'refs/tags/'))]
        if not names:
            raise RevisionNotFound(f'commit {revision} not found in {self._show(url, token)}')
        return sorted(names, key=lambda ref: (not ref.startswith('refs/heads/'), ref))[0]

    def _expand(self, *, url: str, token: str | None, prefix: str) -> str:
        """The full SHA of the one commit whose SHA starts with `prefix`."""
        refs = self._ls_remote(url=url, token=token)
        peeled = {ref.removesuffix('^{}') for _, ref in refs if ref.endswith('^{}')}
        tips = {sha for sha, ref in refs if sha.startswith(prefix) and ref not in peeled}
        if len(tips) == 1:
            return tips.pop()
        env = self._environment(url=url, token=token)
        with tempfile.TemporaryDirectory(prefix=tempdirs.prefix('resolve')) as tmp:
            self._git(['init', '--quiet', '--bare', '--template=', tmp], env=env, timeout=self.ls_remote_timeout,
                      url=url, token=token)
            self._git(['fetch', '--quiet', '--filter=tree:0', '--no-tags', url,
                       '+refs/heads/*:refs/heads/*', '+refs/tags/*:refs/tags/*'],
                      env=env, timeout=self.fetch_timeout, cwd=pathlib.Path(tmp), url=url, token=token)
            try:
                return self._run(['rev-parse', '--verify', f'{prefix}^{{commit}}'], env=env,
                                 timeout=self.ls_remote_timeout, cwd=pathlib.Path(tmp), action='rev-parse')
            except _GitFailed as failed:
                which = 'is ambiguous' if 'ambiguous' in failed.stderr else 'not found'
                raise RevisionNotFound(f'commit {prefix} {which} in {self._show(url, token)}') from None

    def _check_size(self, *, url: str, token: str | None, revision: str, into: pathlib.Path,
                    env: Mapping[str, str]) -> None:
        """RepositoryTooLarge when the files of `revision` (fetched, not checked out) exceed the limit."""
        assert self.max_checkout_bytes is not None
        listing = self._git(['ls-tree', '-r', '-l', '-z', '--full-tree', revision], env=env,
                            timeout=self.ls_remote_timeout, cwd=into, url=url, token=token)
        size = tree_bytes(listing)
        if size > self.max_checkout_bytes:
            raise RepositoryTooLarge(f'repository {self._show(url, token)} at {revision[:7]} has '
                                     f'{format_bytes(size)} of files, over the operator\'s limit of '
                                     f'{format_bytes(self.max_checkout_bytes)} (PANDA_DEPLOY_MAX_CHECKOUT_BYTES)')

    # Running git.

    def _environment(self, *, url: str, token: str | None) -> dict[str, str]:
        """Variables for the git child process only: no prompts, no host config, the scoped credential helper."""
        settings = [('credential.helper', ''), ('core.askPass', ''), ('init.defaultBranch', 'main'),
                    ('maintenance.auto', 'false'), ('gc.auto', '0'), *self.config.items()]
        origin = _http_origin(url)
        if token and origin:
            settings.append((f'credential.{origin.rstrip("/")}.helper', _HELPER))
        env = {
            'GIT_TERMINAL_PROMPT': '0', 'GIT_ASKPASS': '', 'SSH_ASKPASS': '',
            'GIT_SSH_COMMAND': 'ssh -o BatchMode=yes',
            'GIT_CONFIG_NOSYSTEM': '1', 'GIT_CONFIG_GLOBAL': '/dev/null',
            'GIT_CONFIG_COUNT': str(len(settings)),
        }
        for index, (key, value) in enumerate(settings):
            env[f'GIT_CONFIG_KEY_{index}'] = key
            env[f'GIT_CONFIG_VALUE_{index}'] = value
        return env

    def _git(self, args: list[str], *, env: Mapping[str, str], timeout: float, url: str, token: str | None,
             cwd: pathlib.Path | None = None) -> str:
        """Run git; a failure becomes the `PandaDeployError` its stderr calls for."""
        try:
            return self._run(args, env=env, timeout=timeout, cwd=cwd, action=args[0], url=url, token=token)
        except _GitFailed as failed:
            raise self._classify(failed, url=url, token=token) from None

    def _run(self, args: list[str], *, env: Mapping[str, str], timeout: float, cwd: pathlib.Path | None,
             action: str, url: str | None = None, token: str | None = None) -> str:
        """Run `git args…` with a timeout; its stdout, or `_GitFailed`. The token goes in a pipe (see above)."""
        # '/' as the default directory: a repository around the operator's cwd must not lend its config.
        runner = GitCommand(str(cwd) if cwd is not None else '/')
        env, read_end = dict(env), None
        extra: dict[str, Any] = {}
        if token and url and _http_origin(url):
            read_end, write_end = os.pipe()
            with os.fdopen(write_end, 'w') as pipe:  # a few bytes: the pipe's buffer holds them
                pipe.write(f'username={self.token_username}\npassword={token}\n')
            env[_FD_VARIABLE] = str(read_end)
            extra = {'pass_fds': (read_end,)}
        try:
            out = runner.execute(['git', *args], env=env, kill_after_timeout=timeout, **extra)
        except GitCommandNotFound:
            raise StageFailed('the git executable was not found on PATH') from None
        except GitCommandError as exc:
            stderr = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or '')
            stderr = stderr.strip().removeprefix("stderr: '").removesuffix("'")
            timed_out = 'did not complete in' in stderr or exc.status == -9
            raise _GitFailed(action=action, status=exc.status, stderr=stderr, timed_out=timed_out) from None
        finally:
            if read_end is not None:
                os.close(read_end)
        return str(out).strip()

    def _classify(self, failed: _GitFailed, *, url: str, token: str | None) -> PandaDeployError:
        """The run's verdict on a failed git command, as a redacted, specific error."""
        where = self._show(url, token)
        detail = _summary(redact(failed.stderr, [token] if token else []))
        if failed.timed_out:
            timeout = self.fetch_timeout if failed.action == 'fetch' else self.ls_remote_timeout
            return Transient(f'git {failed.action} of {where} timed out after {timeout:g} seconds',
                             reason=Reason.SOURCE_NOT_FOUND)
        if _matches(failed.stderr, _AUTH_FAILED):
            hint = '' if token else '; no token given (set spec.source.tokenSecretRef for a private repository)'
            return SourceAuthFailed(f'authentication to {where} failed: {detail}{hint}')
        if _matches(failed.stderr, _NOT_FOUND):
            hint = '' if token or not _http_origin(url) else '; a private repository needs spec.source.tokenSecretRef'
            return SourceNotFound(f'repository {where} not found: {detail}{hint}')
        if _matches(failed.stderr, _NETWORK):
            return Transient(f'git {failed.action} of {where} failed: {detail}', reason=Reason.SOURCE_NOT_FOUND)
        return StageFailed(f'git {failed.action} of {where} failed (exit {failed.status}): {detail}',
                           reason=Reason.SOURCE_NOT_FOUND)

    @staticmethod
    def _show(url: str, token: str | None) -> str:
        return redact(display_url(url), [token] if token else [])


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


def tree_bytes(listing: str) -> int:
    """What the files in `git ls-tree -r -l -z` output (`mode type object size\tpath` entries) cost checked
    out, counted as a tar counts them: each its size rounded up to 512 bytes, plus 512 (a million empty
    files are not free)."""
    total = 0
    for entry in listing.split('\0'):
        fields = entry.partition('\t')[0].split()
        if len(fields) == 4 and fields[1] == 'blob' and fields[3].isdigit():
            total += 512 + -(-int(fields[3]) // 512) * 512
    return total


def _matches(text: str, needles: Sequence[str]) -> bool:
    lowered = text.lower()
    return any(needle in lowered for needle in needles)


def _summary(stderr: str, *, limit: int = 300) -> str:
    """git's own lines that say what went wrong, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    telling = [line for line in lines if line.lower().startswith(('fatal:', 'error:', 'remote:'))] or lines
    text = '; '.join(dict.fromkeys(telling)) or 'no error output'
    return text if len(text) <= limit else text[:limit - 1] + '…'
