"""What the server knows of each resource: names and scope for discovery, versions, schemas, columns."""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import kmock

from controller.sandbox.schema import apply_defaults

_VERSION_RE = re.compile(r'^v(\d+)(?:(alpha|beta)(\d+))?$')


@dataclasses.dataclass
class ResourceType:
    """What the server knows of one resource: discovery data and its schemas."""
    group: str
    plural: str
    kind: str
    namespaced: bool
    versions: tuple[str, ...]
    storage_version: str
    singular: str = ''
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    schemas: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # version -> openAPIV3Schema
    printer_columns: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    delete_returns_object: bool = True
    crd_name: str | None = None

    @property
    def qualified(self) -> str:
        """``plural.group`` (``secrets`` for the core group), as error messages name it."""
        return f'{self.plural}.{self.group}' if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f'{self.kind}.{self.group}' if self.group else self.kind

    @property
    def verbs(self) -> list[str]:
        return ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch']

    def api_version(self, version: str | None = None) -> str:
        version = version or self.storage_version
        return f'{self.group}/{version}' if self.group else version

    def storage_key(self) -> kmock.resource:
        return kmock.resource(self.group, self.storage_version, self.plural)


def builtin_types() -> list[ResourceType]:
    """The resources every server has (of those an operator and kubectl's common verbs need)."""
    return [
        ResourceType(group='', plural='namespaces', kind='Namespace', singular='namespace', namespaced=False,
                     versions=('v1',), storage_version='v1', short_names=('ns',), status_subresource=True),
        ResourceType(group='', plural='secrets', kind='Secret', singular='secret', namespaced=True,
                     versions=('v1',), storage_version='v1', delete_returns_object=False),
        ResourceType(group='', plural='configmaps', kind='ConfigMap', singular='configmap', namespaced=True,
                     versions=('v1',), storage_version='v1', short_names=('cm',), delete_returns_object=False),
        ResourceType(group='', plural='events', kind='Event', singular='event', namespaced=True,
                     versions=('v1',), storage_version='v1', short_names=('ev',), delete_returns_object=False),
        ResourceType(group='coordination.k8s.io', plural='leases', kind='Lease', singular='lease', namespaced=True,
                     versions=('v1',), storage_version='v1', delete_returns_object=False),
        ResourceType(group='apiextensions.k8s.io', plural='customresourcedefinitions',
                     kind='CustomResourceDefinition', singular='customresourcedefinition', namespaced=False,
                     versions=('v1',), storage_version='v1', short_names=('crd', 'crds'),
                     categories=('api-extensions',), status_subresource=True),
    ]


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key: GA before beta before alpha, higher numbers first (as Kubernetes does)."""
    match = _VERSION_RE.match(version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    rank = {None: 0, 'beta': 1, 'alpha': 2}[stage]
    return (rank, -int(major), -int(minor or 0), version)


def versioned(obj: dict[str, Any], rtype: ResourceType, version: str) -> dict[str, Any]:
    """``obj`` as served under ``version`` (objects are stored once, served under every version), with
    the version's schema defaults filled in: the server defaults what it reads from etcd too, so a default
    added to a CRD shows in objects stored before it (``apiextensions-apiserver/pkg/apiserver/
    customresource_handler.go``: the storage codec's ``schemaCoercingDecoder`` runs structural defaulting)."""
    schema = rtype.schemas.get(version) or rtype.schemas.get(rtype.storage_version)
    if schema and has_defaults(schema):
        obj = apply_defaults(schema, obj)
    api_version = rtype.api_version(version)
    if obj.get('apiVersion') == api_version:
        return obj
    return {**obj, 'apiVersion': api_version}


_DEFAULTS_SEEN: dict[int, tuple[dict[str, Any], bool]] = {}


def has_defaults(schema: dict[str, Any]) -> bool:
    """True if a ``default`` sits anywhere in ``schema`` (remembered per schema object)."""
    seen = _DEFAULTS_SEEN.get(id(schema))
    if seen is None or seen[0] is not schema:
        seen = _DEFAULTS_SEEN[id(schema)] = (schema, '"default"' in json.dumps(schema))
    return seen[1]


@dataclasses.dataclass
class Target:
    """What a resource URL names: the resource and version, and the namespace, name and subresource if any."""
    rtype: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None
