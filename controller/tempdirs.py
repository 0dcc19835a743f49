"""The operator's temporary directories, and removing the ones a killed operator left behind.

Stage 1 clones into a `tempfile.TemporaryDirectory` (and resolving a short SHA
fetches into one), removed when the work ends -- but not when the operator is
killed mid-clone or mid-build (SIGKILL, OOM, a node drained hard): then a
checkout stays in the temporary directory for good (in a pod, an emptyDir on
/tmp outlives container restarts). So each directory's name carries the id of
the process that made it, `panda-deploy-src-<pid>-…`, and the operator, at
startup, removes those whose process is gone.

Several operators (or `panda-deploy run`s) may share one temporary directory:
a live process's directories are left alone. The starting process's own pid
counts as gone: in a container the operator is pid 1 after every restart, and
at startup it has made no directory yet -- which is why `remove_stale` is for
startup only.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import tempfile

KINDS = ('src', 'resolve', 'changes')
_NAME = re.compile(r'^panda-deploy-(?:src|resolve)-(\d+)-')


def prefix(kind: str) -> str:
    """The `tempfile` prefix of a directory of `kind` ('src': a checkout, 'resolve': a SHA lookup)."""
    if kind not in KINDS:
        raise ValueError(f'unknown temporary directory kind {kind!r}; one of {", ".join(KINDS)}')
    return f'panda-deploy-{kind}-{os.getpid()}-'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale(root: str | os.PathLike[str] | None = None) -> list[pathlib.Path]:
    """At startup: remove the directories under `root` (default: tempfile's) made by processes that are gone."""
    base = pathlib.Path(root if root is not None else tempfile.gettempdir())
    removed: list[pathlib.Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    me = os.getpid()
    for entry in entries:
        found = _NAME.match(entry.name)
        if found is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(found.group(1))
        if pid != me and pid > 0 and _alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed
