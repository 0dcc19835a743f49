"""Structural-schema validation, pruning and defaulting, as an API server does it.

Why this exists: the PandaDeploy CRD promises that invalid specs are refused by
the API server through its ``openAPIV3Schema``.  No real API server can run on
the machines where the tests and the sandbox run, so the Kubernetes API
emulator (:mod:`controller.sandbox.kube`) applies the schema itself, and the CRD
generator's tests check the generated schema against sample objects with the
same code.  The wording of the errors follows the real server (kube-openapi
and apiextensions-apiserver) so that what a user sees in the sandbox is what
they would see from a cluster.

This is the Kubernetes *structural schema* dialect, not general JSON Schema:
``type``, ``properties``, ``required``, ``items``, ``additionalProperties``
(a schema for map values), ``enum``, ``pattern``, ``minimum``/``maximum``
(and the exclusive flags), ``multipleOf``, ``minLength``/``maxLength``,
``minItems``/``maxItems``, ``minProperties``/``maxProperties``, ``format``,
``nullable``, ``x-kubernetes-int-or-string``,
``x-kubernetes-preserve-unknown-fields``, ``x-kubernetes-embedded-resource``,
``anyOf``/``oneOf``/``allOf``/``not`` (validation only) and a few simple forms
of ``x-kubernetes-validations`` CEL rules (see :func:`validate`).

All functions are pure: they never modify their arguments.
"""
from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import datetime
import ipaddress
import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    'FieldError',
    'REQUIRED', 'INVALID', 'NOT_SUPPORTED', 'TYPE_INVALID', 'TOO_LONG', 'TOO_MANY',
    'FORBIDDEN', 'DUPLICATE',
    'validate', 'prune', 'apply_defaults', 'structural_errors', 'format_errors', 'field_error',
]

# Reasons as the API server reports them in ``status.details.causes[].reason``.
REQUIRED = 'FieldValueRequired'
INVALID = 'FieldValueInvalid'
NOT_SUPPORTED = 'FieldValueNotSupported'
TYPE_INVALID = 'FieldValueTypeInvalid'
TOO_LONG = 'FieldValueTooLong'
TOO_MANY = 'FieldValueTooMany'
FORBIDDEN = 'FieldValueForbidden'
DUPLICATE = 'FieldValueDuplicate'

# How each reason starts its message (``field.ErrorType.String()`` in Go).
_LABELS = {
    REQUIRED: 'Required value',
    INVALID: 'Invalid value',
    TYPE_INVALID: 'Invalid value',
    NOT_SUPPORTED: 'Unsupported value',
    TOO_LONG: 'Too long',
    TOO_MANY: 'Too many',
    FORBIDDEN: 'Forbidden',
    DUPLICATE: 'Duplicate value',
}
_VALUELESS = {REQUIRED, FORBIDDEN, TOO_LONG}


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One invalid field, shaped like a ``StatusCause`` of a 422 response.

    ``field`` is the dotted path (``spec.source.repo``, ``spec.items[0].name``),
    ``reason`` the cause type (``FieldValueInvalid``...), ``message`` the text
    the server puts in the cause (``Invalid value: "x": ... should match ...``).
    ``str()`` gives the form used in the Status message: ``field: message``.
    """
    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        if not self.field or self.message.startswith(f'.{self.field}:'):
            return self.message
        return f'{self.field}: {self.message}'


def format_errors(errors: list[FieldError]) -> str:
    """Join errors as the server's aggregate does: one alone, several in ``[a, b]``."""
    texts = list(dict.fromkeys(str(error) for error in errors))
    return texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]"


def _go_value(value: Any) -> str:
    """Render a bad value as Go's field errors do (strings quoted, numbers bare)."""
    if value is None:
        return '"null"'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def field_error(field: str, reason: str, *, value: Any = None, detail: str = '') -> FieldError:
    """Build an error worded as the server words it: ``Invalid value: "x": detail``."""
    return _error(field, reason, value, detail)


