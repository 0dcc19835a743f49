"""What the API server checks in a CRD's schema beyond structure, before it accepts the CRD.

From ``staging/src/k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go``
(``ValidateCustomResourceDefinitionOpenAPISchema`` and its helpers):

- ``pattern`` must compile as a Go regular expression (RE2): ``must be a valid regular expression, but
  isn't``;
- ``x-kubernetes-list-type`` is ``atomic``, ``set`` or ``map``; a ``map`` list names its
  ``x-kubernetes-list-map-keys``, its items are objects, and each key is required or defaulted; keys are
  only for ``map`` lists;
- each ``x-kubernetes-validations`` rule compiles (parses, and reads only fields the schema declares: the
  part of cel-go's type check that catches a misspelt field), and its estimated cost times the number of times it can
  run stays within the per-rule budget, all rules together within the per-CRD one (:mod:`.celcost`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.sandbox.schema import celcost
from controller.sandbox.schema.cel import RuleCompileError, compiled
from controller.sandbox.schema.errors import FORBIDDEN, INVALID, NOT_SUPPORTED, REQUIRED, FieldError, error
from controller.sandbox.schema.regex import compile_error

_COST_HINT = ('(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, '
              'and strings are declared)')


def schema_errors(schema: Mapping[str, Any], path: str) -> list[FieldError]:
    """The errors a server finds in ``schema`` (an ``openAPIV3Schema`` at ``path``), in document order."""
    errors: list[FieldError] = []
    total = _walk(schema, path, errors, cardinality=1)
    if total > celcost.PER_CRD_LIMIT:
        errors.append(error(path, FORBIDDEN, detail='x-kubernetes-validations estimated rule cost total for entire '
                            f'OpenAPIv3 schema exceeds budget by factor of {_factor(total, celcost.PER_CRD_LIMIT)} '
                            + _COST_HINT))
    return errors


def _factor(cost: int, limit: int) -> str:
    return f'{cost / limit:.6f}x' if cost < 100 * limit else 'more than 100x'


def _walk(schema: Any, path: str, errors: list[FieldError], *, cardinality: int) -> int:
    """Check ``schema`` and the schemas under it; return the estimated cost of their rules."""
    if not isinstance(schema, Mapping):
        return 0
    pattern = schema.get('pattern')
    if isinstance(pattern, str) and (why := compile_error(pattern)) is not None:
        errors.append(error(f'{path}.pattern', INVALID, pattern,
                            f"must be a valid regular expression, but isn't: {why}"))
    errors.extend(_list_type_errors(schema, path))
    total = _rules_cost(schema, path, errors, cardinality=cardinality)
    for key, sub in (schema.get('properties') or {}).items():
        total += _walk(sub, f'{path}.properties[{key}]', errors, cardinality=cardinality)
    if isinstance(schema.get('items'), Mapping):
        total += _walk(schema['items'], f'{path}.items', errors,
                       cardinality=cardinality * celcost.max_items(schema))
    if isinstance(schema.get('additionalProperties'), Mapping):
        total += _walk(schema['additionalProperties'], f'{path}.additionalProperties', errors,
                       cardinality=cardinality * celcost.max_items(schema))
    return total


def _rules_cost(schema: Mapping[str, Any], path: str, errors: list[FieldError], *, cardinality: int) -> int:
    total = 0
    for index, rule in enumerate(schema.get('x-kubernetes-validations') or ()):
        where = f'{path}.x-kubernetes-validations[{index}].rule'
        text = rule.get('rule') if isinstance(rule, Mapping) else None
        if not isinstance(text, str) or not text.strip():
            errors.append(error(where, REQUIRED))
            continue
        try:
            tree = compiled(text)
        except RuleCompileError as e:
            errors.append(error(where, INVALID, text, f'compilation failed: {e}'))
            continue
        undefined = celcost.undefined_fields(tree, schema)
        if undefined:
            errors.append(error(where, INVALID, text,
                                f"compilation failed: ERROR: <input>: undefined field '{undefined[0]}'"))
            continue
        cost = celcost.estimate(tree, schema) * cardinality
        if cost > celcost.PER_RULE_LIMIT:
            errors.append(error(where, FORBIDDEN, detail='estimated rule cost exceeds budget by factor of '
                                f'{_factor(cost, celcost.PER_RULE_LIMIT)} {_COST_HINT}'))
        total += cost
    return total


def _list_type_errors(schema: Mapping[str, Any], path: str) -> list[FieldError]:
    list_type = schema.get('x-kubernetes-list-type')
    keys = schema.get('x-kubernetes-list-map-keys')
    errors = []
    if list_type is not None and list_type not in ('atomic', 'set', 'map'):
        errors.append(error(f'{path}.x-kubernetes-list-type', NOT_SUPPORTED, list_type,
                            'supported values: "atomic", "map", "set"'))
    if keys and list_type != 'map':
        errors.append(error(f'{path}.x-kubernetes-list-map-keys', FORBIDDEN,
                            detail='can only be set if x-kubernetes-list-type is map'))
    if list_type != 'map':
        return errors
    items: Mapping[str, Any] = schema['items'] if isinstance(schema.get('items'), Mapping) else {}
    if not keys:
        errors.append(error(f'{path}.x-kubernetes-list-map-keys', REQUIRED,
                            detail='must not be empty if x-kubernetes-list-type is map'))
    if items.get('type') != 'object':
        errors.append(error(f'{path}.items.type', INVALID, items.get('type', ''),
                            "must be object if parent array's x-kubernetes-list-type is map"))
    properties = items.get('properties') or {}
    for key in keys or ():
        if key not in properties:
            errors.append(error(f'{path}.x-kubernetes-list-map-keys', INVALID, keys,
                                'entries must all be names of item properties'))
        elif key not in (items.get('required') or ()) and 'default' not in properties[key]:
            errors.append(error(f'{path}.items.properties[{key}].default', REQUIRED,
                                detail='this property is in x-kubernetes-list-map-keys, so it must have a default '
                                       'or be a required property'))
    return errors
