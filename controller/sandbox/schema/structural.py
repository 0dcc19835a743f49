"""Structural-schema checks: what the server refuses when a CRD is created."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controller.sandbox.schema.errors import FORBIDDEN, INVALID, NOT_SUPPORTED, REQUIRED, FieldError, error
from controller.sandbox.schema.formats import type_name
from controller.sandbox.schema.pruning import apply_defaults
from controller.sandbox.schema.validation import validate_at

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
        return [error(path, REQUIRED)]
    if schema.get('type') != 'object':
        errors.append(error(f'{path}.type', INVALID, schema.get('type') or '', 'must be object at the root'))
    metadata = (schema.get('properties') or {}).get('metadata')
    if isinstance(metadata, Mapping):
        for key in (metadata.get('properties') or {}):
            if key not in ('name', 'generateName'):
                errors.append(error(f'{path}.properties[metadata].properties[{key}]', FORBIDDEN,
                                     detail='must not be specified'))
    _structural(schema, path, errors, nested=False, root=True)
    return errors


def _structural(schema: Any, path: str, errors: list[FieldError], *, nested: bool, root: bool = False,
                int_or_string_junctor: bool = False) -> None:
    """Append the errors of ``schema`` at ``path`` and of the schemas under it, depth first."""
    if not isinstance(schema, Mapping):
        errors.append(error(path, INVALID, type_name(schema), 'must be an object'))
        return
    if nested:
        errors += _nested_errors(schema, path, int_or_string_junctor=int_or_string_junctor)
    else:
        errors += _type_errors(schema, path)
    errors += _additional_properties_errors(schema, path)
    _structural_children(schema, path, errors, nested=nested, root=root,
                         int_or_string_junctor=int_or_string_junctor)
    if not nested and 'default' in schema:
        errors += _default_errors(schema, path)


def _nested_errors(schema: Mapping[str, Any], path: str, *, int_or_string_junctor: bool) -> list[FieldError]:
    """Inside ``anyOf``/``oneOf``/``allOf``/``not``: no types, defaults or extensions."""
    errors = []
    for key in _NESTED_FORBIDDEN:
        if key == 'type' and int_or_string_junctor and schema.get('type') in ('integer', 'string'):
            continue  # the int-or-string idiom: anyOf: [{type: integer}, {type: string}]
        if key in schema and not (key == 'x-kubernetes-preserve-unknown-fields' and schema[key] is False):
            errors.append(error(f'{path}.{key}', FORBIDDEN, detail='must be empty to be structural'))
    return errors


def _type_errors(schema: Mapping[str, Any], path: str) -> list[FieldError]:
    """A specified field's ``type``: present, known, and consistent with the extensions beside it."""
    type_ = schema.get('type')
    int_or_string = bool(schema.get('x-kubernetes-int-or-string'))
    preserve = bool(schema.get('x-kubernetes-preserve-unknown-fields'))
    errors = []
    if not type_ and not int_or_string and not preserve:
        errors.append(error(f'{path}.type', REQUIRED, detail='must not be empty for specified object fields'))
    if type_ and type_ not in ('object', 'array', 'string', 'integer', 'number', 'boolean'):
        errors.append(error(f'{path}.type', NOT_SUPPORTED, type_,
                            'supported values: "array", "boolean", "integer", "number", "object", "string"'))
    if int_or_string and type_:
        errors.append(error(f'{path}.type', INVALID, type_,
                            'must be empty if x-kubernetes-int-or-string is true'))
    if preserve and type_ and type_ != 'object':
        errors.append(error(f'{path}.type', INVALID, type_,
                            'must be object if x-kubernetes-preserve-unknown-fields is true'))
    if type_ == 'array' and not isinstance(schema.get('items'), Mapping):
        errors.append(error(f'{path}.items', REQUIRED, detail='must be specified'))
    return errors


def _additional_properties_errors(schema: Mapping[str, Any], path: str) -> list[FieldError]:
    extra = schema.get('additionalProperties')
    errors = []
    if extra is False:
        errors.append(error(f'{path}.additionalProperties', FORBIDDEN,
                            detail='must not be used in structural schemas'))
    if isinstance(extra, Mapping) and schema.get('properties'):
        errors.append(error(f'{path}.additionalProperties', FORBIDDEN,
                            detail='additionalProperties and properties are mutual exclusive'))
    return errors


def _structural_children(schema: Mapping[str, Any], path: str, errors: list[FieldError], *, nested: bool,
                         root: bool, int_or_string_junctor: bool) -> None:
    """Check the schemas under ``schema``: properties, map values, items, then the junctors."""
    for key, subschema in (schema.get('properties') or {}).items():
        if root and key == 'metadata':
            continue
        _structural(subschema, f'{path}.properties[{key}]', errors, nested=nested)
    extra = schema.get('additionalProperties')
    if isinstance(extra, Mapping):
        _structural(extra, f'{path}.additionalProperties', errors, nested=nested)
    if 'items' in schema:
        _structural(schema['items'], f'{path}.items', errors, nested=nested)
    int_or_string = bool(schema.get('x-kubernetes-int-or-string')) or int_or_string_junctor
    for junctor in ('allOf', 'anyOf', 'oneOf'):
        for index, subschema in enumerate(schema.get(junctor) or ()):
            _structural(subschema, f'{path}.{junctor}[{index}]', errors, nested=True,
                        int_or_string_junctor=int_or_string and junctor != 'oneOf')
    if isinstance(schema.get('not'), Mapping):
        _structural(schema['not'], f'{path}.not', errors, nested=True)


def _default_errors(schema: Mapping[str, Any], path: str) -> list[FieldError]:
    """A default must validate against its own schema (after its own defaults are applied)."""
    # Worded as for the field itself: "x in body must be of type string", at the default's path.
    match = re.search(r'properties\[([^\]]+)\]$', path)
    name = match.group(1) if match else 'default'
    return [FieldError(field=f'{path}.default{found.field[len(name):]}', reason=found.reason, message=found.message)
            for found in validate_at(schema, apply_defaults(schema, schema['default']), name)]
