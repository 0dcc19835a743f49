"""A CRD's ``additionalPrinterColumns``, checked as the server checks them when the CRD is written.

``staging/src/k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go``,
``ValidateCustomResourceColumnDefinition`` and ``validateSimpleJSONPath``: a name, a type among
``boolean``, ``date``, ``integer``, ``number`` and ``string``, a known format if any, and a JSONPath that
starts with ``.``.  The table convertor then parses ``{<jsonPath>}`` with ``k8s.io/client-go/util/jsonpath``;
brackets and quotes that do not close are refused here as that parse refuses them.
"""
from __future__ import annotations

from typing import Any

from controller.sandbox import schema as schemas
from controller.sandbox.kube.errors import cause

_TYPES = ('boolean', 'date', 'integer', 'number', 'string')
_FORMATS = ('byte', 'date', 'date-time', 'double', 'float', 'int32', 'int64', 'password')


def column_errors(columns: Any, path: str) -> list[schemas.FieldError]:
    """The errors of ``spec.versions[i].additionalPrinterColumns`` at ``path``."""
    errors: list[schemas.FieldError] = []
    for index, column in enumerate(columns if isinstance(columns, list) else ()):
        where = f'{path}[{index}]'
        if not isinstance(column, dict):
            errors.append(cause(where, schemas.INVALID, column, 'must be an object'))
            continue
        if not column.get('name'):
            errors.append(cause(f'{where}.name', schemas.REQUIRED))
        type_ = column.get('type') or ''
        if type_ not in _TYPES:
            reason = schemas.INVALID if type_ else schemas.REQUIRED
            errors.append(cause(f'{where}.type', reason, type_, f'must be one of {",".join(_TYPES)}'))
        if column.get('format') and column['format'] not in _FORMATS:
            errors.append(cause(f'{where}.format', schemas.INVALID, column['format'],
                                f'must be one of {",".join(_FORMATS)}'))
        errors += _json_path_errors(str(column.get('jsonPath') or ''), f'{where}.jsonPath')
    return errors


def _json_path_errors(path: str, where: str) -> list[schemas.FieldError]:
    if not path:
        return [cause(where, schemas.REQUIRED)]
    if not path.startswith('.'):
        return [cause(where, schemas.INVALID, path, 'must be a simple json path starting with .')]
    if not _balanced(path):
        return [cause(where, schemas.INVALID, path, 'unclosed bracket or quote in the JSONPath')]
    return []


def _balanced(path: str) -> bool:
    depth, quote = 0, ''
    for char in path:
        if quote:
            quote = '' if char == quote else quote
        elif char in '"\'':
            quote = char
        elif char in '[(':
            depth += 1
        elif char in '])':
            depth -= 1
            if depth < 0:
                return False
    return depth == 0 and not quote
