"""An estimate of a CEL rule's worst-case cost, to refuse CRDs whose rules a server would refuse.

The server estimates each rule's cost from the schema's bounds when the CRD is written (cel-go's
``checker/cost.go`` with the Kubernetes size estimator of ``apiextensions-apiserver/pkg/apiserver/schema/
cel/compilation.go``) and refuses the CRD when one rule, multiplied by how many times it can run (the
``maxItems``/``maxProperties`` of the lists and maps above it), exceeds ``StaticEstimatedCostLimit``
(10,000,000), or all rules together exceed ``StaticEstimatedCRDCostLimit`` (100,000,000)
(``k8s.io/apiserver/pkg/apis/cel/config.go``).  A string without ``maxLength`` or a list without
``maxItems`` is sized by the largest request the server takes (3 MiB).

This is the same model at a coarser grain: one unit per operation, string traversals (``contains``,
``startsWith``, ``matches``...) at 0.1 per character of the receiver's ``maxLength`` (cel-go's
``StringTraversalCostFactor``), and a comprehension (``all``, ``exists``, ``map``, ``filter``) at its
body's cost times the receiver's ``maxItems``.  It agrees with the server on the cases that matter (an
unbounded string read in an unbounded list is refused; a bounded one is not), not to the unit.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from lark import Token, Tree

MAX_REQUEST_BYTES = 3 * 1024 * 1024
PER_RULE_LIMIT = 10_000_000
PER_CRD_LIMIT = 100_000_000
_TRAVERSALS = frozenset({'contains', 'startsWith', 'endsWith', 'matches', 'lowerAscii', 'upperAscii', 'trim',
                         'replace', 'split', 'indexOf', 'lastIndexOf', 'substring', 'join', 'find', 'findAll'})
_COMPREHENSIONS = frozenset({'all', 'exists', 'exists_one', 'map', 'filter'})
_OPERATIONS = frozenset({'member_dot', 'member_dot_arg', 'member_index', 'ident_arg', 'conditionalor',
                         'conditionaland', 'expr', 'unary_not', 'unary_neg'})


def max_length(schema: Mapping[str, Any] | None) -> int:
    """The longest a string can be (characters), or the largest request for an unbounded one."""
    if schema and isinstance(schema.get('maxLength'), int):
        return int(schema['maxLength'])
    if schema and isinstance(schema.get('enum'), list) and schema['enum']:
        return max(len(str(option)) for option in schema['enum'])
    return MAX_REQUEST_BYTES - 2


def max_items(schema: Mapping[str, Any] | None) -> int:
    """How many items (or map entries) there can be: maxItems/maxProperties, or as many as fit a request."""
    for key in ('maxItems', 'maxProperties'):
        if schema and isinstance(schema.get(key), int):
            return int(schema[key])
    return (MAX_REQUEST_BYTES - 2) // 3  # the smallest item, "" or 0, and a comma


def estimate(tree: Tree[Any], schema: Mapping[str, Any]) -> int:
    """The estimated worst-case cost of a parsed rule whose ``self`` has ``schema``."""
    return _cost(tree, {'self': schema})


def _cost(node: Any, scope: dict[str, Mapping[str, Any] | None]) -> int:
    if not isinstance(node, Tree):
        return 0
    if node.data == 'member_dot_arg':
        receiver, method, args = node.children[0], str(node.children[1]), node.children[2]
        receiver_schema = schema_of(receiver, scope)
        if method in _COMPREHENSIONS and isinstance(args, Tree) and len(args.children) == 2:
            variable = _ident(args.children[0])
            items = receiver_schema.get('items') if receiver_schema else None
            inner = {**scope, variable or '_': items if isinstance(items, Mapping) else None}
            return _cost(receiver, scope) + max_items(receiver_schema) * (1 + _cost(args.children[1], inner))
        own = 1 + (math.ceil(0.1 * max_length(receiver_schema)) if method in _TRAVERSALS else 0)
        return own + _cost(receiver, scope) + _cost(args, scope)
    own = 1 if node.data in _OPERATIONS or str(node.data).startswith(('relation_', 'addition_',
                                                                      'multiplication_')) else 0
    return own + sum(_cost(child, scope) for child in node.children)


def _ident(node: Any) -> str | None:
    """The identifier an expression is, if it is just one (``x`` in ``all(x, ...)``)."""
    found = [token for token in (node.scan_values(lambda v: isinstance(v, Token)) if isinstance(node, Tree) else ())]
    return str(found[0]) if len(found) == 1 and found[0].type == 'IDENT' else None


def undefined_fields(tree: Tree[Any], schema: Mapping[str, Any]) -> list[str]:
    """Fields a rule reads from ``self`` that its schema does not declare: cel-go's type check refuses them
    (``undefined field 'x'``) where the object's fields are known (properties, no preserve-unknown-fields)."""
    found = []
    for node in _subtrees(tree):
        if node.data != 'member_dot':
            continue
        parent = schema_of(node.children[0], {'self': schema})
        if parent is None or parent.get('type') != 'object' or parent.get('x-kubernetes-preserve-unknown-fields'):
            continue
        if isinstance(parent.get('additionalProperties'), Mapping):
            continue  # a map: any key may be asked for
        name = str(node.children[1])
        if name not in (parent.get('properties') or {}):
            found.append(name)
    return found


def _subtrees(node: Tree[Any]) -> Iterator[Tree[Any]]:
    yield node
    for child in node.children:
        if isinstance(child, Tree):
            yield from _subtrees(child)


def schema_of(node: Any, scope: dict[str, Mapping[str, Any] | None]) -> Mapping[str, Any] | None:
    """The schema of the value an expression reads (``self.a.b``, ``x``), or None when it is not a path."""
    if not isinstance(node, Tree):
        return None
    if node.data in ('member', 'primary') and len(node.children) == 1:
        return schema_of(node.children[0], scope)
    if node.data == 'ident':
        return scope.get(str(node.children[0]))
    if node.data == 'member_dot':
        parent = schema_of(node.children[0], scope)
        if parent is None:
            return None
        name = str(node.children[1])
        properties = parent.get('properties') or {}
        extra = parent.get('additionalProperties')
        return properties.get(name) or (extra if isinstance(extra, Mapping) else None)
    if node.data == 'member_index':
        parent = schema_of(node.children[0], scope)
        if parent is None:
            return None
        inner = parent.get('items') or parent.get('additionalProperties')
        return inner if isinstance(inner, Mapping) else None
    return None
