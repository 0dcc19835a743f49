"""Validation of an object against a structural ``openAPIV3Schema``, worded as the server words it."""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from controller.sandbox.schema.cel import cel_errors
from controller.sandbox.schema.errors import (
    INVALID,
    NOT_SUPPORTED,
    REQUIRED,
    TOO_LONG,
    TOO_MANY,
    TYPE_INVALID,
    FieldError,
    child,
    error,
    go_value,
)
from controller.sandbox.schema.formats import check_format, is_type, same, type_name
from controller.sandbox.schema.listtypes import list_type_errors
from controller.sandbox.schema.regex import matches


def validate(schema: Mapping[str, Any], obj: Any) -> list[FieldError]:
    """Validate ``obj`` (a whole object) against a structural ``openAPIV3Schema``.

    Returns the errors in document order; an empty list means valid.
    Unknown fields are not errors here: the server prunes them first (see
    :func:`prune`). Patterns are matched as Go's RE2 does (:mod:`.regex`), CEL rules are evaluated on
    every node that has a value (:mod:`.cel`), and list types ``set`` and ``map`` refuse duplicates
    (:mod:`.listtypes`).
    """
    return list(validate_at(schema, obj, ''))


def validate_at(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[FieldError]:
    """The errors of ``value`` found at ``path`` (``spec.image``; empty for the root), in document order."""
    if not isinstance(schema, Mapping):
        return
    where = path or '<root>'
    wrong_type = _type_error(schema, value, path, where)
    if wrong_type is not None:
        yield wrong_type
        return
    if value is None:
        return  # a null where it is allowed: nothing more to check
    if 'enum' in schema and isinstance(schema['enum'], list):
        if not any(same(value, option) for option in schema['enum']):
            supported = ', '.join(go_value(option) for option in schema['enum'])
            yield error(path, NOT_SUPPORTED, value, f'supported values: {supported}')
    fmt = schema.get('format')
    if isinstance(fmt, str) and not check_format(fmt, value):
        yield error(path, TYPE_INVALID, value, f'{where} in body must be of type {fmt}: {go_value(value)}')
    yield from _validate_value(schema, value, path, where)
    yield from _validate_junctors(schema, value, path, where)
    yield from cel_errors(schema, value, path)


def _type_error(schema: Mapping[str, Any], value: Any, path: str, where: str) -> FieldError | None:
    """The error when ``value`` is not of the schema's type; a null is one only where not ``nullable``."""
    type_ = schema.get('type')
    int_or_string = bool(schema.get('x-kubernetes-int-or-string'))
    if value is None:
        if schema.get('nullable') or (not type_ and not int_or_string):
            return None
        expected = 'integer,string' if int_or_string and not type_ else type_
        return error(path, TYPE_INVALID, 'null', f'{where} in body must be of type {expected}: "null"')
    if int_or_string and not type_:
        if is_type(value, 'integer') or isinstance(value, str):
            return None
        expected = 'integer,string'
    elif type_ and not is_type(value, type_):
        expected = type_
    else:
        return None
    actual = type_name(value)
    return error(path, TYPE_INVALID, actual, f'{where} in body must be of type {expected}: "{actual}"')


def _validate_value(schema: Mapping[str, Any], value: Any, path: str, where: str) -> Iterator[FieldError]:
    if isinstance(value, str):
        yield from _validate_string(schema, value, path, where)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield from _validate_number(schema, value, path, where)
    elif isinstance(value, list):
        yield from _validate_array(schema, value, path, where)
    elif isinstance(value, dict):
        yield from _validate_object(schema, value, path, where)


def _validate_string(schema: Mapping[str, Any], value: str, path: str, where: str) -> Iterator[FieldError]:
    pattern = schema.get('pattern')
    if isinstance(pattern, str):
        if not matches(pattern, value):
            yield error(path, INVALID, value, f"{where} in body should match '{pattern}'")
    min_length = schema.get('minLength')
    if isinstance(min_length, int) and len(value) < min_length:
        yield error(path, INVALID, value, f'{where} in body should be at least {min_length} chars long')
    max_length = schema.get('maxLength')
    if isinstance(max_length, int) and len(value) > max_length:
        yield error(path, TOO_LONG, value, f'may not be more than {max_length} bytes')


def _validate_number(schema: Mapping[str, Any], value: float, path: str, where: str) -> Iterator[FieldError]:
    minimum = schema.get('minimum')
    if isinstance(minimum, (int, float)):
        if schema.get('exclusiveMinimum') is True and not value > minimum:
            yield error(path, INVALID, value, f'{where} in body should be greater than {go_value(minimum)}')
        elif value < minimum:
            yield error(path, INVALID, value,
                         f'{where} in body should be greater than or equal to {go_value(minimum)}')
    maximum = schema.get('maximum')
    if isinstance(maximum, (int, float)):
        if schema.get('exclusiveMaximum') is True and not value < maximum:
            yield error(path, INVALID, value, f'{where} in body should be less than {go_value(maximum)}')
        elif value > maximum:
            yield error(path, INVALID, value,
                         f'{where} in body should be less than or equal to {go_value(maximum)}')
    multiple = schema.get('multipleOf')
    if isinstance(multiple, (int, float)) and multiple > 0:
        quotient = value / multiple
        if not math.isclose(quotient, round(quotient), rel_tol=0, abs_tol=1e-9):
            yield error(path, INVALID, value, f'{where} in body should be a multiple of {go_value(multiple)}')


def _validate_array(schema: Mapping[str, Any], value: list[Any], path: str, where: str) -> Iterator[FieldError]:
    min_items = schema.get('minItems')
    if isinstance(min_items, int) and len(value) < min_items:
        yield error(path, INVALID, len(value), f'{where} in body should have at least {min_items} items')
    max_items = schema.get('maxItems')
    if isinstance(max_items, int) and len(value) > max_items:
        yield error(path, TOO_MANY, len(value), f'must have at most {max_items} items')
    items = schema.get('items')
    if isinstance(items, Mapping):
        for index, item in enumerate(value):
            yield from validate_at(items, item, f'{path}[{index}]')
    yield from list_type_errors(schema, value, path)


def _validate_object(schema: Mapping[str, Any], value: dict[str, Any], path: str, where: str) -> Iterator[FieldError]:
    for key in schema.get('required') or ():
        if key not in value:
            yield error(child(path, key), REQUIRED)
    properties = schema.get('properties') or {}
    for key, subschema in properties.items():
        if key in value:
            yield from validate_at(subschema, value[key], child(path, key))
    extra = schema.get('additionalProperties')
    if isinstance(extra, Mapping):
        for key, item in value.items():
            if key not in properties:
                yield from validate_at(extra, item, child(path, key))
    min_props = schema.get('minProperties')
    if isinstance(min_props, int) and len(value) < min_props:
        yield error(path, INVALID, len(value), f'{where} in body should have at least {min_props} properties')
    max_props = schema.get('maxProperties')
    if isinstance(max_props, int) and len(value) > max_props:
        yield error(path, TOO_MANY, len(value), f'must have at most {max_props} items')


def _validate_junctors(schema: Mapping[str, Any], value: Any, path: str, where: str) -> Iterator[FieldError]:
    kind = type_name(value)
    for subschema in schema.get('allOf') or ():
        yield from validate_at(subschema, value, path)
    any_of = schema.get('anyOf') or ()
    if any_of:
        results = [list(validate_at(subschema, value, path)) for subschema in any_of]
        if all(results):
            yield error(path, INVALID, kind, f'{where} in body must validate at least one schema (anyOf)')
            yield from _dedup(error for errors in results for error in errors)
    one_of = schema.get('oneOf') or ()
    if one_of:
        results = [list(validate_at(subschema, value, path)) for subschema in one_of]
        passed = sum(1 for errors in results if not errors)
        if passed != 1:
            yield error(path, INVALID, kind, f'{where} in body must validate one and only one schema (oneOf)')
            if passed == 0:
                yield from _dedup(error for errors in results for error in errors)
    not_ = schema.get('not')
    if isinstance(not_, Mapping) and not list(validate_at(not_, value, path)):
        yield error(path, INVALID, kind, f'{where} in body should not validate the schema (not)')


def _dedup(errors: Iterator[FieldError]) -> Iterator[FieldError]:
    yield from dict.fromkeys(errors)
