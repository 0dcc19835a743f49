"""Admission: what an object must be to be stored, and what the server makes of it on the way in.

Per-kind rules (a Secret's ``stringData``, a Namespace's phase, a CRD's
names and status), then the resource's schema: prune, default, validate.
"""
from __future__ import annotations

import base64
import datetime
import re
from typing import Any

from controller.sandbox import schema as schemas
from controller.sandbox.kube.crds import DNS_LABEL, complete_crd, crd_resource_type
from controller.sandbox.kube.errors import ApiError, bad_request, cause, invalid
from controller.sandbox.kube.resources import ResourceType
from controller.sandbox.kube.store import Store

_DNS_SUBDOMAIN = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')


def now() -> str:
    """The server's timestamp format (``creationTimestamp``, ``deletionTimestamp``...)."""
    return datetime.datetime.now(tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """apiVersion, kind, metadata first, as the server prints them."""
    head: dict[str, Any] = {key: obj[key] for key in ('apiVersion', 'kind', 'metadata') if key in obj}
    return {**head, **{key: value for key, value in obj.items() if key not in head}}


def spec_of(rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """What a change of bumps ``generation``: all but metadata (and status, where it is a subresource)."""
    skip = {'metadata', 'apiVersion', 'kind'} | ({'status'} if rtype.status_subresource else set())
    return {key: value for key, value in obj.items() if key not in skip}


def _secret_data(obj: dict[str, Any]) -> None:
    """Fold a Secret's ``stringData`` into ``data`` (base64), as the server does on write."""
    string_data = obj.pop('stringData', None) or {}
    data = obj.setdefault('data', {}) if string_data or 'data' in obj else None
    for key, value in string_data.items():
        assert data is not None
        data[key] = base64.b64encode(str(value).encode()).decode()
    obj.setdefault('type', 'Opaque')


class Admission(Store):
    __slots__ = ()

    def _check_kind(self, rtype: ResourceType, body: dict[str, Any]) -> None:
        kind, api_version = body.get('kind'), body.get('apiVersion')
        if kind and kind != rtype.kind:
            raise bad_request(f'the kind of the provided object ({kind}) does not match the resource ({rtype.kind})')
        if api_version and api_version not in {rtype.api_version(v) for v in rtype.versions}:
            raise bad_request(f'the API version in the data ({api_version}) does not match'
                              f' the expected API version ({rtype.api_version()})')

    def _check_namespace(self, namespace: str) -> None:
        ns_obj = self._current(self._types['', 'namespaces'], None, namespace)
        if ns_obj is None:
            if self.require_namespaces:
                raise ApiError(404, 'NotFound', f'namespaces "{namespace}" not found',
                               {'name': namespace, 'kind': 'namespaces'})
        elif ns_obj['metadata'].get('deletionTimestamp'):
            raise ApiError(403, 'Forbidden', f'unable to create new content in namespace {namespace}'
                                             f' because it is being terminated',
                           {'name': namespace, 'kind': 'namespaces'})

    @staticmethod
    def _check_name(rtype: ResourceType, name: str) -> None:
        if rtype.plural == 'namespaces' and rtype.group == '':
            ok, what = bool(DNS_LABEL.match(name)) and len(name) <= 63, 'a lowercase RFC 1123 label'
        else:
            ok, what = bool(_DNS_SUBDOMAIN.match(name)) and len(name) <= 253, 'a lowercase RFC 1123 subdomain'
        if not ok:
            raise invalid(rtype, name, [cause(
                'metadata.name', schemas.INVALID, name,
                f"{what} must consist of lower case alphanumeric characters, '-' or '.',"
                f" and must start and end with an alphanumeric character")])

    def _admit(self, rtype: ResourceType, version: str, name: str, obj: dict[str, Any],
               old: dict[str, Any] | None, *, strict: bool) -> dict[str, Any]:
        """Normalise, prune, default and validate an object about to be stored."""
        if rtype.group == '' and rtype.plural == 'secrets':
            _secret_data(obj)
        elif rtype.group == '' and rtype.plural == 'namespaces':
            obj.setdefault('status', {}).setdefault('phase', 'Active')
        elif rtype.group == 'apiextensions.k8s.io' and rtype.plural == 'customresourcedefinitions':
            obj = self._admit_crd(obj, old)

        schema = rtype.schemas.get(version) or rtype.schemas.get(rtype.storage_version)
        if schema:
            obj, errors = schemas.prune(schema, obj, strict=strict)
            obj = schemas.apply_defaults(schema, obj)
            errors += schemas.validate(schema, obj)
            if errors:
                raise invalid(rtype, name, errors)
        return obj

    def _admit_crd(self, crd: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        rtype, errors = crd_resource_type(crd)
        name = (crd.get('metadata') or {}).get('name', '')
        crd_type = self._types['apiextensions.k8s.io', 'customresourcedefinitions']
        if rtype is not None:
            existing = self._types.get((rtype.group, rtype.plural))
            if existing is not None and existing.crd_name != name:
                errors.append(cause('spec.names.plural', schemas.INVALID, rtype.plural,
                                    'the resource is already served by the API server'))
        if errors or rtype is None:
            raise invalid(crd_type, name, errors)
        return complete_crd(crd, rtype, old, now())
