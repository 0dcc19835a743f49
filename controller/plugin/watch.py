"""`kubectl pd watch NAME`: the current run replayed from status and Events, then followed live to its end.

The run is the one status names when the command starts (or the first one
to start, if none has). Each time the resource changes, the lines it has
earned (lines.py) that were not printed yet are printed, then the Warning
Events posted since the run started. The run has ended when the newest
history entry is its own: exit 0 when it succeeded, 1 otherwise (failed,
aborted, superseded, cancelled); the resource deleted meanwhile is 1 too.
"""
from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, TextIO

from controller.plugin.api import Cluster
from controller.plugin.lines import event_line, printable, run_end, run_lines


class Follower:
    """What has been printed of one run, so that each line comes out once."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.run_id: str | None = None
        self.started: datetime.datetime | None = None
        self.printed: set[str] = set()
        self.events: set[str] = set()
        self.end_message: str | None = None

    def show(self, obj: Mapping[str, Any]) -> int | None:
        """Print what is new; the exit code once the run has ended, else None."""
        status: Mapping[str, Any] = obj.get('status') or {}
        current = status.get('deploymentId')
        if self.run_id is None and current:
            self.run_id = str(current)
            self.started = _time(status.get('startedAt'))
        if self.run_id is None:
            return None
        if current != self.run_id:  # another run took over before this one's end was seen: its entry says
            entry = next((h for h in status.get('history') or [] if h.get('deploymentId') == self.run_id), None)
            self._print(f'Run {self.run_id} {entry.get("result") if entry else "ended"}: '
                        f'{entry.get("message") if entry else "another run started"}')
            return 0 if entry is not None and entry.get('result') == 'Succeeded' else 1
        for line in run_lines(obj):
            self._print(line)
        end = run_end(status)
        if end is None:
            return None
        self.end_message = str(status.get('message') or '')
        return 0 if end.get('result') == 'Succeeded' else 1

    def show_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            key = str((event.get('metadata') or {}).get('name'))
            when = _time(event.get('lastTimestamp') or event.get('eventTime'))
            if key in self.events or (self.started is not None and when is not None and when < self.started):
                continue
            self.events.add(key)
            line = event_line(event)
            if line is not None and not self._ends_run(event):
                self._print(line)

    def _ends_run(self, event: Mapping[str, Any]) -> bool:
        """The run's final Event, whose words the end line already has."""
        return self.end_message is not None and event.get('message') == self.end_message

    def _print(self, line: str) -> None:
        if line not in self.printed:
            self.printed.add(line)
            print(printable(line), file=self.out, flush=True)


def watch(cluster: Cluster, out: TextIO, *, name: str) -> int:
    follower = Follower(out)
    obj = cluster.get(name)
    while True:
        code = follower.show(obj)
        uid = str(obj['metadata'].get('uid') or '')
        follower.show_events(cluster.events(name, uid))
        if code is not None:
            return code
        version = str(obj['metadata'].get('resourceVersion') or '')
        for changed in cluster.changes(name, version):
            obj = changed
            break
        else:  # the watch chunk ended with nothing new (or the version expired): read it again
            obj = cluster.get(name)


def _time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
    except ValueError:
        return None
