"""The build context as the Docker engine gets it: a tar of the context directory minus `.dockerignore`
matches, packed here, bounded, into a file.

Why not the SDK's `build(path=…)`: it reads `.dockerignore` whole into memory
(a `.dockerignore` linked to `/dev/zero` grew the operator to 23 GB) and tars
whatever the directory holds, of any size. Here:

- the patterns mean what they mean to docker-py and the docker CLI: the
  SDK's own `PatternMatcher` decides, the Dockerfile and `.dockerignore` are
  always sent;
- `.dockerignore` is read through no symlink (`O_NOFOLLOW`) and at most
  `DOCKERIGNORE_LIMIT` bytes of it;
- no link is followed: a symlink is sent as a symlink (as Docker does), a
  regular file is opened with `O_NOFOLLOW`, anything else is left out;
- the tar's size (headers included) is counted as it is written; past
  `max_bytes` nothing more is written and the rest is only measured, so that
  the message gives the size and the limit.

The tar goes to an unnamed temporary file (in TMPDIR, gone when closed or
when the process dies), which the SDK streams to the engine: memory stays
flat whatever the context's size.
"""
from __future__ import annotations

import errno
import os
import pathlib
import stat
import tarfile
from collections.abc import Iterator
from typing import BinaryIO

from docker.utils.build import PatternMatcher

from controller.errors import Reason, StageFailed, format_bytes

DOCKERIGNORE = '.dockerignore'
DOCKERIGNORE_LIMIT = 1024 ** 2
_BLOCK = tarfile.BLOCKSIZE
_END = 2 * _BLOCK  # the two zero blocks that end a tar


class ContextTooLarge(StageFailed):
    reason = Reason.CONTEXT_TOO_LARGE

    def __init__(self, *, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(f'build context is {format_bytes(size)} (as sent to the Docker engine, after '
                         f'{DOCKERIGNORE}), over the operator\'s limit of {format_bytes(limit)} '
                         '(PANDA_DEPLOY_MAX_CONTEXT_BYTES); keep files out of it with .dockerignore')


def dockerignore_patterns(context: pathlib.Path) -> list[str]:
    """The context's `.dockerignore` patterns, read as docker-py reads them (no comments, no blank lines)."""
    try:
        fd = os.open(context / DOCKERIGNORE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _unreadable(DOCKERIGNORE, exc) from None
    with os.fdopen(fd, 'rb') as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StageFailed(f'{DOCKERIGNORE} of the build context is not a regular file',
                              reason=Reason.SYMLINK_NOT_ALLOWED)
        content = file.read(DOCKERIGNORE_LIMIT + 1)
    if len(content) > DOCKERIGNORE_LIMIT:
        raise StageFailed(f'{DOCKERIGNORE} of the build context is over {format_bytes(DOCKERIGNORE_LIMIT)}',
                          reason=Reason.CONTEXT_TOO_LARGE)
    lines = [line.strip() for line in content.decode('utf-8', 'replace').splitlines()]
    return [line for line in lines if line and not line.startswith('#')]


def context_entries(context: pathlib.Path, *, dockerfile: str) -> Iterator[str]:
    """Paths (relative to `context`) the engine gets: all but `.dockerignore` matches; never inside a link."""
    matcher = PatternMatcher([*dockerignore_patterns(context), f'!{dockerfile}'])
    yield from matcher.walk(str(context))  # enters no linked directory


def pack_context(context: pathlib.Path, *, dockerfile: str, max_bytes: int, into: BinaryIO) -> int:
    """Write the tar of `context` for a build with `dockerfile` into `into`; its size in bytes.

    ContextTooLarge when it would exceed `max_bytes` (with the whole size measured)."""
    size = _END
    with tarfile.open(fileobj=into, mode='w') as tar:
        for relative in context_entries(context, dockerfile=dockerfile):
            path = context / relative
            info = tar.gettarinfo(str(path), arcname=relative)  # lstat: a link stays a link
            if info is None or not (info.isfile() or info.isdir() or info.issym()):
                continue  # sockets, pipes, devices: nothing git checks out
            size += len(info.tobuf(tar.format, tar.encoding, tar.errors)) + _padded(info.size if info.isfile() else 0)
            if size > max_bytes:
                continue  # measured only: the message gives the whole size
            if info.isfile():
                with _open_regular(path) as file:
                    tar.addfile(info, file)
            else:
                tar.addfile(info)
    if size > max_bytes:
        raise ContextTooLarge(size=size, limit=max_bytes)
    return size


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def _open_regular(path: pathlib.Path) -> BinaryIO:
    """`path` opened for reading, refusing a symlink put there since it was listed."""
    try:
        return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), 'rb')
    except OSError as exc:
        raise _unreadable(path.name, exc) from None


def _unreadable(name: str, error: OSError) -> StageFailed:
    if error.errno == errno.ELOOP:
        return StageFailed(f'{name} in the build context is a symlink; the build reads no file through a symlink',
                           reason=Reason.SYMLINK_NOT_ALLOWED)
    return StageFailed(f'{name} in the build context cannot be read: {error.strerror}', reason=Reason.BUILD_FAILED)
