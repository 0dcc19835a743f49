"""``x-kubernetes-list-type``: ``set`` items and ``map`` keys are unique, as the server checks them.

``staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype/validation.go``
(``ValidateListSetsAndMaps``): a ``set`` refuses a repeated item, a ``map`` a repeated tuple of its
``x-kubernetes-list-map-keys`` (``Duplicate value: map[string]interface {}{"type":"Ready"}``), and an item
without one of the keys is ``Required`` unless the key has a default.  ``uniqueItems`` is refused by the
server in structural schemas; it is honoured here like a set for schemas that are not CRDs'.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from controller.sandbox.schema.errors import DUPLICATE, REQUIRED, FieldError, child, error
from controller.sandbox.schema.formats import same


def list_type_errors(schema: Mapping[str, Any], value: list[Any], path: str) -> Iterator[FieldError]:
    """Duplicates in a ``set`` or ``map`` list, and map items without their keys."""
    list_type = schema.get('x-kubernetes-list-type')
    if list_type == 'set' or schema.get('uniqueItems') is True:
        yield from _set_errors(value, path)
    elif list_type == 'map':
        keys = [key for key in schema.get('x-kubernetes-list-map-keys') or () if isinstance(key, str)]
        items: Mapping[str, Any] = schema['items'] if isinstance(schema.get('items'), Mapping) else {}
        yield from _map_errors(value, path, keys, items.get('properties') or {})


def _set_errors(value: list[Any], path: str) -> Iterator[FieldError]:
    seen: list[Any] = []
    for index, item in enumerate(value):
        if any(same(item, other) for other in seen):
            yield error(f'{path}[{index}]', DUPLICATE, item)
        seen.append(item)


def _map_errors(value: list[Any], path: str, keys: list[str],
                properties: Mapping[str, Any]) -> Iterator[FieldError]:
    seen: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            continue  # the item's type error is reported by the items schema
        missing = [key for key in keys if key not in item and 'default' not in (properties.get(key) or {})]
        for key in missing:
            yield error(child(f'{path}[{index}]', key), REQUIRED)
        if missing:
            continue
        tuple_ = {key: item.get(key, (properties.get(key) or {}).get('default')) for key in keys}
        if any(all(same(tuple_[key], other[key]) for key in keys) for other in seen):
            yield error(f'{path}[{index}]', DUPLICATE, tuple_)
        seen.append(tuple_)
