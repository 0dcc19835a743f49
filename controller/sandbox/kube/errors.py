"""API failures, rendered as Kubernetes ``Status`` objects with the real server's reasons."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controller.sandbox import schema as schemas

if TYPE_CHECKING:
    from controller.sandbox.kube.resources import ResourceType


class ApiError(Exception):
    """An API failure, rendered as a ``Status`` with the real server's shape."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure',
            'message': self.message, 'reason': self.reason, 'code': self.code,
        }
        if self.details is not None:
            body['details'] = self.details
        return body


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, 'NotFound', f'{rtype.qualified} "{name}" not found',
                    {'name': name, 'group': rtype.group, 'kind': rtype.plural})


def no_route() -> ApiError:
    return ApiError(404, 'NotFound', 'the server could not find the requested resource', {})


def conflict(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, 'Conflict',
                    f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the object has been modified;'
                    f' please apply your changes to the latest version and try again',
                    {'name': name, 'group': rtype.group, 'kind': rtype.plural})


def bad_request(message: str) -> ApiError:
    return ApiError(400, 'BadRequest', message)


def method_not_allowed() -> ApiError:
    return ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')


def cause(field: str, reason: str, value: Any = None, detail: str = '') -> schemas.FieldError:
    """One invalid field of a 422 (a ``StatusCause``), worded as the server words it."""
    return schemas.field_error(field, reason, value=value, detail=detail)


def invalid(rtype: ResourceType, name: str, errors: list[schemas.FieldError]) -> ApiError:
    return ApiError(422, 'Invalid', f'{rtype.qualified_kind} "{name}" is invalid: {schemas.format_errors(errors)}', {
        'name': name, 'group': rtype.group, 'kind': rtype.kind,
        'causes': [{'reason': e.reason, 'message': e.message, 'field': e.field} for e in errors],
    })