def _error(field: str, reason: str, value: Any = None, detail: str = '') -> FieldError:
    label = _LABELS.get(reason, 'Invalid value')
    body = label if reason in _VALUELESS else f'{label}: {_go_value(value)}'
    if detail:
        body = f'{body}: {detail}'
    return FieldError(field=field, reason=reason, message=body)


def _child(path: str, key: str) -> str:
    return f'{path}.{key}' if path else key


def _type_name(value: Any) -> str:
    match value:
        case None:
            return 'null'
        case bool():
            return 'boolean'
        case int():
            return 'integer'
        case float():
            return 'integer' if value.is_integer() else 'number'
        case str():
            return 'string'
        case list():
            return 'array'
        case dict():
            return 'object'
        case _:
            return type(value).__name__


def _is_type(value: Any, type_: str) -> bool:
    match type_:
        case 'object':
            return isinstance(value, dict)
        case 'array':
            return isinstance(value, list)
        case 'string':
            return isinstance(value, str)
        case 'boolean':
            return isinstance(value, bool)
        case 'integer':
            return (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer())
        case 'number':
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        case _:
            return True  # unknown types are not ours to refuse


# ---------------------------------------------------------------------------
# Formats: the ones the API server knows; unknown formats are ignored.

_RFC3339 = re.compile(
    r'^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$')
_DATE = re.compile(r'^\d{4}-\d{2}-\d{2}$')
_HOSTNAME = re.compile(
    r'^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?'
    r'(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$')
_EMAIL = re.compile(r'^[^@\s]+@[^@\s]+$')
_URI = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:\S*$')
_DURATION = re.compile(r'^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')


def _check_format(fmt: str, value: Any) -> bool:
    """True if ``value`` matches ``fmt`` (or the format is not one we know)."""
    try:
        match fmt:
            case 'int32':
                return not isinstance(value, int) or -2**31 <= value < 2**31
            case 'int64':
                return not isinstance(value, int) or -2**63 <= value < 2**63
            case _ if not isinstance(value, str):
                return True
            case 'date-time' | 'datetime':
                if not _RFC3339.match(value):
                    return False
                datetime.datetime.fromisoformat(value.replace('z', 'Z').replace('Z', '+00:00'))
                return True
            case 'date':
                return bool(_DATE.match(value)) and bool(datetime.date.fromisoformat(value))
            case 'hostname':
                return bool(_HOSTNAME.match(value))
            case 'email':
                return bool(_EMAIL.match(value))
            case 'uri':
                return bool(_URI.match(value))
            case 'uuid':
                uuid.UUID(value)
                return True
            case 'ipv4':
                ipaddress.IPv4Address(value)
                return True
            case 'ipv6':
                ipaddress.IPv6Address(value)
                return True
            case 'cidr':
                ipaddress.ip_network(value, strict=False)
                return True
            case 'byte':
                base64.b64decode(value, validate=True)
                return True
            case 'duration':
                return bool(_DURATION.match(value))
            case _:
                return True
    except (ValueError, binascii.Error):
        return False


# ---------------------------------------------------------------------------
# CEL: only a few simple rule forms are understood; anything else is ignored.

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


