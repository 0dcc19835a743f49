"""``x-kubernetes-validations``: only a few simple CEL rule forms are understood; others are ignored."""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from controller.sandbox.schema.errors import INVALID, VALUELESS, FieldError, child, error

_HAS = r'has\(\s*self\.([A-Za-z_][A-Za-z0-9_]*)\s*\)'
_EXACTLY_ONE = re.compile(rf'^\s*{_HAS}\s*!=\s*{_HAS}\s*$')
_AT_MOST_ONE = re.compile(rf'^\s*!\s*\(\s*{_HAS}\s*&&\s*{_HAS}\s*\)\s*$')
_AT_LEAST_ONE = re.compile(rf'^\s*{_HAS}\s*\|\|\s*{_HAS}\s*$')


def _cel_holds(rule: str, value: dict[str, Any]) -> bool | None:
    """Evaluate a simple presence rule; None when the rule is not understood."""
    if match := _EXACTLY_ONE.match(rule):
        a, b = match.groups()
        return (a in value) != (b in value)
    if match := _AT_MOST_ONE.match(rule):
        a, b = match.groups()
        return not (a in value and b in value)
    if match := _AT_LEAST_ONE.match(rule):
        a, b = match.groups()
        return a in value or b in value
    return None


def cel_errors(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[FieldError]:
    """The errors of the rules ``value`` (an object) breaks: ``has(self.a) != has(self.b)`` and kin."""
    if not isinstance(value, dict):
        return
    for rule in schema.get('x-kubernetes-validations') or ():
        if not isinstance(rule, Mapping) or not isinstance(rule.get('rule'), str):
            continue
        if _cel_holds(rule['rule'], value) is not False:
            continue
        message = rule.get('message') or f"failed rule: {rule['rule']}"
        field = path
        if isinstance(rule.get('fieldPath'), str) and rule['fieldPath'].startswith('.'):
            field = child(path, rule['fieldPath'][1:])
        reason = rule.get('reason') or INVALID
        if reason in VALUELESS:
            yield error(field, reason, detail=message)
        else:
            yield error(field, reason, 'object', message)
