"""A build's output as it streams from the Docker engine: whole lines, each bounded, and what is kept of them.

The output is a stranger's (the repository's `RUN` steps print what they
like), so nothing here grows with it: a line keeps at most `LINE_LIMIT`
characters however long it runs without a newline, the failure message keeps
the last lines only, and the output's size is counted so that the engine
adapter can stop a build that passes its limit.
"""
from __future__ import annotations

import collections
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from controller.adapters import LogLine
from controller.credentials import redact
from controller.models import cap_message

LINE_LIMIT = 4096  # characters kept of one line of build output
_RUNNING_IN = re.compile(r'^ ---> Running in ([0-9a-f]{12,64})\s*$')
# Terminal colour codes (the engine wraps a step's stderr in them) and other control characters: kept out
# of the log tail, which becomes the status message and Event of a failed build.
_TERMINAL_CODES = re.compile(r'\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]')


class Lines:
    """Reassembles whole lines from stream fragments, keeping at most `limit` characters of each."""

    def __init__(self, limit: int = LINE_LIMIT) -> None:
        self._limit = limit
        self._partial = ''
        self._cut = 0  # characters of the current line dropped past the limit

    def feed(self, text: str) -> Iterator[str]:
        *whole, rest = text.split('\n')
        for piece in whole:
            self._add(piece)
            line = self._take()
            if line.strip():
                yield line
        self._add(rest)

    def rest(self) -> Iterator[str]:
        line = self._take()
        if line.strip():
            yield line

    def _add(self, piece: str) -> None:
        room = max(0, self._limit - len(self._partial))
        self._partial += piece[:room]
        self._cut += max(0, len(piece) - room)

    def _take(self) -> str:
        line, cut = self._partial.rstrip('\r'), self._cut
        self._partial, self._cut = '', 0
        return f'{line} … [{cut} characters cut]' if cut else line


class StepContainer:
    """The container of the build step now running (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._id: str | None = None

    def set(self, container: str) -> None:
        with self._lock:
            self._id = container

    def get(self) -> str | None:
        with self._lock:
            return self._id


class BuildOutput:
    """One build's output as it streams: whole lines (each cut at LINE_LIMIT) to the run's log, the last
    lines kept for the failure message, its size counted, the running step's container (for cancelling
    or stopping) and the image id noted."""

    def __init__(self, *, log: LogLine, tail_lines: int, max_bytes: int) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.step = StepContainer()
        self.image_id: str | None = None
        self.size = 0  # bytes of output so far
        self.max_bytes = max_bytes
        self._log = log
        self._lines = Lines()

    def take(self, chunk: Mapping[str, Any]) -> None:
        """One chunk of the engine's JSON stream."""
        if 'stream' in chunk:
            text = str(chunk['stream'])
            self.size += len(text.encode('utf-8', 'replace'))
            for line in self._lines.feed(text):
                self.emit(line)
        elif 'status' in chunk:
            self.size += len(str(chunk['status']))
            self.emit(str(chunk['status']))
        if isinstance(chunk.get('aux'), dict) and chunk['aux'].get('ID'):
            self.image_id = str(chunk['aux']['ID'])

    def emit(self, line: str) -> None:
        line = cap_message(_TERMINAL_CODES.sub('', redact(line)), LINE_LIMIT)
        self.tail.append(line)
        found = _RUNNING_IN.match(line)
        if found:
            self.step.set(found.group(1))
        self._log(line)

    def flush(self) -> None:
        """The last line, when the stream ended without its newline."""
        for line in self._lines.rest():
            self.emit(line)

    def tail_text(self) -> str:
        return '\n'.join(self.tail)
