"""Field errors worded as the API server words them (``field.Error`` in Go)."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

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
VALUELESS = frozenset({REQUIRED, FORBIDDEN, TOO_LONG})


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


def go_value(value: Any) -> str:
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
    return error(field, reason, value, detail)


def error(field: str, reason: str, value: Any = None, detail: str = '') -> FieldError:
    """:func:`field_error` with positional arguments, for the schema checks' many call sites."""
    label = _LABELS.get(reason, 'Invalid value')
    body = label if reason in VALUELESS else f'{label}: {go_value(value)}'
    if detail:
        body = f'{body}: {detail}'
    return FieldError(field=field, reason=reason, message=body)


def child(path: str, key: str) -> str:
    """The path of ``key`` under ``path`` (``spec`` + ``source`` = ``spec.source``)."""
    return f'{path}.{key}' if path else key
