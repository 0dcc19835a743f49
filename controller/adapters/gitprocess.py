"""One git process, bounded: its own session, a deadline, cancellation, capped output, the whole tree killed.

Why it is built this way:

- git is a tree of processes (git, git-remote-http(s), the credential
  helper's shell, ssh). Killing git alone leaves its helper waiting on a
  server that never answers, and an abandoned call would hold a worker
  thread as long as that server likes. So each git starts in a session of
  its own (its own process group), and ending it is SIGKILL to that whole
  group: no `ps`, no walking the tree.
- A call ends at its deadline, or within `POLL_SECONDS` of `cancel` being
  set: the engine sets it when it gives up on a stage (timed out, superseded,
  deleted), so the worker and the temporary checkout come back at once.
- Output is read as it comes, never all at once: stdout up to `MAX_STDOUT`
  (an endless ref list from a hostile server ends the call, not the
  operator's memory), and the last `MAX_STDERR` bytes of stderr (git says
  what went wrong at the end).
- What a call writes to disk can be bounded too (`DiskWatch`): it is
  measured every `WATCH_SECONDS` and when the call ends, and over its limit
  the call is stopped like an abandoned one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

MAX_STDOUT = 32 << 20
MAX_STDERR = 64 << 10
POLL_SECONDS = 0.2
WATCH_SECONDS = 0.1  # DiskWatch's pace

ABANDONED = 'abandoned'
TIMED_OUT = 'timed out'
TOO_MUCH_OUTPUT = 'too much output'


@dataclasses.dataclass(frozen=True)
class Finished:
    """How one git process ended: its exit status, or why it was killed (`stopped`)."""
    status: int | None
    stdout: str
    stderr: str
    stopped: str | None = None


def spawn(argv: Sequence[str], *, env: Mapping[str, str], cwd: str,
          pass_fds: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start `argv` in a session of its own (FileNotFoundError when the executable is missing)."""
    return subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=tuple(pass_fds), start_new_session=True)


def run(argv: Sequence[str], *, env: Mapping[str, str], cwd: str, timeout: float,
        cancel: threading.Event | None = None, pass_fds: Sequence[int] = ()) -> Finished:
    """Run `argv` to its end, its deadline (`timeout` seconds) or `cancel`, whichever comes first."""
    process = spawn(argv, env=env, cwd=cwd, pass_fds=pass_fds)
    try:
        out, err, stopped = _collect(process, deadline=time.monotonic() + timeout, cancel=cancel)
        if stopped is not None:
            _kill_group(process)
    finally:
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    return Finished(status=None if stopped else process.returncode, stdout=out.decode(errors='replace'),
                    stderr=err.decode(errors='replace'), stopped=stopped)


def _why_stop(*, deadline: float, cancel: threading.Event | None, out: bytearray) -> str | None:
    if cancel is not None and cancel.is_set():
        return ABANDONED
    if time.monotonic() >= deadline:
        return TIMED_OUT
    return TOO_MUCH_OUTPUT if len(out) > MAX_STDOUT else None


def _collect(process: subprocess.Popen[bytes], *, deadline: float,
             cancel: threading.Event | None) -> tuple[bytes, bytes, str | None]:
    """(stdout, stderr, why it was stopped or None): read both pipes until they close, then wait for the exit."""
    out, err = bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, out)  # type: ignore[arg-type]
        selector.register(process.stderr, selectors.EVENT_READ, err)  # type: ignore[arg-type]
        while selector.get_map():
            if (stopped := _why_stop(deadline=deadline, cancel=cancel, out=out)) is not None:
                return bytes(out), bytes(err), stopped
            for key, _ in selector.select(timeout=min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))):
                chunk = os.read(key.fd, 1 << 16)
                if chunk:
                    key.data.extend(chunk)
                else:
                    selector.unregister(key.fileobj)
            del err[:-MAX_STDERR]
    while True:  # the pipes are closed: git is exiting (or a child of its closed them)
        if (stopped := _why_stop(deadline=deadline, cancel=cancel, out=out)) is not None:
            return bytes(out), bytes(err), stopped
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=POLL_SECONDS)
            return bytes(out), bytes(err), None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to git's whole process group, then reap git (not reaped before: the group id is still its)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class DiskWatch:
    """Sets `stop` (a git call's cancel) when `where` grows over `limit` bytes or the caller cancels: what a
    server sends is bounded on disk, not only in time. It looks every `WATCH_SECONDS`; `measure_once` when the
    call ends catches a call faster than that."""

    def __init__(self, where: pathlib.Path, *, limit: int, cancel: threading.Event | None) -> None:
        self.where, self.limit, self.cancel = where, limit, cancel
        self.stop, self.over, self._done = threading.Event(), False, threading.Event()
        self._thread = threading.Thread(target=self._watch, name='git-disk-watch', daemon=True)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(WATCH_SECONDS):
            if self.cancel is not None and self.cancel.is_set():
                self.stop.set()
            else:
                self.measure_once()

    def measure_once(self) -> bool:
        """Whether `where` is over the limit now (or was seen so); stops the git call when it is."""
        if not self.over and _bytes_under(self.where) > self.limit:
            self.over = True
            self.stop.set()
        return self.over


def _bytes_under(root: pathlib.Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
