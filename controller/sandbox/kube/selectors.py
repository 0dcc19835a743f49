"""Label and field selectors, compiled into predicates over objects."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from controller.sandbox.kube.errors import bad_request

Predicate = Callable[[Mapping[str, Any]], bool]
LabelTest = Callable[[Mapping[str, str]], bool]

_SET_RE = re.compile(r'^([^\s!=()]+)\s+(in|notin)\s*\(([^)]*)\)$')
_EQ_RE = re.compile(r'^([^\s!=]+)\s*(==|=|!=)\s*([^\s!=]*)$')
_NOT_EXISTS_RE = re.compile(r'^![^\s!=(),]+$')
_EXISTS_RE = re.compile(r'^[^\s!=(),]+$')


def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` parentheses."""
    parts, depth, current = [], 0, ''
    for char in text:
        if char == ',' and depth == 0:
            parts.append(current)
            current = ''
            continue
        depth += (char == '(') - (char == ')')
        current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def _in_set(key: str, values: set[str], *, negate: bool) -> LabelTest:
    if negate:
        return lambda labels: labels.get(key) not in values
    return lambda labels: labels.get(key) in values


def _equal(key: str, value: str, *, negate: bool) -> LabelTest:
    if negate:
        return lambda labels: labels.get(key) != value
    return lambda labels: labels.get(key) == value


def _exists(key: str, *, negate: bool) -> LabelTest:
    if negate:
        return lambda labels: key not in labels
    return lambda labels: key in labels


def _label_test(part: str) -> LabelTest:
    """One requirement of a label selector: ``a in (x,y)``, ``a!=b``, ``a``, ``!a``..."""
    if match := _SET_RE.match(part):
        key, op, values_text = match.groups()
        values = {v.strip() for v in values_text.split(',') if v.strip()}
        return _in_set(key, values, negate=op != 'in')
    if match := _EQ_RE.match(part):
        key, op, value = match.groups()
        return _equal(key, value, negate=op == '!=')
    if part.startswith('!') and _NOT_EXISTS_RE.match(part):
        return _exists(part[1:], negate=True)
    if _EXISTS_RE.match(part):
        return _exists(part, negate=False)
    raise bad_request(f'unable to parse requirement: invalid label selector: {part!r}')


def label_selector(text: str | None) -> Predicate:
    """Compile a label selector (``a=b,c!=d,e,!f,g in (x,y),h notin (z)``) into a predicate over objects."""
    tests = [_label_test(part) for part in _split_selector(text or '')]

    def predicate(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get('metadata') or {}).get('labels') or {}
        return all(test(labels) for test in tests)
    return predicate


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for key in path.split('.'):
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None:
        return ''
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def _field_test(path: str, value: str, *, negate: bool) -> Predicate:
    if negate:
        return lambda obj: _field_value(obj, path) != value
    return lambda obj: _field_value(obj, path) == value


def field_selector(text: str | None) -> Predicate:
    """Compile a field selector (``metadata.name=x,involvedObject.kind!=Pod``) into a predicate."""
    tests: list[Predicate] = []
    for part in _split_selector(text or ''):
        match = _EQ_RE.match(part)
        if not match:
            raise bad_request(f'invalid field selector: {part!r}')
        path, op, value = match.groups()
        tests.append(_field_test(path, value, negate=op == '!='))
    return lambda obj: all(test(obj) for test in tests)