def _cel_errors(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[FieldError]:
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
            field = _child(path, rule['fieldPath'][1:])
        reason = rule.get('reason') or INVALID
        if reason in _VALUELESS:
            yield _error(field, reason, detail=message)
        else:
            yield _error(field, reason, 'object', message)


# ---------------------------------------------------------------------------
# Validation.

def validate(schema: Mapping[str, Any], obj: Any) -> list[FieldError]:
    """Validate ``obj`` (a whole object) against a structural ``openAPIV3Schema``.

    Returns the errors in document order; an empty list means valid.
    Unknown fields are not errors here: the server prunes them first (see
    :func:`prune`). CEL rules: ``has(self.a) != has(self.b)`` (exactly one),
    ``!(has(self.a) && has(self.b))`` (at most one) and
    ``has(self.a) || has(self.b)`` (at least one); other rules are ignored.
    """
    return list(_validate(schema, obj, ''))


def _validate(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[FieldError]:
    if not isinstance(schema, Mapping):
        return
    where = path or '<root>'
    type_ = schema.get('type')
    int_or_string = bool(schema.get('x-kubernetes-int-or-string'))

    # Nulls: allowed only where nullable; otherwise a type error (if a type is declared).
    if value is None:
        if schema.get('nullable') or (not type_ and not int_or_string):
            return
        expected = 'integer,string' if int_or_string and not type_ else type_
        yield _error(path, TYPE_INVALID, 'null',
                     f'{where} in body must be of type {expected}: "null"')
        return

    if int_or_string and not type_:
        if not (_is_type(value, 'integer') or isinstance(value, str)):
            actual = _type_name(value)
            yield _error(path, TYPE_INVALID, actual,
                         f'{where} in body must be of type integer,string: "{actual}"')
            return
    elif type_ and not _is_type(value, type_):
        actual = _type_name(value)
        yield _error(path, TYPE_INVALID, actual,
                     f'{where} in body must be of type {type_}: "{actual}"')
        return

    if 'enum' in schema and isinstance(schema['enum'], list):
        if not any(_same(value, option) for option in schema['enum']):
            supported = ', '.join(_go_value(option) for option in schema['enum'])
            yield _error(path, NOT_SUPPORTED, value, f'supported values: {supported}')

    fmt = schema.get('format')
    if isinstance(fmt, str) and not _check_format(fmt, value):
        yield _error(path, TYPE_INVALID, value, f'{where} in body must be of type {fmt}: {_go_value(value)}')

    if isinstance(value, str):
        yield from _validate_string(schema, value, path, where)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield from _validate_number(schema, value, path, where)
    elif isinstance(value, list):
        yield from _validate_array(schema, value, path, where)
    elif isinstance(value, dict):
        yield from _validate_object(schema, value, path, where)

    yield from _validate_junctors(schema, value, path, where)
    yield from _cel_errors(schema, value, path)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _validate_string(schema: Mapping[str, Any], value: str, path: str, where: str) -> Iterator[FieldError]:
    pattern = schema.get('pattern')
    if isinstance(pattern, str):
        try:
            matched = re.search(pattern, value) is not None
        except re.error:
            matched = True  # a pattern we cannot compile is not the object's fault
        if not matched:
            yield _error(path, INVALID, value, f"{where} in body should match '{pattern}'")
    min_length = schema.get('minLength')
    if isinstance(min_length, int) and len(value) < min_length:
        yield _error(path, INVALID, value, f'{where} in body should be at least {min_length} chars long')
    max_length = schema.get('maxLength')
    if isinstance(max_length, int) and len(value) > max_length:
        yield _error(path, TOO_LONG, value, f'may not be more than {max_length} bytes')


def _validate_number(schema: Mapping[str, Any], value: float, path: str, where: str) -> Iterator[FieldError]:
    minimum = schema.get('minimum')
    if isinstance(minimum, (int, float)):
        if schema.get('exclusiveMinimum') is True and not value > minimum:
            yield _error(path, INVALID, value, f'{where} in body should be greater than {_go_value(minimum)}')
        elif value < minimum:
            yield _error(path, INVALID, value,
                         f'{where} in body should be greater than or equal to {_go_value(minimum)}')
    maximum = schema.get('maximum')
    if isinstance(maximum, (int, float)):
        if schema.get('exclusiveMaximum') is True and not value < maximum:
            yield _error(path, INVALID, value, f'{where} in body should be less than {_go_value(maximum)}')
        elif value > maximum:
            yield _error(path, INVALID, value,
                         f'{where} in body should be less than or equal to {_go_value(maximum)}')
    multiple = schema.get('multipleOf')
    if isinstance(multiple, (int, float)) and multiple > 0:
        quotient = value / multiple
        if not math.isclose(quotient, round(quotient), rel_tol=0, abs_tol=1e-9):
            yield _error(path, INVALID, value, f'{where} in body should be a multiple of {_go_value(multiple)}')


def _validate_array(schema: Mapping[str, Any], value: list[Any], path: str, where: str) -> Iterator[FieldError]:
    min_items = schema.get('minItems')
    if isinstance(min_items, int) and len(value) < min_items:
        yield _error(path, INVALID, len(value), f'{where} in body should have at least {min_items} items')
    max_items = schema.get('maxItems')
    if isinstance(max_items, int) and len(value) > max_items:
        yield _error(path, TOO_MANY, len(value), f'must have at most {max_items} items')
    items = schema.get('items')
    if isinstance(items, Mapping):
        for index, item in enumerate(value):
            yield from _validate(items, item, f'{path}[{index}]')
    if schema.get('x-kubernetes-list-type') == 'set' or schema.get('uniqueItems') is True:
        seen: list[Any] = []
        for index, item in enumerate(value):
            if any(_same(item, other) for other in seen):
                yield _error(f'{path}[{index}]', DUPLICATE, item)
            seen.append(item)


def _validate_object(schema: Mapping[str, Any], value: dict[str, Any], path: str, where: str) -> Iterator[FieldError]:
    for key in schema.get('required') or ():
        if key not in value:
            yield _error(_child(path, key), REQUIRED)
    properties = schema.get('properties') or {}
    for key, subschema in properties.items():
        if key in value:
            yield from _validate(subschema, value[key], _child(path, key))
    extra = schema.get('additionalProperties')
    if isinstance(extra, Mapping):
        for key, item in value.items():
            if key not in properties:
                yield from _validate(extra, item, _child(path, key))
    min_props = schema.get('minProperties')
    if isinstance(min_props, int) and len(value) < min_props:
        yield _error(path, INVALID, len(value), f'{where} in body should have at least {min_props} properties')
    max_props = schema.get('maxProperties')
    if isinstance(max_props, int) and len(value) > max_props:
        yield _error(path, TOO_MANY, len(value), f'must have at most {max_props} items')


def _validate_junctors(schema: Mapping[str, Any], value: Any, path: str, where: str) -> Iterator[FieldError]:
    kind = _type_name(value)
    for subschema in schema.get('allOf') or ():
        yield from _validate(subschema, value, path)
    any_of = schema.get('anyOf') or ()
    if any_of:
        results = [list(_validate(subschema, value, path)) for subschema in any_of]
        if all(results):
            yield _error(path, INVALID, kind, f'{where} in body must validate at least one schema (anyOf)')
            yield from _dedup(error for errors in results for error in errors)
    one_of = schema.get('oneOf') or ()
    if one_of:
        results = [list(_validate(subschema, value, path)) for subschema in one_of]
        passed = sum(1 for errors in results if not errors)
        if passed != 1:
            yield _error(path, INVALID, kind, f'{where} in body must validate one and only one schema (oneOf)')
            if passed == 0:
                yield from _dedup(error for errors in results for error in errors)
    not_ = schema.get('not')
    if isinstance(not_, Mapping) and not list(_validate(not_, value, path)):
        yield _error(path, INVALID, kind, f'{where} in body should not validate the schema (not)')


def _dedup(errors: Iterator[FieldError]) -> Iterator[FieldError]:
    yield from dict.fromkeys(errors)


# ---------------------------------------------------------------------------
# Pruning: what the server silently drops (or refuses with fieldValidation=Strict).

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
            field = _child(path, key)
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


# ---------------------------------------------------------------------------
# Structural-schema checks: what the server refuses when a CRD is created.

_NESTED_FORBIDDEN = ('type', 'default', 'nullable', 'additionalProperties', 'x-kubernetes-preserve-unknown-fields',
                     'x-kubernetes-embedded-resource', 'x-kubernetes-int-or-string')


def structural_errors(schema: Mapping[str, Any], *, path: str = 'spec.validation.openAPIV3Schema') -> list[FieldError]:
    """Report why ``schema`` is not a structural schema (empty when it is).

    A subset of the server's checks, with its paths and wording: a ``type``
    on every specified field (unless int-or-string or preserve-unknown-fields),
    ``items`` for arrays, ``properties`` xor ``additionalProperties``, no types
    or defaults inside ``anyOf``/``oneOf``/``allOf``/``not``, only
    ``name``/``generateName`` under the root ``metadata``, and defaults that
    validate against their own schema.
    """
    errors: list[FieldError] = []
    if not isinstance(schema, Mapping):
        return [_error(path, REQUIRED)]
    if schema.get('type') != 'object':
        errors.append(_error(f'{path}.type', INVALID, schema.get('type') or '', 'must be object at the root'))
    metadata = (schema.get('properties') or {}).get('metadata')
    if isinstance(metadata, Mapping):
        for key in (metadata.get('properties') or {}):
            if key not in ('name', 'generateName'):
                errors.append(_error(f'{path}.properties[metadata].properties[{key}]', FORBIDDEN,
                                     detail='must not be specified'))
    _structural(schema, path, errors, nested=False, root=True)
    return errors


def _structural(schema: Any, path: str, errors: list[FieldError], *, nested: bool, root: bool = False,
                int_or_string_junctor: bool = False) -> None:
    if not isinstance(schema, Mapping):
        errors.append(_error(path, INVALID, _type_name(schema), 'must be an object'))
        return
    type_ = schema.get('type')
    int_or_string = bool(schema.get('x-kubernetes-int-or-string'))
    preserve = bool(schema.get('x-kubernetes-preserve-unknown-fields'))
    if nested:
        for key in _NESTED_FORBIDDEN:
            if key == 'type' and int_or_string_junctor and type_ in ('integer', 'string'):
                continue  # the int-or-string idiom: anyOf: [{type: integer}, {type: string}]
            if key in schema and not (key == 'x-kubernetes-preserve-unknown-fields' and schema[key] is False):
                errors.append(_error(f'{path}.{key}', FORBIDDEN, detail='must be empty to be structural'))
    else:
        if not type_ and not int_or_string and not preserve:
            errors.append(_error(f'{path}.type', REQUIRED, detail='must not be empty for specified object fields'))
        if type_ and type_ not in ('object', 'array', 'string', 'integer', 'number', 'boolean'):
            errors.append(_error(f'{path}.type', NOT_SUPPORTED, type_,
                                 'supported values: "array", "boolean", "integer", "number", "object", "string"'))
        if int_or_string and type_:
            errors.append(_error(f'{path}.type', INVALID, type_,
                                 'must be empty if x-kubernetes-int-or-string is true'))
        if preserve and type_ and type_ != 'object':
            errors.append(_error(f'{path}.type', INVALID, type_,
                                 'must be object if x-kubernetes-preserve-unknown-fields is true'))
        if type_ == 'array' and not isinstance(schema.get('items'), Mapping):
            errors.append(_error(f'{path}.items', REQUIRED, detail='must be specified'))
    extra = schema.get('additionalProperties')
    if extra is False:
        errors.append(_error(f'{path}.additionalProperties', FORBIDDEN,
                             detail='must not be used in structural schemas'))
    if isinstance(extra, Mapping) and schema.get('properties'):
        errors.append(_error(f'{path}.additionalProperties', FORBIDDEN,
                             detail='additionalProperties and properties are mutual exclusive'))
    for key, subschema in (schema.get('properties') or {}).items():
        if root and key == 'metadata':
            continue
        _structural(subschema, f'{path}.properties[{key}]', errors, nested=nested)
    if isinstance(extra, Mapping):
        _structural(extra, f'{path}.additionalProperties', errors, nested=nested)
    if 'items' in schema:
        _structural(schema['items'], f'{path}.items', errors, nested=nested)
    for junctor in ('allOf', 'anyOf', 'oneOf'):
        for index, subschema in enumerate(schema.get(junctor) or ()):
            _structural(subschema, f'{path}.{junctor}[{index}]', errors, nested=True,
                        int_or_string_junctor=(int_or_string or int_or_string_junctor) and junctor != 'oneOf')
    if isinstance(schema.get('not'), Mapping):
        _structural(schema['not'], f'{path}.not', errors, nested=True)
    if not nested and 'default' in schema:
        # Worded as for the field itself: "x in body must be of type string", at the default's path.
        match = re.search(r'properties\[([^\]]+)\]$', path)
        name = match.group(1) if match else 'default'
        for error in _validate(schema, apply_defaults(schema, schema['default']), name):
            errors.append(FieldError(field=f'{path}.default{error.field[len(name):]}',
                                     reason=error.reason, message=error.message))
