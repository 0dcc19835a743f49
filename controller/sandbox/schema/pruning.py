"""Pruning and defaulting: what the server silently drops from an object, and fills in."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from controller.sandbox.schema.errors import INVALID, FieldError, child

_ROOT_KEEP = ('apiVersion', 'kind', 'metadata')


def prune(schema: Mapping[str, Any], obj: dict[str, Any], *, strict: bool) -> tuple[dict[str, Any], list[FieldError]]:
    """Drop the fields the schema does not declare, as the server does.

    Returns the pruned copy and, when ``strict``, one error per dropped field
    (``.spec.foo: field not declared in schema``, reason FieldValueInvalid) so
    the caller can refuse the request as ``fieldValidation=Strict`` asks.
    ``apiVersion``, ``kind`` and ``metadata`` at the root are never pruned;
    ``x-kubernetes-preserve-unknown-fields: true`` keeps a node's unknown
    fields.  Nulls in fields that are not ``nullable`` and have no
    ``default`` are dropped too (the server does this before defaulting).
    """
    errors: list[FieldError] = []
    pruned = _prune(schema, copy.deepcopy(obj), '', errors, root=True)
    return pruned, (errors if strict else [])


def _prune(schema: Mapping[str, Any], value: Any, path: str, errors: list[FieldError], *, root: bool = False) -> Any:
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get('properties') or {}
        extra = schema.get('additionalProperties')
        preserve = bool(schema.get('x-kubernetes-preserve-unknown-fields')) or extra is True
        embedded = bool(schema.get('x-kubernetes-embedded-resource'))
        result: dict[str, Any] = {}
        for key, item in value.items():
            field = child(path, key)
            if (root or embedded) and key in _ROOT_KEEP:
                result[key] = item  # never pruned, whatever the schema declares there
            elif key in properties:
                subschema = properties[key]
                if item is None and not _keeps_null(subschema):
                    continue
                result[key] = _prune(subschema, item, field, errors)
            elif isinstance(extra, Mapping):
                if item is None and not _keeps_null(extra):
                    continue
                result[key] = _prune(extra, item, field, errors)
            elif preserve:
                result[key] = item
            else:
                errors.append(FieldError(field=field, reason=INVALID,
                                         message=f'.{field}: field not declared in schema'))
        return result
    if isinstance(value, list):
        items = schema.get('items')
        if isinstance(items, Mapping):
            return [_prune(items, item, f'{path}[{index}]', errors) for index, item in enumerate(value)]
    return value


def _keeps_null(schema: Mapping[str, Any]) -> bool:
    return bool(schema.get('nullable')) or 'default' in schema


# ---------------------------------------------------------------------------
# Defaulting.

def apply_defaults(schema: Mapping[str, Any], obj: Any) -> Any:
    """Return a copy of ``obj`` with the schema's ``default`` values filled in.

    A default fills a missing field, or a null in a field that is not
    ``nullable``; defaults are applied inside defaults too (top-down), as the
    server does.
    """
    return _default(schema, copy.deepcopy(obj))


def _default(schema: Mapping[str, Any], value: Any) -> Any:
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get('properties') or {}
        for key, subschema in properties.items():
            if not isinstance(subschema, Mapping) or 'default' not in subschema:
                continue
            if key not in value or (value[key] is None and not subschema.get('nullable')):
                value[key] = copy.deepcopy(subschema['default'])
        for key in list(value):
            if key in properties:
                value[key] = _default(properties[key], value[key])
            elif isinstance(schema.get('additionalProperties'), Mapping):
                value[key] = _default(schema['additionalProperties'], value[key])
    elif isinstance(value, list) and isinstance(schema.get('items'), Mapping):
        return [_default(schema['items'], item) for item in value]
    return value
