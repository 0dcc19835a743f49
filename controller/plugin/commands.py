"""`kubectl pd get` and the commands that ask the operator for something by annotating the resource.

Each request names the run it is for, read from the resource's status, so
that it acts on that run and no other (the operator checks it again):
`promote` and `abort` the run in flight, `retry` the newest run when it
failed, `undo` a succeeded run of `status.history` (by default the newest
one that deployed another image than the current). Undo and retry values
carry the time (`dep_x@<RFC 3339>`), so asking again for the same run is a
new request; `reconcile` sets `requestedAt` to the time.
"""
from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, TextIO

from controller.models import (
    ABORT_ANNOTATION,
    DEPLOYMENT_ID,
    GROUP,
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    UNDO_ANNOTATION,
)
from controller.plugin.api import Cluster
from controller.plugin.lines import printable

REQUESTED_AT_ANNOTATION = f'{GROUP}/requestedAt'  # DESIGN.md: any new value runs now at the branch head
COLUMNS = ('NAME', 'PHASE', 'STAGE', 'REVISION', 'COLOUR', 'AGE')


class Refused(Exception):
    """The resource is not in a state the command applies to: exit 1 with this message."""


class BadArgument(Exception):
    """An argument is wrong: exit 2 naming it."""


def now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).isoformat()


def age(created: str | None, *, at: datetime.datetime | None = None) -> str:
    """kubectl's style: 42s, 5m10s, 17m, 5h, 12d."""
    if not created:
        return '<unknown>'
    at = at or datetime.datetime.now(tz=datetime.timezone.utc)
    seconds = max(0, int((at - datetime.datetime.fromisoformat(created.replace('Z', '+00:00'))).total_seconds()))
    if seconds < 120:
        return f'{seconds}s'
    if seconds < 600:
        return f'{seconds // 60}m{seconds % 60}s'
    if seconds < 3 * 3600:
        return f'{seconds // 60}m'
    if seconds < 48 * 3600:
        return f'{seconds // 3600}h'
    return f'{seconds // 86400}d'


def table(items: list[dict[str, Any]], *, namespaces: bool) -> list[str]:
    """The `get` table: one row per resource, columns padded as kubectl pads them."""
    header = ('NAMESPACE', *COLUMNS) if namespaces else COLUMNS
    rows: list[tuple[str, ...]] = [header]
    for item in sorted(items, key=lambda i: (i['metadata'].get('namespace', ''), i['metadata']['name'])):
        status = item.get('status') or {}
        cells = (item['metadata']['name'], status.get('phase') or '', status.get('stage') or '',
                 status.get('revisionShort') or '', status.get('activeColor') or '',
                 age(item['metadata'].get('creationTimestamp')))
        row: tuple[str, ...] = tuple(printable(str(v))[:64] for v in cells)  # anyone with access may write status
        rows.append((item['metadata'].get('namespace', ''), *row) if namespaces else row)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    return ['   '.join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def get(cluster: Cluster, out: TextIO, *, name: str | None, all_namespaces: bool) -> int:
    items = [cluster.get(name)] if name else cluster.list_all(all_namespaces=all_namespaces)
    if not items:
        where = 'any namespace' if all_namespaces else f'namespace {cluster.namespace}'
        print(f'No PandaDeploys found in {where}.', file=out)
        return 0
    for line in table(items, namespaces=all_namespaces):
        print(line, file=out)
    return 0


def _in_flight(status: Mapping[str, Any], name: str) -> str:
    run_id = status.get('deploymentId')
    if status.get('phase') not in ('Pending', 'Progressing') or not run_id:
        raise Refused(f'pd/{name}: no run is in flight (phase {status.get("phase") or "none"})')
    return str(run_id)


def promote_value(status: Mapping[str, Any], name: str) -> tuple[str, str]:
    run_id = _in_flight(status, name)
    if not status.get('promotion'):
        raise Refused(f'pd/{name}: run {run_id} does not wait for a promotion (stage {status.get("stage")}); '
                      'promotion is asked for with spec.rollout.promotion: manual, once the checks passed')
    return PROMOTE_ANNOTATION, run_id


def abort_value(status: Mapping[str, Any], name: str) -> tuple[str, str]:
    return ABORT_ANNOTATION, _in_flight(status, name)


def retry_value(status: Mapping[str, Any], name: str) -> tuple[str, str]:
    history = status.get('history') or []
    if status.get('phase') != 'Failed' or not history or history[0].get('result') != 'Failed':
        raise Refused(f'pd/{name}: the newest run did not fail (phase {status.get("phase") or "none"}); '
                      'retry runs a failed run again')
    return RETRY_ANNOTATION, f'{history[0]["deploymentId"]}@{now()}'


def undo_value(status: Mapping[str, Any], name: str, *, to: str | None) -> tuple[str, str]:
    """The run to go back to: `to`, or the newest succeeded run that deployed another image than the current."""
    history = status.get('history') or []
    usable = [h for h in history if h.get('result') == 'Succeeded' and h.get('imageDigest')
              and h.get('taskDefinitionArn')]
    if to is not None:
        if not DEPLOYMENT_ID.fullmatch(to):
            raise BadArgument(f'--to: {to[:64]!r} is not a deploymentId (dep_ and 10 characters)')
        if not any(h.get('deploymentId') == to for h in history):
            kept = ', '.join(str(h.get('deploymentId')) for h in history[:5]) or 'none'
            raise BadArgument(f'--to: {to} is not in the status.history of pd/{name} (newest: {kept})')
        return UNDO_ANNOTATION, f'{to}@{now()}'
    current = usable[0].get('imageDigest') if usable else None
    earlier = next((h for h in usable if h.get('imageDigest') != current), None)
    if earlier is None:
        raise Refused(f'pd/{name}: no earlier succeeded run with another image in status.history to go back to')
    return UNDO_ANNOTATION, f'{earlier["deploymentId"]}@{now()}'


def request(cluster: Cluster, out: TextIO, *, name: str, command: str, to: str | None = None) -> int:
    """Annotate the resource for `command` and say what was asked."""
    if command == 'reconcile':
        annotation, value = REQUESTED_AT_ANNOTATION, now()
    else:
        status = cluster.get(name).get('status') or {}
        annotation, value = {
            'promote': lambda: promote_value(status, name), 'abort': lambda: abort_value(status, name),
            'retry': lambda: retry_value(status, name), 'undo': lambda: undo_value(status, name, to=to),
        }[command]()
    cluster.annotate(name, {annotation: value})
    run = value.split('@', 1)[0]
    said = {'promote': f'promotion of run {run}', 'abort': f'abort of run {run}', 'retry': f'retry of run {run}',
            'undo': f'undo to run {run}', 'reconcile': 'a run at the branch head'}[command]
    print(f'pandadeploy.{GROUP}/{name}: {said} requested ({annotation}={value})', file=out)
    return 0
