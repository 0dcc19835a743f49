"""A run's progress as the seed streamed it ("[Stage 5] HealthCheck in progress - Check 3/5"), from status.

One function turns a PandaDeploy as the API returns it into every line its
current run has earned so far, in the order they happened: the start, each
stage's start and outcome, and inside Verify the checks, the traffic steps,
the wait for a promotion and the checks' summary, then the run's end. A
late reader gets the whole run from one read (the replay); a reader that
follows the resource calls it again on each change and prints the lines it
has not printed (the live part), so both come out the same.

The checks are counted from status (the Progressing message says "Check
3/5" while they run; `status.healthCheck` holds the count once they are
done); the operator writes the count within its write budget (not every
check when there are many), and a count of 3 means checks 1 to 3 happened,
so each is a line. Traffic steps are seen only while status shows them.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controller.models import StageName

_CHECK = re.compile(r'HealthCheck in progress - Check (\d+)/(\d+)')
_STEP = re.compile(r'(?:step \d+/\d+|\w+): [\d.]+% of production on the new revision')
_CONTROL = re.compile(r'[\x00-\x1f\x7f-\x9f]')
LINE_LIMIT = 2048  # characters of one printed line (status messages are capped at 1024 by the operator)


def printable(text: str) -> str:
    """A line for the terminal: no control characters (an escape sequence in a status someone else wrote would
    reach the reader's terminal), at most LINE_LIMIT characters."""
    text = _CONTROL.sub(' ', text)
    return text if len(text) <= LINE_LIMIT else text[:LINE_LIMIT - 1] + '…'


def health_summary(check: Mapping[str, Any]) -> str:
    """status.healthCheck in one line."""
    return (f'Health checks {check.get("passed", 0)}/{check.get("total", 0)} passed on {check.get("url")} '
            f'(median {check.get("latencyMedianMs")} ms, max {check.get("latencyMaxMs")} ms)')


def run_end(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The history entry of the current run once it ended (its result and message), else None."""
    run_id = status.get('deploymentId')
    history = status.get('history') or []
    if run_id and history and history[0].get('deploymentId') == run_id:
        entry: Mapping[str, Any] = history[0]
        return entry
    return None


def started_line(status: Mapping[str, Any]) -> str:
    trigger = status.get('trigger') or {}
    why = {'Undo': f': undo to {trigger.get("of")}', 'Retry': f': retry of {trigger.get("of")}'}.get(
        trigger.get('kind', ''), '')
    return f'Run {status.get("deploymentId")} started for generation {status.get("observedGeneration")}{why}'


def run_lines(obj: Mapping[str, Any]) -> list[str]:
    """Every line the current run has earned so far, in order ([] before a run starts)."""
    status: Mapping[str, Any] = obj.get('status') or {}
    if not status.get('deploymentId'):
        return []
    lines = [started_line(status)]
    if status.get('phase') == 'Pending' and not status.get('stages') and run_end(status) is None:
        lines.append(str(status.get('message') or 'Pending'))  # queued, or stalled before its first stage
    for record in sorted(status.get('stages') or [], key=lambda r: int(r.get('number') or 0)):
        number, name, result = record.get('number'), record.get('name'), record.get('result')
        if record.get('reason') != 'Undo':  # an undo records Build and Push as skipped before it starts
            lines.append(f'[Stage {number}] {name} started')
        if name == StageName.verify.value:
            lines += [f'[Stage {number}] {line}' for line in _verify_lines(status)]
        message = record.get('message') or result
        if result in ('Succeeded', 'Skipped', 'Cancelled'):
            lines.append(f'[Stage {number}] {message}')
        elif result == 'Failed':
            lines.append(f'[Stage {number}] failed: {record.get("reason")}: {message}')
    end = run_end(status)
    if end is not None:  # status.message is the run's last message in full (history keeps 256 characters)
        lines.append(f'Run {end.get("deploymentId")} {end.get("result")}: {status.get("message") or end.get("message")}')
    return lines


def _verify_lines(status: Mapping[str, Any]) -> list[str]:
    """Inside Verify: each check up to the count status shows, a traffic step, a promotion wait, the summary."""
    message = str(status.get('message') or '')
    check = status.get('healthCheck') or {}
    done, total = 0, int(check.get('total') or 0)
    if check:
        done = int(check.get('passed') or 0) + int(check.get('failed') or 0)
    if (found := _CHECK.search(message)) is not None:
        done, total = max(done, int(found.group(1))), int(found.group(2))
    lines = [f'HealthCheck in progress - Check {k}/{total}' for k in range(1, min(done, total) + 1)]
    if check.get('url'):
        lines.append(health_summary(check))
    if status.get('promotion'):
        lines.append(f'Waiting for promotion: {status["promotion"]}')
    if _STEP.search(message):
        lines.append(message)
    return lines


def event_line(event: Mapping[str, Any]) -> str | None:
    """A Warning Event that is not the run's end (which the status lines say): an abort or undo refused, a
    status not saved. None for the others (the stage Events say what status says)."""
    if event.get('type') != 'Warning':
        return None
    return f'Warning {event.get("reason")}: {event.get("message")}'
