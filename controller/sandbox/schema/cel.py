"""``x-kubernetes-validations``: CEL rules evaluated with a real CEL implementation (cel-python), on every node.

The API server compiles each rule once per CRD and evaluates it wherever the node it sits on has a value:
objects, lists, maps and scalars alike (``staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/schema/
cel/validation.go``, ``validateExpressions``).  ``self`` is the node's value typed by its schema (an
``integer`` is an int, a ``number`` a double, int-or-string is dynamic); rules that read ``oldSelf``
(transition rules) run only on updates, which this emulator does not thread through, so they are skipped
as the server skips them on create.  A rule that evaluates to false gives ``Invalid value: "<schema
type>": <message>`` (or the rule's ``reason``); one that fails to evaluate gives ``<error> evaluating
rule: <rule>``, as the server words them.
"""
from __future__ import annotations

import collections
import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from controller.sandbox.schema.errors import INVALID, VALUELESS, FieldError, child, error

_ENV = celpy.Environment()


class RuleCompileError(ValueError):
    """A rule CEL cannot parse."""


@functools.lru_cache(maxsize=1024)
def compiled(rule: str) -> Any:
    """The parsed rule (a lark tree); :class:`RuleCompileError` when CEL refuses it."""
    try:
        return _ENV.compile(rule)
    except CELParseError as e:
        raise RuleCompileError(' '.join(str(e).split())) from None


@functools.lru_cache(maxsize=1024)
def _program(rule: str) -> Any:
    return _ENV.program(compiled(rule))


@functools.lru_cache(maxsize=1024)
def uses_old_self(rule: str) -> bool:
    """A transition rule: it reads ``oldSelf``."""
    return any(getattr(token, 'value', None) == 'oldSelf' for token in compiled(rule).scan_values(lambda _: True))


def to_cel(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` as a CEL value of the type its schema declares (``UnstructuredToVal`` in the server)."""
    type_ = schema.get('type')
    if isinstance(value, dict):
        properties = schema.get('properties') or {}
        extra = schema.get('additionalProperties')
        return celtypes.MapType({
            celtypes.StringType(key): to_cel(properties.get(key) or (extra if isinstance(extra, Mapping) else {}), item)
            for key, item in value.items()})
    if isinstance(value, list):
        items = _mapping(schema.get('items'))
        return celtypes.ListType([to_cel(items, item) for item in value])
    if type_ == 'number' and isinstance(value, (int, float)) and not isinstance(value, bool):
        return celtypes.DoubleType(value)
    if type_ == 'integer' and isinstance(value, float) and value.is_integer():
        return celtypes.IntType(int(value))
    return json_to_cel(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# Results by (rule, schema node, value): CEL is deterministic, cel-python interprets its parse tree (a few
# milliseconds a rule), and the emulator validates the same spec again on every status write.
_RESULTS: collections.OrderedDict[tuple[str, int, str], tuple[Mapping[str, Any], bool | str]] = \
    collections.OrderedDict()
_RESULTS_KEPT = 4096


def evaluate(rule: str, schema: Mapping[str, Any], value: Any) -> bool | str:
    """True or False as the rule holds for ``value``, or the error text when it cannot be evaluated."""
    key = (rule, id(schema), json.dumps(value, sort_keys=True))
    cached = _RESULTS.get(key)
    if cached is not None and cached[0] is schema:
        _RESULTS.move_to_end(key)
        return cached[1]
    result = _evaluate(rule, schema, value)
    _RESULTS[key] = (schema, result)
    while len(_RESULTS) > _RESULTS_KEPT:
        _RESULTS.popitem(last=False)
    return result


def _evaluate(rule: str, schema: Mapping[str, Any], value: Any) -> bool | str:
    try:
        result = _program(rule).evaluate({'self': to_cel(schema, value)})
    except RuleCompileError as e:
        return f'rule compile error: {e}'
    except (CELEvalError, TypeError, ValueError, ArithmeticError, LookupError) as e:
        return _eval_error(e)
    if isinstance(result, CELEvalError):
        return _eval_error(result)
    if isinstance(result, celtypes.BoolType):
        return bool(result)
    return f'rule evaluated to {type(result).__name__}, not bool'


def _eval_error(e: Exception) -> str:
    return ' '.join(str(e.args[0] if e.args else e).split())


def cel_errors(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[FieldError]:
    """The errors of the rules ``value`` breaks at ``path``; nothing for a null (the server skips it)."""
    if value is None:
        return
    type_name = schema.get('type') or ''
    for rule in schema.get('x-kubernetes-validations') or ():
        if not isinstance(rule, Mapping) or not isinstance(rule.get('rule'), str):
            continue
        text = rule['rule']
        message = (rule.get('message') or '').strip()
        try:
            if uses_old_self(text):
                continue
        except RuleCompileError as e:
            yield error(path, INVALID, type_name, f'rule compile error: {e}')
            continue
        outcome = evaluate(text, schema, value)
        if outcome is True:
            continue
        if isinstance(outcome, str):
            yield error(path, INVALID, type_name, f'{outcome} evaluating rule: {message or text.strip()}')
            continue
        field = path
        if isinstance(rule.get('fieldPath'), str) and rule['fieldPath'].startswith('.'):
            field = child(path, rule['fieldPath'][1:])
        detail = message or f'failed rule: {text.strip()}'
        reason = rule.get('reason') or INVALID
        if reason in VALUELESS:
            yield error(field, reason, detail=detail)
        else:
            yield error(field, reason, type_name, detail)
