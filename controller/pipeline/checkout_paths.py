"""What Build reads from a checkout stays inside it: nothing read through a symlink, no link leading out.

A repository is a stranger's input, and git checks symlinks out as symlinks
that may point anywhere on the operator's machine: `/dev/zero` (a
`.dockerignore` read for ever), the service account token under
`/var/run/secrets`, `..` (the clone's parent). So:

- the Dockerfile, `.dockerignore` and the build context directory must not
  be symlinks, nor lie under one: they are read (or tarred) through the path;
- a symlink anywhere inside the context must resolve inside the clone.
  Docker sends links in a context as links (it never follows them), so links
  within the repository are legitimate and stay.

The Docker adapter then packs the context without following any link (see
`controller/adapters/build_context.py`).
"""
from __future__ import annotations

import os
import pathlib

from controller.errors import Reason, StageFailed

DOCKERIGNORE = '.dockerignore'


def _symlink(path: pathlib.Path, root: pathlib.Path) -> StageFailed:
    return StageFailed(f'{str(path.relative_to(root))!r} is a symlink to {os.readlink(path)}',
                       reason=Reason.SYMLINK_NOT_ALLOWED)


def refuse_symlink_on_path(root: pathlib.Path, relative: str, *, what: str) -> None:
    """`relative` (a path under `root`) and each directory above it must not be symlinks."""
    current = root
    for part in pathlib.PurePosixPath(relative).parts:
        current = current / part
        if current.is_symlink():
            link = _symlink(current, root)
            raise StageFailed(f'{what} {relative!r} is read through a symlink: {link.message}; '
                              'the build reads no file or directory through a symlink', reason=link.reason)


def check_context_links(root: pathlib.Path, context: str) -> None:
    """The context's `.dockerignore` is no symlink, and every symlink in the context resolves inside `root`."""
    directory = root / context
    if (directory / DOCKERIGNORE).is_symlink():
        link = _symlink(directory / DOCKERIGNORE, root)
        raise StageFailed(f'{DOCKERIGNORE} of the build context {context!r}: {link.message}; '
                          'the build reads no file through a symlink', reason=link.reason)
    inside = os.path.realpath(root)
    for parent, directories, files in os.walk(directory):  # links to directories are listed, never entered
        for name in (*directories, *files):
            path = pathlib.Path(parent, name)
            if path.is_symlink() and not _within(os.path.realpath(path), inside):
                link = _symlink(path, root)
                raise StageFailed(f'{link.message} in the build context {context!r}, which resolves outside the '
                                  'repository; links in a build context must stay inside the repository',
                                  reason=link.reason)


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip('/') + '/')
