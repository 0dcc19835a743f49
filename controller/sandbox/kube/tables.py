"""Tables (``meta.k8s.io/v1``), so that ``kubectl get`` shows the columns a cluster shows."""
from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any

from controller.sandbox.kube.resources import ResourceType

# A column: its name, its type, and where its value comes from (a JSONPath, or a function of the object).
Column = tuple[str, str, str | Callable[[dict[str, Any]], Any]]


def table(rtype: ResourceType, version: str, objs: list[dict[str, Any]], *, resource_version: str) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table, so ``kubectl get`` shows the columns a cluster shows."""
    columns: list[Column] = _builtin_columns(rtype) or [
        (column.get('name', ''), column.get('type', 'string'), column.get('jsonPath', ''))
        for column in rtype.printer_columns.get(version) or ()
    ] or [('Age', 'date', '.metadata.creationTimestamp')]
    name_last = rtype.group == '' and rtype.plural == 'events'  # as a cluster prints events: name in -o wide
    definitions: list[dict[str, Any]] = [
        {'name': name, 'type': type_, 'format': '', 'description': name, 'priority': 0} for name, type_, _ in columns]
    name_column = {'name': 'Name', 'type': 'string', 'format': 'name', 'description': 'Name',
                   'priority': 1 if name_last else 0}
    definitions = definitions + [name_column] if name_last else [name_column] + definitions
    rows = []
    for obj in objs:
        cells = [_cell(_value(obj, source), type_) for _, type_, source in columns]
        cells = cells + [obj['metadata'].get('name')] if name_last else [obj['metadata'].get('name')] + cells
        rows.append({'cells': cells, 'object': {
            'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1', 'metadata': obj['metadata']}})
    return {'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'resourceVersion': resource_version},
            'columnDefinitions': definitions, 'rows': rows}


def _value(obj: dict[str, Any], source: str | Callable[[dict[str, Any]], Any]) -> Any:
    return source(obj) if callable(source) else _json_path(obj, source)


_PATH_TOKEN = re.compile(r'\.([A-Za-z0-9_-]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["\']([^"\']*)["\']\)\]')


def _json_path(obj: Any, path: str) -> Any:
    """The subset of JSONPath printer columns use: ``.a.b``, ``[0]``, ``[*]``, ``[?(@.type=="Ready")]``."""
    values = [obj]
    position = 0
    path = path.strip()
    if path.startswith('{') and path.endswith('}'):
        path = path[1:-1]
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        if match is None:
            return None
        position = match.end()
        key, index, filter_key, filter_value = match.groups()
        found: list[Any] = []
        for value in values:
            if key is not None and isinstance(value, dict) and key in value:
                found.append(value[key])
            elif index == '*' and isinstance(value, list):
                found.extend(value)
            elif index is not None and index != '*' and isinstance(value, list) and int(index) < len(value):
                found.append(value[int(index)])
            elif filter_key is not None and isinstance(value, list):
                found.extend(item for item in value if str(_json_path(item, '.' + filter_key)) == filter_value)
        values = found
    if not values:
        return None
    return values[0] if len(values) == 1 else ','.join(str(v) for v in values)


def _age(timestamp: Any) -> str | None:
    if not isinstance(timestamp, str):
        return None
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace('Z', '+00:00'))
    except ValueError:
        return timestamp
    seconds = int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds())
    if seconds < 0:
        return '<invalid>'
    for unit, size in (('d', 86400), ('h', 3600), ('m', 60)):
        if seconds >= size * 2 or (unit == 'm' and seconds >= 120):
            return f'{seconds // size}{unit}'
    return f'{seconds}s'


def _cell(value: Any, type_: str) -> Any:
    if value is None:
        return None
    if type_ == 'date':
        return _age(value)
    if type_ == 'integer' and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _builtin_columns(rtype: ResourceType) -> list[Column]:
    created: Column = ('Age', 'date', '.metadata.creationTimestamp')
    match (rtype.group, rtype.plural):
        case ('', 'events'):
            return [
                ('Last Seen', 'date', lambda e: e.get('lastTimestamp') or e.get('eventTime')
                 or e['metadata'].get('creationTimestamp')),
                ('Type', 'string', '.type'), ('Reason', 'string', '.reason'),
                ('Object', 'string', lambda e: '{}/{}'.format(
                    str((e.get('involvedObject') or {}).get('kind', '')).lower(),
                    (e.get('involvedObject') or {}).get('name', ''))),
                ('Message', 'string', '.message'),
            ]
        case ('', 'namespaces'):
            return [('Status', 'string', '.status.phase'), created]
        case ('', 'secrets'):
            return [('Type', 'string', '.type'), ('Data', 'integer', lambda s: len(s.get('data') or {})), created]
        case ('', 'configmaps'):
            return [('Data', 'integer', lambda c: len(c.get('data') or {}) + len(c.get('binaryData') or {})), created]
        case ('coordination.k8s.io', 'leases'):
            return [('Holder', 'string', '.spec.holderIdentity'), created]
        case ('apiextensions.k8s.io', 'customresourcedefinitions'):
            return [('Created At', 'string', '.metadata.creationTimestamp')]
    return []
