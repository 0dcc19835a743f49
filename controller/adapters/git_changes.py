"""Following a branch: its head without a clone, and whether a new head touches the paths a resource watches.

Why it is built this way:

- The head is one `git ls-remote <url> refs/heads/<branch>` through the same
  plumbing as a run's resolve (`GitRepository`: the token only to allowed
  hosts and only through a pipe, no prompts, a deadline, capped output, the
  whole process tree killed). A follower asks often, so its deadline is short.
- Whether a new head changes a watched path is a tree comparison of the
  commit last deployed with the new head: `git diff-tree` with the patterns
  as git's own glob pathspecs. That needs the two commits' trees and no file
  contents, so it fetches exactly those two commits, one level deep and
  without blobs (`--depth 1 --filter=blob:none`; a server that does not
  filter sends blobs, which costs bytes, not correctness), into a temporary
  bare repository that is gone afterwards. Comparing trees, not walking
  history, stays right after a force-push: what is deployed is the old
  commit's tree, whatever the history between them.
- What the fetch writes is watched: over `max_compare_bytes` on disk (a
  server that ignores the filter and sends every file of a huge commit) the
  fetch is stopped and the answer is None, as below. The watch looks every
  `gitprocess.WATCH_SECONDS` and once more when the fetch ends, so a fetch that beats
  its poll is over the limit all the same; what lands on disk meanwhile is
  at most what the network brings in that tenth of a second, and the
  temporary repository is removed at once.
- When the old commit cannot be fetched (a force-push and the server's
  garbage collection removed it, or a server that refuses commits by SHA),
  nothing can be proved unchanged: the answer is None and the caller deploys.
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
import tempfile
import threading
from collections.abc import Sequence

from controller import tempdirs
from controller.adapters import gitprocess
from controller.adapters.git import GitRepository, _GitFailed
from controller.adapters.git_failures import RevisionNotFound
from controller.egress import GitHosts

_FULL_SHA = re.compile(r'^[0-9a-f]{40}$')
MAX_COMPARE_BYTES = 256 << 20  # two commits' trees of a very large monorepo fit; a server sending files may not
logger = logging.getLogger(__name__)


class BranchWatcher(GitRepository):
    """`head` of a branch by `git ls-remote`; `touches` tells whether a new head changes watched paths."""

    def __init__(self, *, token_hosts: GitHosts | None = None, ls_remote_timeout: float = 20.0,
                 fetch_timeout: float = 60.0, max_compare_bytes: int = MAX_COMPARE_BYTES) -> None:
        """`max_compare_bytes`: the most the two commits' trees may take on disk (a server may ignore the
        filter and send every file); beyond it the fetch is stopped and the answer is None."""
        super().__init__(token_hosts=token_hosts, ls_remote_timeout=ls_remote_timeout, fetch_timeout=fetch_timeout)
        self.max_compare_bytes = max_compare_bytes

    def head(self, *, url: str, branch: str, token: str | None, cancel: threading.Event | None = None) -> str:
        """The commit at the tip of `branch` on the remote (`RevisionNotFound` when there is no such branch)."""
        return self.resolve(url=url, branch=branch, revision=None, token=token, cancel=cancel)

    def touches(self, *, url: str, old: str, new: str, patterns: Sequence[str], token: str | None,
                cancel: threading.Event | None = None) -> bool | None:
        """Whether any file matching `patterns` differs between the trees of `old` and `new`; None when
        that cannot be told (`old` is not to be had from the remote any more)."""
        if not (_FULL_SHA.match(old) and _FULL_SHA.match(new)):
            raise RevisionNotFound(f'touches needs full commit SHAs, not {old!r} and {new!r}')
        remote = self._remote(url, token, cancel)
        with tempfile.TemporaryDirectory(prefix=tempdirs.prefix('changes')) as tmp:
            where = pathlib.Path(tmp)
            self._git(['init', '--quiet', '--bare', '--template=', tmp], remote, timeout=self.ls_remote_timeout)
            with gitprocess.DiskWatch(where, limit=self.max_compare_bytes, cancel=cancel) as watch:
                fetch_failed: _GitFailed | None = None
                try:
                    self._run(['fetch', '--quiet', '--depth', '1', '--filter=blob:none', '--no-tags',
                               '--no-recurse-submodules', url, new, old], dataclasses.replace(remote, cancel=watch.stop),
                              timeout=self.fetch_timeout, cwd=where, action='fetch')
                except _GitFailed as exc:
                    fetch_failed = exc
                if watch.over or (fetch_failed is None and watch.measure_once()):  # a fetch faster than a poll, too
                    logger.info('comparing %s with %s: over %d bytes on disk, not compared', new[:7], old[:7],
                                self.max_compare_bytes)
                    return None
                if fetch_failed is not None:
                    if fetch_failed.stopped:
                        raise self._classify(fetch_failed, remote) from None
                    return None  # one of them is not to be had (the old one, after a force-push): not proved
            pathspecs = [f':(glob){pattern}' for pattern in patterns]
            try:
                self._run(['diff-tree', '--quiet', '-r', '--no-renames', old, new, '--', *pathspecs], remote,
                          timeout=self.ls_remote_timeout, cwd=where, action='diff-tree')
            except _GitFailed as failed:
                if failed.stopped is None and failed.status == 1:  # --quiet: 1 means they differ
                    return True
                raise self._classify(failed, remote) from None
            return False
