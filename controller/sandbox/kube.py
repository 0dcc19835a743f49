"""A Kubernetes API emulator with the contract of a real API server.

Why this exists: the operator's end-to-end tests and the embedded sandbox
(``panda-deploy demo``) need a Kubernetes API to talk to, and no real API
server (kind, k3s, minikube, etcd) can be installed on the machines where they
run.  A naive in-memory store is not enough either: the operator's correctness
rests on the API contract -- ``generation`` bumped by spec changes only,
``resourceVersion`` for optimistic concurrency and watch resumption, the
``status`` subresource, JSON merge-patch null deletion, finalizers, and the
CRD's schema refusing invalid specs.  Tests against a store without these
rules would pass where a cluster fails.

:class:`ClusterEmulator` extends :class:`kmock.KubernetesEmulator` (it keeps its
``objects`` history, its request log and its DSL for injecting faults) with
those rules; :class:`ClusterServer` serves it on ``127.0.0.1`` from a
background thread or inside a running event loop and writes a kubeconfig, so
that Kopf, the ``kubernetes`` client and ``kubectl`` reach it exactly as they
reach a cluster.  ``python -m controller.sandbox.kube`` runs it standalone.

Out of scope (not needed by an operator or by kubectl's common verbs): auth,
admission webhooks, protobuf, pagination (``limit`` is ignored, everything
comes in one page), CRD version conversion (objects are stored once and served
under every served version), garbage collection by owner references.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import copy
import dataclasses
import datetime
import json
import pathlib
import random
import re
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, NamedTuple, Self

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import apps, k8s_dicts, rendering

from controller.sandbox import schema as schemas

__all__ = ['ClusterEmulator', 'ClusterServer', 'ResourceType', 'Write', 'ApiError', 'main']

CONTEXT_NAME = 'panda-sandbox'
DEFAULT_NAMESPACES = ('default', 'kube-system', 'kube-public', 'kube-node-lease')
_NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789'
_DNS_SUBDOMAIN = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')
_DNS_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
_VERSION_RE = re.compile(r'^v(\d+)(?:(alpha|beta)(\d+))?$')


# ---------------------------------------------------------------------------
# Resource types.

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


def _builtin_types() -> list[ResourceType]:
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


def _version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key: GA before beta before alpha, higher numbers first (as Kubernetes does)."""
    match = _VERSION_RE.match(version)
    if not match:
        return (3, 0, 0, version)
    major, stage, minor = match.groups()
    rank = {None: 0, 'beta': 1, 'alpha': 2}[stage]
    return (rank, -int(major), -int(minor or 0), version)


# ---------------------------------------------------------------------------
# Errors rendered as Kubernetes Status objects.

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


def _not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, 'NotFound', f'{rtype.qualified} "{name}" not found',
                    {'name': name, 'group': rtype.group, 'kind': rtype.plural})


def _no_route() -> ApiError:
    return ApiError(404, 'NotFound', 'the server could not find the requested resource', {})


def _conflict(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, 'Conflict',
                    f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the object has been modified;'
                    f' please apply your changes to the latest version and try again',
                    {'name': name, 'group': rtype.group, 'kind': rtype.plural})


def _bad_request(message: str) -> ApiError:
    return ApiError(400, 'BadRequest', message)


def _field(field: str, reason: str, value: Any = None, detail: str = '') -> schemas.FieldError:
    return schemas.field_error(field, reason, value=value, detail=detail)


def _invalid(rtype: ResourceType, name: str, errors: list[schemas.FieldError]) -> ApiError:
    return ApiError(422, 'Invalid', f'{rtype.qualified_kind} "{name}" is invalid: {schemas.format_errors(errors)}', {
        'name': name, 'group': rtype.group, 'kind': rtype.kind,
        'causes': [{'reason': e.reason, 'message': e.message, 'field': e.field} for e in errors],
    })


# ---------------------------------------------------------------------------
# Selectors.

Predicate = Callable[[Mapping[str, Any]], bool]


def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside ``in (a,b)`` parentheses."""
    parts, depth, current = [], 0, ''
    for char in text:
        if char == ',' and depth == 0:
            parts.append(current)
            current = ''
            continue
        depth += (char == '(') - (char == ')')
        current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


_SET_RE = re.compile(r'^([^\s!=()]+)\s+(in|notin)\s*\(([^)]*)\)$')
_EQ_RE = re.compile(r'^([^\s!=]+)\s*(==|=|!=)\s*([^\s!=]*)$')


def label_selector(text: str | None) -> Predicate:
    """Compile a label selector (``a=b,c!=d,e,!f,g in (x,y),h notin (z)``) into a predicate over objects."""
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for part in _split_selector(text or ''):
        if match := _SET_RE.match(part):
            key, op, values_text = match.groups()
            values = {v.strip() for v in values_text.split(',') if v.strip()}
            if op == 'in':
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif match := _EQ_RE.match(part):
            key, op, value = match.groups()
            if op == '!=':
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif part.startswith('!') and re.match(r'^![^\s!=(),]+$', part):
            tests.append(lambda labels, k=part[1:]: k not in labels)
        elif re.match(r'^[^\s!=(),]+$', part):
            tests.append(lambda labels, k=part: k in labels)
        else:
            raise _bad_request(f'unable to parse requirement: invalid label selector: {part!r}')

    def predicate(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get('metadata') or {}).get('labels') or {}
        return all(test(labels) for test in tests)
    return predicate


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for key in path.split('.'):
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None:
        return ''
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def field_selector(text: str | None) -> Predicate:
    """Compile a field selector (``metadata.name=x,involvedObject.kind!=Pod``) into a predicate."""
    tests: list[Callable[[Mapping[str, Any]], bool]] = []
    for part in _split_selector(text or ''):
        match = _EQ_RE.match(part)
        if not match:
            raise _bad_request(f'invalid field selector: {part!r}')
        path, op, value = match.groups()
        if op == '!=':
            tests.append(lambda obj, p=path, v=value: _field_value(obj, p) != v)
        else:
            tests.append(lambda obj, p=path, v=value: _field_value(obj, p) == v)
    return lambda obj: all(test(obj) for test in tests)


# ---------------------------------------------------------------------------
# Patches.

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: null deletes a key, lists and scalars replace."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(value: Any) -> Any:
    """Drop strategic-merge-patch directives (``$patch``, ``$setElementOrder/...``)."""
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith('$')}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# The emulator.

class Write(NamedTuple):
    """One mutating request, as recorded in :attr:`ClusterEmulator.writes`."""
    method: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


class _Event(NamedTuple):
    rv: int
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclasses.dataclass(eq=False)
class _Watcher:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Event | None]

    def send(self, event: _Event | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the watch is over anyway
            pass


@dataclasses.dataclass
class _Target:
    rtype: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


def _ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """apiVersion, kind, metadata first, as the server prints them."""
    head = {key: obj[key] for key in ('apiVersion', 'kind', 'metadata') if key in obj}
    return {**head, **{key: value for key, value in obj.items() if key not in head}}


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(body).encode(), status=status, content_type='application/json')


@attrs.define(kw_only=True, eq=False)
class ClusterEmulator(kmock.KubernetesEmulator):
    """:class:`kmock.KubernetesEmulator` with a real API server's contract.

    Objects get ``uid``, ``creationTimestamp``, ``generation`` (bumped only when
    something outside ``metadata`` changes, and never by ``status`` where the
    status subresource is on) and a global ``resourceVersion``.  Watches resume
    from a ``resourceVersion`` (or answer ``410 Gone``), honour label and field
    selectors and ``timeoutSeconds``.  PATCH follows the Content-Type (merge,
    strategic-as-merge, JSON patch, apply-as-merge), PUT and PATCH check
    ``resourceVersion``; the status subresource isolates ``status``; finalizers
    hold deletion; CRDs register their resources for discovery and their
    schemas validate, prune and default objects; errors are ``Status`` objects
    with the real reasons.  Reactions added through kmock's DSL
    (``emulator['get /api/v1/...'] << 500``) take precedence, for fault injection.

    All state changes happen synchronously under one lock, so :meth:`get`,
    :meth:`list_objects`, :meth:`create` and :meth:`add_crd` are safe from any
    thread while the server runs elsewhere; :attr:`writes` (append-only) and
    kmock's :attr:`objects` (with each object's history) are safe to read
    once the requests of interest have completed.
    """

    event_log_size: int = 10000
    history_limit: int = 50
    require_namespaces: bool = False

    writes: list[Write] = attrs.field(factory=list, init=False)
    _types: dict[tuple[str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _mutex: threading.RLock = attrs.field(factory=threading.RLock, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _event_log: dict[tuple[str, str], collections.deque[_Event]] = attrs.field(factory=dict, init=False)
    _event_floor: dict[tuple[str, str], int] = attrs.field(factory=dict, init=False)
    _watchers: dict[tuple[str, str], set[_Watcher]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        # Deliberately not calling kmock's: its fallback reactions are replaced by _serve().
        for rtype in _builtin_types():
            self._register(rtype)
        with self._mutex:
            for namespace in DEFAULT_NAMESPACES:
                self._create(self._types['', 'namespaces'], 'v1', None,
                             {'metadata': {'name': namespace}}, strict=False, dry_run=False)

    # -- public, thread-safe Python API --------------------------------------

    @property
    def resource_version(self) -> int:
        """The current (latest) global resourceVersion."""
        return self._rv

    @property
    def resource_types(self) -> list[ResourceType]:
        with self._mutex:
            return list(self._types.values())

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A deep copy of the live object, or None; safe from any thread.

        ``plural`` is ``pandadeploys`` or, to disambiguate, ``pandadeploys.deploy.panda.dev``.
        """
        with self._mutex:
            rtype = self._type_by_plural(plural)
            if rtype is None:
                return None
            current = self._current(rtype, namespace if rtype.namespaced else None, name)
            return copy.deepcopy(current) if current is not None else None

    def list_objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Deep copies of the live objects of a resource (all namespaces if None)."""
        with self._mutex:
            rtype = self._type_by_plural(plural)
            if rtype is None:
                return []
            return [copy.deepcopy(obj) for obj in self._iter_current(rtype, namespace)]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object from its manifest (``apiVersion``/``kind`` pick the resource)."""
        with self._mutex:
            rtype, version = self._type_by_kind(body.get('apiVersion', ''), body.get('kind', ''))
            namespace = (body.get('metadata') or {}).get('namespace') or ('default' if rtype.namespaced else None)
            return copy.deepcopy(self._create(rtype, version, namespace, body, strict=False, dry_run=False))

    def add_crd(self, crd: dict[str, Any]) -> dict[str, Any]:
        """Create (or replace) a CustomResourceDefinition and register its resource."""
        rtype = self._types['apiextensions.k8s.io', 'customresourcedefinitions']
        with self._mutex:
            name = (crd.get('metadata') or {}).get('name', '')
            old = self._current(rtype, None, name)
            if old is None:
                return copy.deepcopy(self._create(rtype, 'v1', None, crd, strict=False, dry_run=False))
            body = copy.deepcopy(crd)
            body.setdefault('metadata', {}).pop('resourceVersion', None)
            return copy.deepcopy(self._update(rtype, 'v1', None, name, old, body, subresource=None,
                                              strict=False, dry_run=False))

    def close_watches(self) -> None:
        """End every open watch stream (used at shutdown)."""
        with self._mutex:
            for watchers in self._watchers.values():
                for watcher in watchers:
                    watcher.send(None)

    # -- registry -------------------------------------------------------------

    def _register(self, rtype: ResourceType) -> None:
        with self._mutex:
            key = (rtype.group, rtype.plural)
            previous = self._types.get(key)
            self._types[key] = rtype
            if previous is not None and previous.storage_version != rtype.storage_version:
                self._rekey(previous, rtype)
            self._sync_kmock_resources()

    def _unregister(self, group: str, plural: str) -> None:
        with self._mutex:
            rtype = self._types.pop((group, plural), None)
            if rtype is None:
                return
            for obj in list(self._iter_current(rtype, None)):
                meta = obj['metadata']
                self._remove(rtype, meta.get('namespace'), meta['name'], obj)
            for watcher in self._watchers.pop((group, plural), set()):
                watcher.send(None)
            self._sync_kmock_resources()

    def _rekey(self, previous: ResourceType, rtype: ResourceType) -> None:
        """Move stored objects under a new storage version's key."""
        old_key, new_key = previous.storage_key(), rtype.storage_key()
        for (resource, namespace, name), obj in list(self._objects.items()):
            if resource == old_key:
                del self._objects[resource, namespace, name]
                self._objects[new_key, namespace, name] = list(obj.history)

    def _sync_kmock_resources(self) -> None:
        self.resources.clear()
        for rtype in self._types.values():
            for version in rtype.versions:
                self.resources[kmock.resource(rtype.group, version, rtype.plural)] = kmock.ResourceInfo(
                    namespaced=rtype.namespaced, kind=rtype.kind, singular=rtype.singular,
                    verbs=rtype.verbs, shortnames=rtype.short_names, categories=rtype.categories,
                    subresources={'status'} if rtype.status_subresource else set(),
                )

    def _type_by_plural(self, plural: str) -> ResourceType | None:
        name, _, group = plural.partition('.')
        for rtype in self._types.values():
            if rtype.plural == name and (not group or rtype.group == group):
                return rtype
        return None

    def _type_by_kind(self, api_version: str, kind: str) -> tuple[ResourceType, str]:
        group, _, version = api_version.rpartition('/')
        for rtype in self._types.values():
            if rtype.group == group and rtype.kind == kind and version in rtype.versions:
                return rtype, version
        raise _bad_request(f'no matches for kind "{kind}" in version "{api_version}"')

    # -- storage ----------------------------------------------------------------

    def _entry(self, rtype: ResourceType, namespace: str | None, name: str) -> k8s_dicts.Object | None:
        key = (rtype.storage_key(), namespace, name)
        return self._objects[key] if key in self._objects else None

    def _current(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        entry = self._entry(rtype, namespace, name)
        return None if entry is None or entry.deleted else self._normalized(rtype, namespace, name, entry.raw)

    def _iter_current(self, rtype: ResourceType, namespace: str | None) -> Iterator[dict[str, Any]]:
        key = rtype.storage_key()
        found = [(ns or '', name, entry) for (resource, ns, name), entry in self._objects.items()
                 if resource == key and not entry.deleted and (namespace is None or ns == namespace)]
        for ns, name, entry in sorted(found, key=lambda item: (item[0], item[1])):
            yield self._normalized(rtype, ns or None, name, entry.raw)

    def _normalized(self, rtype: ResourceType, namespace: str | None, name: str, raw: dict[str, Any]) -> dict[str, Any]:
        """Objects put into ``objects`` by a test directly may lack the basics: fill them in."""
        meta = raw.get('metadata')
        if isinstance(meta, dict) and meta.get('name') == name and 'resourceVersion' in meta \
                and raw.get('kind') and raw.get('apiVersion'):
            return raw
        obj = dict(raw)
        obj.setdefault('apiVersion', rtype.api_version())
        obj.setdefault('kind', rtype.kind)
        meta = dict(obj.get('metadata') or {})
        meta.setdefault('name', name)
        if namespace:
            meta.setdefault('namespace', namespace)
        meta.setdefault('resourceVersion', str(self._rv))
        obj['metadata'] = meta
        return obj

    def _store(self, rtype: ResourceType, namespace: str | None, name: str, obj: dict[str, Any]) -> None:
        entry = self._entry(rtype, namespace, name)
        if entry is None:
            self._objects[rtype.storage_key(), namespace, name] = obj
            return
        if entry.deleted:
            entry.create(obj)
        else:
            entry.history.append(obj)
        if self.history_limit and len(entry.history) > self.history_limit:
            del entry.history[:len(entry.history) - self.history_limit]

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, rtype: ResourceType, type_: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        key = (rtype.group, rtype.plural)
        log = self._event_log.setdefault(key, collections.deque(maxlen=self.event_log_size))
        if log.maxlen is not None and len(log) >= log.maxlen:
            self._event_floor[key] = log[0].rv
        event = _Event(int(obj['metadata']['resourceVersion']), type_, obj, old)
        log.append(event)
        for watcher in self._watchers.get(key, ()):
            watcher.send(event)

    # -- write operations (synchronous, under the mutex) -------------------------

    def _create(self, rtype: ResourceType, version: str, namespace: str | None, body: Any,
                *, strict: bool, dry_run: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad_request('the body of the request was not a JSON object')
        obj = copy.deepcopy(body)
        meta = obj.get('metadata')
        if not isinstance(meta, dict):
            meta = obj['metadata'] = {}
        self._check_kind(rtype, obj)
        obj['apiVersion'], obj['kind'] = rtype.api_version(), rtype.kind

        if rtype.namespaced:
            if meta.get('namespace') and namespace and meta['namespace'] != namespace:
                raise _bad_request('the namespace of the provided object does not match the namespace sent on the request')
            namespace = namespace or meta.get('namespace')
            if not namespace:
                raise ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')
            meta['namespace'] = namespace
            self._check_namespace(namespace)
        else:
            meta.pop('namespace', None)
            namespace = None

        if meta.get('resourceVersion'):
            raise _bad_request('resourceVersion should not be set on objects to be created')
        if not meta.get('name'):
            if meta.get('generateName'):
                for _ in range(10):
                    meta['name'] = meta['generateName'] + ''.join(random.choices(_NAME_CHARS, k=5))
                    if self._current(rtype, namespace, meta['name']) is None:
                        break
            else:
                raise _invalid(rtype, '', [_field('metadata.name', schemas.REQUIRED,
                                                           detail='name or generateName is required')])
        name = meta['name']
        self._check_name(rtype, name)
        if self._current(rtype, namespace, name) is not None:
            raise ApiError(409, 'AlreadyExists', f'{rtype.qualified} "{name}" already exists',
                           {'name': name, 'group': rtype.group, 'kind': rtype.plural})

        if rtype.status_subresource:
            obj.pop('status', None)
        for key in ('uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds',
                    'generation', 'selfLink'):
            meta.pop(key, None)
        obj = _ordered(self._admit(rtype, version, name, obj, None, strict=strict))
        meta = obj['metadata']
        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = _now()
        meta['generation'] = 1
        if dry_run:
            meta['resourceVersion'] = str(self._rv)
            return obj
        meta['resourceVersion'] = self._next_rv()
        self._store(rtype, namespace, name, obj)
        self._emit(rtype, 'ADDED', obj, None)
        self._after_write(rtype, obj, None)
        return obj

    def _update(self, rtype: ResourceType, version: str, namespace: str | None, name: str,
                old: dict[str, Any], body: Any, *, subresource: str | None,
                strict: bool, dry_run: bool) -> dict[str, Any]:
        """Replace ``old`` with ``body`` (a PUT, or the result of applying a patch)."""
        if not isinstance(body, dict):
            raise _bad_request('the body of the request was not a JSON object')
        meta = body.get('metadata') if isinstance(body.get('metadata'), dict) else {}
        if meta.get('resourceVersion') and str(meta['resourceVersion']) != old['metadata']['resourceVersion']:
            raise _conflict(rtype, name)
        if meta.get('name') and meta['name'] != name:
            raise _bad_request(f'the name of the object ({meta["name"]}) does not match the name on the URL ({name})')
        if rtype.namespaced and meta.get('namespace') and meta['namespace'] != namespace:
            raise _bad_request('the namespace of the provided object does not match the namespace sent on the request')
        self._check_kind(rtype, body)

        if subresource == 'status':
            new = copy.deepcopy(old)
            if 'status' in body:
                new['status'] = copy.deepcopy(body['status'])
            else:
                new.pop('status', None)
        else:
            new = copy.deepcopy(body)
            new['metadata'] = copy.deepcopy(meta)
            if rtype.status_subresource:
                if 'status' in old:
                    new['status'] = copy.deepcopy(old['status'])
                else:
                    new.pop('status', None)
        new['apiVersion'], new['kind'] = rtype.api_version(), rtype.kind
        new_meta = new['metadata']
        for key in ('name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp',
                    'deletionGracePeriodSeconds', 'generation', 'resourceVersion'):
            if key in old['metadata']:
                new_meta[key] = old['metadata'][key]
            else:
                new_meta.pop(key, None)
        if old['metadata'].get('deletionTimestamp'):
            added = set(new_meta.get('finalizers') or ()) - set(old['metadata'].get('finalizers') or ())
            if added:
                raise _invalid(rtype, name, [_field(
                    'metadata.finalizers', schemas.FORBIDDEN,
                    detail=f'no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)!r}')])

        new = _ordered(self._admit(rtype, version, name, new, old, strict=strict))
        new_meta = new['metadata']
        if self._spec_of(rtype, new) != self._spec_of(rtype, old):
            new_meta['generation'] = int(old['metadata'].get('generation') or 1) + 1
        if new == old:
            return old  # a no-op write changes nothing: no new resourceVersion, no event
        if dry_run:
            return new
        if new_meta.get('deletionTimestamp') and not new_meta.get('finalizers'):
            return self._remove(rtype, namespace, name, new, old=old)
        new_meta['resourceVersion'] = self._next_rv()
        self._store(rtype, namespace, name, new)
        self._emit(rtype, 'MODIFIED', new, old)
        self._after_write(rtype, new, old)
        return new

    def _delete(self, rtype: ResourceType, namespace: str | None, name: str, options: Any,
                *, dry_run: bool) -> dict[str, Any]:
        old = self._current(rtype, namespace, name)
        if old is None:
            raise _not_found(rtype, name)
        preconditions = (options or {}).get('preconditions') if isinstance(options, dict) else None
        if preconditions:
            if preconditions.get('uid') and preconditions['uid'] != old['metadata'].get('uid'):
                raise ApiError(409, 'Conflict', f'Precondition failed: UID in precondition: {preconditions["uid"]},'
                                                f' UID in object meta: {old["metadata"].get("uid")}',
                               {'name': name, 'group': rtype.group, 'kind': rtype.plural})
            if preconditions.get('resourceVersion') and preconditions['resourceVersion'] != old['metadata']['resourceVersion']:
                raise _conflict(rtype, name)
        if old['metadata'].get('deletionTimestamp'):
            return old
        if dry_run:
            return old
        if old['metadata'].get('finalizers') or (rtype.plural == 'namespaces' and rtype.group == ''):
            new = copy.deepcopy(old)
            new['metadata']['deletionTimestamp'] = _now()
            new['metadata']['deletionGracePeriodSeconds'] = 0
            new['metadata']['resourceVersion'] = self._next_rv()
            if rtype.plural == 'namespaces' and rtype.group == '':
                new.setdefault('status', {})['phase'] = 'Terminating'
            self._store(rtype, namespace, name, new)
            self._emit(rtype, 'MODIFIED', new, old)
            if rtype.plural == 'namespaces' and rtype.group == '':
                self._terminate_namespace(name)
                return self._current(rtype, None, name) or new
            return new
        return self._remove(rtype, namespace, name, old, old=old)

    def _remove(self, rtype: ResourceType, namespace: str | None, name: str, last: dict[str, Any],
                *, old: dict[str, Any] | None = None) -> dict[str, Any]:
        """Drop the object for good, as ``last`` (its states stay in the kmock history)."""
        final = copy.deepcopy(last)
        final['metadata']['resourceVersion'] = self._next_rv()
        self._store(rtype, namespace, name, final)
        entry = self._entry(rtype, namespace, name)
        assert entry is not None
        entry.delete()
        self._emit(rtype, 'DELETED', final, old)
        if rtype.group == 'apiextensions.k8s.io' and rtype.plural == 'customresourcedefinitions':
            spec = final.get('spec') or {}
            self._unregister(spec.get('group', ''), (spec.get('names') or {}).get('plural', ''))
        if namespace is not None:
            self._reap_namespace(namespace)
        return final

    def _terminate_namespace(self, namespace: str) -> None:
        for rtype in list(self._types.values()):
            if rtype.namespaced:
                for obj in list(self._iter_current(rtype, namespace)):
                    self._delete(rtype, namespace, obj['metadata']['name'], None, dry_run=False)
        self._reap_namespace(namespace)

    def _reap_namespace(self, namespace: str) -> None:
        ns_type = self._types['', 'namespaces']
        ns_obj = self._current(ns_type, None, namespace)
        if ns_obj is None or not ns_obj['metadata'].get('deletionTimestamp'):
            return
        for rtype in self._types.values():
            if rtype.namespaced and next(self._iter_current(rtype, namespace), None) is not None:
                return
        self._remove(ns_type, None, namespace, ns_obj, old=ns_obj)

    # -- admission: per-kind rules and schemas --------------------------------

    def _check_kind(self, rtype: ResourceType, body: dict[str, Any]) -> None:
        kind, api_version = body.get('kind'), body.get('apiVersion')
        if kind and kind != rtype.kind:
            raise _bad_request(f'the kind of the provided object ({kind}) does not match the resource ({rtype.kind})')
        if api_version and api_version not in {rtype.api_version(v) for v in rtype.versions}:
            raise _bad_request(f'the API version in the data ({api_version}) does not match'
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

    def _check_name(self, rtype: ResourceType, name: str) -> None:
        if rtype.plural == 'namespaces' and rtype.group == '':
            ok, what = bool(_DNS_LABEL.match(name)) and len(name) <= 63, 'a lowercase RFC 1123 label'
        else:
            ok, what = bool(_DNS_SUBDOMAIN.match(name)) and len(name) <= 253, 'a lowercase RFC 1123 subdomain'
        if not ok:
            raise _invalid(rtype, name, [_field(
                'metadata.name', schemas.INVALID, name,
                f"{what} must consist of lower case alphanumeric characters, '-' or '.',"
                f" and must start and end with an alphanumeric character")])

    @staticmethod
    def _spec_of(rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        skip = {'metadata', 'apiVersion', 'kind'} | ({'status'} if rtype.status_subresource else set())
        return {key: value for key, value in obj.items() if key not in skip}

    def _admit(self, rtype: ResourceType, version: str, name: str, obj: dict[str, Any],
               old: dict[str, Any] | None, *, strict: bool) -> dict[str, Any]:
        """Normalise, prune, default and validate an object about to be stored."""
        if rtype.group == '' and rtype.plural == 'secrets':
            string_data = obj.pop('stringData', None) or {}
            data = obj.setdefault('data', {}) if string_data or 'data' in obj else None
            for key, value in string_data.items():
                assert data is not None
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj.setdefault('type', 'Opaque')
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
                raise _invalid(rtype, name, errors)
        return obj

    def _admit_crd(self, crd: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        rtype, errors = _crd_resource_type(crd)
        name = (crd.get('metadata') or {}).get('name', '')
        crd_type = self._types['apiextensions.k8s.io', 'customresourcedefinitions']
        if rtype is not None:
            existing = self._types.get((rtype.group, rtype.plural))
            if existing is not None and existing.crd_name != name:
                errors.append(_field('spec.names.plural', schemas.INVALID, rtype.plural,
                                             'the resource is already served by the API server'))
        if errors or rtype is None:
            raise _invalid(crd_type, name, errors)
        spec = crd['spec']
        names = spec['names']
        names.setdefault('singular', rtype.singular)
        names.setdefault('listKind', f'{rtype.kind}List')
        spec.setdefault('conversion', {'strategy': 'None'})
        now = _now()
        stored = set((old or {}).get('status', {}).get('storedVersions') or ()) | {rtype.storage_version}
        crd['status'] = {
            'acceptedNames': copy.deepcopy(names),
            'conditions': [
                {'type': 'NamesAccepted', 'status': 'True', 'reason': 'NoConflicts',
                 'message': 'no conflicts found', 'lastTransitionTime': now},
                {'type': 'Established', 'status': 'True', 'reason': 'InitialNamesAccepted',
                 'message': 'the initial names have been accepted', 'lastTransitionTime': now},
            ],
            'storedVersions': sorted(stored),
        }
        if old is not None and old.get('status', {}).get('conditions'):
            crd['status']['conditions'] = old['status']['conditions']
        return crd

    def _after_write(self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if rtype.group == 'apiextensions.k8s.io' and rtype.plural == 'customresourcedefinitions':
            new_type, _ = _crd_resource_type(obj)
            if new_type is None:
                return
            if old is not None:
                old_spec = old.get('spec') or {}
                old_key = (old_spec.get('group', ''), (old_spec.get('names') or {}).get('plural', ''))
                if old_key != (new_type.group, new_type.plural):
                    self._unregister(*old_key)
            self._register(new_type)

    # -- HTTP --------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's own path parser fails on some valid paths (e.g. /api/v1/namespaces);
        # such requests are still recorded, only without kmock's Kubernetes fields.
        await raw_request.read()
        try:
            request = await rendering.Request._parse(raw_request, id=len(self._requests))
        except ValueError:
            try:
                data = await raw_request.json()
            except ValueError:
                data = None
            request = rendering.Request(
                id=len(self._requests), raw_request=raw_request, url=raw_request.url, method=raw_request.method,
                params=dict(raw_request.query), headers=dict(raw_request.headers), cookies=dict(raw_request.cookies),
                data=data, body=await raw_request.read(), text=await raw_request.text(),
            )
        self._requests.append(request)
        return await self._handle(request)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if self._payloads:  # reactions added via kmock's DSL (fault injection) go first
            try:
                return await apps.RawHandler._handle(self, request)
            except NotImplementedError:
                pass
        try:
            return await self._serve(request)
        except ApiError as e:
            return _json(e.status(), status=e.code)
        except Exception as e:  # noqa: BLE001 -- a server answers 500, it does not crash
            return _json(ApiError(500, 'InternalError', f'Internal error occurred: {e!r}').status(), status=500)

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path
        method = request.method.value.upper() if request.method is not None else 'GET'
        segments = [segment for segment in path.split('/') if segment]
        if method == 'GET':
            match segments:
                case []:
                    return _json(self._paths())
                case ['version']:
                    return _json(self._server_version())
                case ['healthz' | 'readyz' | 'livez', *_]:
                    return aiohttp.web.Response(text='ok')
                case ['api']:
                    return _json({'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
                        {'clientCIDR': '0.0.0.0/0', 'serverAddress': request.url.host or '127.0.0.1'}]})
                case ['apis']:
                    return _json(self._group_list())
                case ['api', version]:
                    return _json(self._resource_list('', version))
                case ['apis', group]:
                    return _json(self._group(group))
                case ['apis', group, version]:
                    return _json(self._resource_list(group, version))
                case ['openapi', 'v3']:
                    return _json(self._openapi_root())
                case ['openapi', 'v3', 'api' | 'apis', *gv]:
                    return _json(self._openapi_doc('' if segments[2] == 'api' else gv[0], gv[-1]))
        match segments:
            case ['api', version, *rest] if rest:
                target = self._target('', version, rest)
            case ['apis', group, version, *rest] if rest:
                target = self._target(group, version, rest)
            case _:
                raise _no_route()
        return await self._serve_resource(request, method, target)

    def _target(self, group: str, version: str, rest: list[str]) -> _Target:
        with self._mutex:
            namespace: str | None = None
            if rest[0] == 'namespaces' and len(rest) >= 3:
                rtype = self._types.get((group, rest[2]))
                if rtype is not None and rtype.namespaced:
                    namespace, rest = rest[1], rest[2:]
            rtype = self._types.get((group, rest[0]))
            if rtype is None or version not in rtype.versions:
                raise _no_route()
            if namespace is not None and not rtype.namespaced:
                raise _no_route()
            name = rest[1] if len(rest) > 1 else None
            subresource = '/'.join(rest[2:]) or None
            if subresource is not None and not (subresource == 'status' and rtype.status_subresource):
                raise _no_route()
            return _Target(rtype, version, namespace, name, subresource)

    async def _serve_resource(self, request: rendering.Request, method: str, target: _Target) -> aiohttp.web.StreamResponse:
        params = request.params
        rtype, version = target.rtype, target.version
        dry_run = 'dryRun' in params
        strict = params.get('fieldValidation', '').lower() == 'strict'

        if method in ('POST', 'PUT', 'PATCH', 'DELETE'):
            name = target.name
            if name is None and method == 'POST' and isinstance(request.data, dict):
                name = (request.data.get('metadata') or {}).get('name')
            self.writes.append(Write(method, rtype.plural, target.namespace, name, target.subresource))

        if method == 'GET' and _truthy(params.get('watch')):
            return await self._watch(request, target)
        if method == 'GET' and target.name is None:
            listing = self._list(target, params)
            if _wants_table(request):
                return _json(self._table(rtype, version, listing['items'], resource_version=listing['metadata']['resourceVersion']))
            return _json(listing)
        if method == 'GET':
            with self._mutex:
                obj = self._current(rtype, target.namespace, target.name)
            if obj is None:
                raise _not_found(rtype, target.name)
            if _wants_table(request):
                return _json(self._table(rtype, version, [obj], resource_version=obj['metadata']['resourceVersion']))
            return _json(self._versioned(obj, rtype, version))
        if method == 'POST' and target.name is None:
            body = self._body(request)
            with self._mutex:
                obj = self._create(rtype, version, target.namespace, body, strict=strict, dry_run=dry_run)
            return _json(self._versioned(obj, rtype, version), status=201)
        if method == 'PUT' and target.name is not None:
            body = self._body(request)
            with self._mutex:
                old = self._current(rtype, target.namespace, target.name)
                if old is None:
                    raise _not_found(rtype, target.name)
                obj = self._update(rtype, version, target.namespace, target.name, old, body,
                                   subresource=target.subresource, strict=strict, dry_run=dry_run)
            return _json(self._versioned(obj, rtype, version))
        if method == 'PATCH' and target.name is not None:
            return await self._patch(request, target, strict=strict, dry_run=dry_run)
        if method == 'DELETE' and target.name is not None and target.subresource is None:
            options = request.data if isinstance(request.data, dict) else None
            with self._mutex:
                obj = self._delete(rtype, target.namespace, target.name, options, dry_run=dry_run)
            if rtype.delete_returns_object:
                return _json(self._versioned(obj, rtype, version))
            return _json({'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Success',
                          'details': {'name': target.name, 'group': rtype.group, 'kind': rtype.plural,
                                      'uid': obj['metadata'].get('uid')}})
        if method == 'DELETE' and target.name is None:
            return _json(self._delete_collection(target, params, dry_run=dry_run))
        raise ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource')

    @staticmethod
    def _body(request: rendering.Request) -> Any:
        if request.data is not None:
            return request.data
        if request.text.strip():
            try:
                return yaml.safe_load(request.text)
            except yaml.YAMLError as e:
                raise _bad_request(f'the body of the request could not be decoded: {e}') from None
        raise _bad_request('the body of the request is empty')

    async def _patch(self, request: rendering.Request, target: _Target, *, strict: bool, dry_run: bool) -> aiohttp.web.Response:
        rtype, version, name = target.rtype, target.version, target.name
        assert name is not None
        raw_headers = request._raw_request.headers if request._raw_request is not None else request.headers
        content_type = (raw_headers.get('Content-Type') or '').split(';')[0].strip().lower()
        patch = self._body(request)
        with self._mutex:
            old = self._current(rtype, target.namespace, name)
            if content_type == 'application/apply-patch+yaml' and old is None:
                if isinstance(patch, dict):
                    patch.setdefault('metadata', {}).setdefault('name', name)
                obj = self._create(rtype, version, target.namespace, patch, strict=strict, dry_run=dry_run)
                return _json(self._versioned(obj, rtype, version), status=201)
            if old is None:
                raise _not_found(rtype, name)
            base = self._versioned(old, rtype, version)
            if content_type == 'application/json-patch+json':
                if not isinstance(patch, list):
                    raise _bad_request('the body of a JSON patch must be a list of operations')
                try:
                    candidate = jsonpatch.apply_patch(base, patch)
                except jsonpatch.JsonPatchTestFailed as e:
                    raise ApiError(422, 'Invalid', f'the server rejected our request due to an error in our request: {e}',
                                   {'name': name, 'group': rtype.group, 'kind': rtype.plural}) from None
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    raise ApiError(422, 'Invalid', f'the server rejected our request due to an error in our request: {e}',
                                   {'name': name, 'group': rtype.group, 'kind': rtype.plural}) from None
            elif content_type in ('application/merge-patch+json', 'application/strategic-merge-patch+json',
                                  'application/apply-patch+yaml'):
                if not isinstance(patch, dict):
                    raise _bad_request('the body of a merge patch must be a JSON object')
                if content_type == 'application/strategic-merge-patch+json':
                    patch = _strip_directives(patch)
                candidate = merge_patch(base, patch)
            else:
                raise ApiError(415, 'UnsupportedMediaType',
                               f'the body of the request was in an unknown format - accepted media types include:'
                               f' application/json-patch+json, application/merge-patch+json,'
                               f' application/apply-patch+yaml, application/strategic-merge-patch+json')
            obj = self._update(rtype, version, target.namespace, name, old, candidate,
                               subresource=target.subresource, strict=strict, dry_run=dry_run)
        return _json(self._versioned(obj, rtype, version))

    def _delete_collection(self, target: _Target, params: Mapping[str, str], *, dry_run: bool) -> dict[str, Any]:
        labels, fields = label_selector(params.get('labelSelector')), field_selector(params.get('fieldSelector'))
        deleted = []
        with self._mutex:
            for obj in list(self._iter_current(target.rtype, target.namespace)):
                if labels(obj) and fields(obj):
                    meta = obj['metadata']
                    deleted.append(self._delete(target.rtype, meta.get('namespace'), meta['name'], None, dry_run=dry_run))
            rv = str(self._rv)
        return {'kind': f'{target.rtype.kind}List', 'apiVersion': target.rtype.api_version(target.version),
                'metadata': {'resourceVersion': rv},
                'items': [self._versioned(obj, target.rtype, target.version) for obj in deleted]}

    def _list(self, target: _Target, params: Mapping[str, str]) -> dict[str, Any]:
        labels, fields = label_selector(params.get('labelSelector')), field_selector(params.get('fieldSelector'))
        with self._mutex:
            items = [obj for obj in self._iter_current(target.rtype, target.namespace) if labels(obj) and fields(obj)]
            rv = str(self._rv)
        return {'kind': f'{target.rtype.kind}List', 'apiVersion': target.rtype.api_version(target.version),
                'metadata': {'resourceVersion': rv},
                'items': [self._versioned(obj, target.rtype, target.version) for obj in items]}

    @staticmethod
    def _versioned(obj: dict[str, Any], rtype: ResourceType, version: str) -> dict[str, Any]:
        api_version = rtype.api_version(version)
        if obj.get('apiVersion') == api_version:
            return obj
        return {**obj, 'apiVersion': api_version}

    async def _watch(self, request: rendering.Request, target: _Target) -> aiohttp.web.StreamResponse:
        params = request.params
        rtype, version = target.rtype, target.version
        labels, fields = label_selector(params.get('labelSelector')), field_selector(params.get('fieldSelector'))
        if target.name is not None:
            by_name = field_selector(f'metadata.name={target.name}')
            fields = lambda obj, f=fields: f(obj) and by_name(obj)  # noqa: E731

        def matches(obj: Mapping[str, Any] | None) -> bool:
            if obj is None:
                return False
            if target.namespace is not None and (obj.get('metadata') or {}).get('namespace') != target.namespace:
                return False
            return labels(obj) and fields(obj)

        try:
            timeout = float(params['timeoutSeconds']) if params.get('timeoutSeconds') else None
        except ValueError:
            raise _bad_request(f'invalid timeoutSeconds: {params["timeoutSeconds"]!r}') from None
        since = params.get('resourceVersion') or ''
        send_initial = _truthy(params.get('sendInitialEvents'))
        bookmarks = _truthy(params.get('allowWatchBookmarks'))
        if since and not since.isdigit():
            raise _bad_request(f'invalid resourceVersion: {since!r}')

        key = (rtype.group, rtype.plural)
        watcher = _Watcher(loop=asyncio.get_running_loop(), queue=asyncio.Queue())
        backlog: list[tuple[str, dict[str, Any]]] = []
        gone = False
        with self._mutex:
            start_rv = self._rv
            if since in ('', '0') or send_initial:
                backlog = [('ADDED', obj) for obj in self._iter_current(rtype, target.namespace) if matches(obj)]
            elif int(since) < self._event_floor.get(key, 0):
                gone = True
            else:
                for event in self._event_log.get(key, ()):
                    if event.rv > int(since) and (translated := _translate(event, matches)) is not None:
                        backlog.append(translated)
            if not gone:
                self._watchers.setdefault(key, set()).add(watcher)

        raw = request._raw_request
        assert raw is not None
        response = aiohttp.web.StreamResponse(status=200, headers={'Content-Type': 'application/json'})
        response.enable_chunked_encoding()
        await response.prepare(raw)

        as_table = _wants_table(request)

        async def send(type_: str, obj: dict[str, Any]) -> None:
            if as_table and type_ in ('ADDED', 'MODIFIED', 'DELETED'):
                obj = self._table(rtype, version, [obj], resource_version=obj['metadata']['resourceVersion'])
            line = json.dumps({'type': type_, 'object': obj}).encode() + b'\n'
            await response.write(line)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        try:
            if gone:
                floor = self._event_floor.get(key, 0)
                await send('ERROR', ApiError(410, 'Expired', f'too old resource version: {since} ({floor})').status())
                deadline = loop.time()  # a real server ends the stream after the error
            for type_, obj in backlog:
                await send(type_, self._versioned(obj, rtype, version))
            if send_initial and bookmarks:
                await send('BOOKMARK', {'kind': rtype.kind, 'apiVersion': rtype.api_version(version), 'metadata': {
                    'resourceVersion': str(start_rv), 'annotations': {'k8s.io/initial-events-end': 'true'}}})
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), timeout=remaining)
                except TimeoutError:
                    break
                if event is None:
                    break
                if send_initial and event.rv <= start_rv:
                    continue
                translated = _translate(event, matches)
                if translated is not None:
                    await send(translated[0], self._versioned(translated[1], rtype, version))
        except ConnectionResetError:
            return response
        finally:
            with self._mutex:
                self._watchers.get(key, set()).discard(watcher)
        try:
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    # -- tables (kubectl get) ---------------------------------------------------------

    def _table(self, rtype: ResourceType, version: str, objs: list[dict[str, Any]], *,
               resource_version: str) -> dict[str, Any]:
        """A ``meta.k8s.io/v1`` Table, so ``kubectl get`` shows the columns a cluster shows."""
        columns = _builtin_columns(rtype) or [
            (column.get('name', ''), column.get('type', 'string'), column.get('jsonPath', ''))
            for column in rtype.printer_columns.get(version) or ()
        ] or [('Age', 'date', '.metadata.creationTimestamp')]
        name_last = rtype.group == '' and rtype.plural == 'events'  # as a cluster prints events: name in -o wide
        definitions = [{'name': name, 'type': type_, 'format': '', 'description': name, 'priority': 0}
                       for name, type_, _ in columns]
        name_column = {'name': 'Name', 'type': 'string', 'format': 'name', 'description': 'Name',
                       'priority': 1 if name_last else 0}
        definitions = definitions + [name_column] if name_last else [name_column] + definitions
        rows = []
        for obj in objs:
            cells: list[Any] = []
            for _, type_, json_path in columns:
                value = json_path(obj) if callable(json_path) else _json_path(obj, json_path)
                cells.append(_cell(value, type_))
            cells = cells + [obj['metadata'].get('name')] if name_last else [obj['metadata'].get('name')] + cells
            rows.append({'cells': cells, 'object': {
                'kind': 'PartialObjectMetadata', 'apiVersion': 'meta.k8s.io/v1', 'metadata': obj['metadata']}})
        return {'kind': 'Table', 'apiVersion': 'meta.k8s.io/v1', 'metadata': {'resourceVersion': resource_version},
                'columnDefinitions': definitions, 'rows': rows}

    # -- OpenAPI (only what kubectl needs to use server-side field validation) --------

    def _openapi_root(self) -> dict[str, Any]:
        with self._mutex:
            gvs = {(rtype.group, version) for rtype in self._types.values() for version in rtype.versions}
        paths = {}
        for group, version in sorted(gvs):
            key = f'apis/{group}/{version}' if group else f'api/{version}'
            paths[key] = {'serverRelativeURL': f'/openapi/v3/{key}?hash={self._rv}'}
        return {'paths': paths}

    def _openapi_doc(self, group: str, version: str) -> dict[str, Any]:
        with self._mutex:
            rtypes = [rtype for rtype in self._types.values() if rtype.group == group and version in rtype.versions]
        if not rtypes:
            raise _no_route()
        prefix = f'/apis/{group}/{version}' if group else f'/api/{version}'
        query = [{'name': name, 'in': 'query', 'schema': {'type': 'string', 'uniqueItems': True}}
                 for name in ('dryRun', 'fieldManager', 'fieldValidation', 'force')]
        paths: dict[str, Any] = {}
        schemas_: dict[str, Any] = {}
        for rtype in rtypes:
            gvk = {'group': group, 'version': version, 'kind': rtype.kind}
            item = f'{prefix}/namespaces/{{namespace}}/{rtype.plural}/{{name}}' if rtype.namespaced \
                else f'{prefix}/{rtype.plural}/{{name}}'
            content_types = ['application/json-patch+json', 'application/merge-patch+json', 'application/apply-patch+yaml']
            paths[item] = {'parameters': query, 'patch': {
                'operationId': f'patch{rtype.kind}', 'x-kubernetes-action': 'patch', 'parameters': query,
                'x-kubernetes-group-version-kind': gvk,
                'requestBody': {'content': {ct: {'schema': {'type': 'object'}} for ct in content_types}},
                'responses': {'200': {'description': 'OK'}},
            }}
            schema = copy.deepcopy(rtype.schemas.get(version) or {'type': 'object'})
            schema['x-kubernetes-group-version-kind'] = [gvk]
            schemas_['.'.join(reversed(group.split('.'))) + f'.{version}.{rtype.kind}' if group
                     else f'io.k8s.api.core.{version}.{rtype.kind}'] = schema
        return {'openapi': '3.0.0', 'info': {'title': 'Kubernetes', 'version': self._server_version()['gitVersion']},
                'paths': paths, 'components': {'schemas': schemas_}}

    # -- discovery ------------------------------------------------------------------

    def _paths(self) -> dict[str, Any]:
        paths = {'/api', '/api/v1', '/apis', '/version', '/healthz', '/readyz', '/livez'}
        with self._mutex:
            for rtype in self._types.values():
                if rtype.group:
                    paths.add(f'/apis/{rtype.group}')
                    paths.update(f'/apis/{rtype.group}/{version}' for version in rtype.versions)
        return {'paths': sorted(paths)}

    @staticmethod
    def _server_version() -> dict[str, Any]:
        return {'major': '1', 'minor': '31', 'gitVersion': 'v1.31.0-panda-sandbox', 'gitCommit': 'panda-sandbox',
                'gitTreeState': 'clean', 'buildDate': '2024-08-13T00:00:00Z', 'goVersion': 'go1.22.5',
                'compiler': 'gc', 'platform': 'linux/amd64'}

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, set[str]] = {}
        with self._mutex:
            for rtype in self._types.values():
                if rtype.group:
                    groups.setdefault(rtype.group, set()).update(rtype.versions)
        return {group: sorted(versions, key=_version_priority) for group, versions in sorted(groups.items())}

    def _group_list(self) -> dict[str, Any]:
        return {'kind': 'APIGroupList', 'apiVersion': 'v1',
                'groups': [self._group_body(group, versions) for group, versions in self._group_versions().items()]}

    def _group(self, group: str) -> dict[str, Any]:
        versions = self._group_versions().get(group)
        if not versions:
            raise _no_route()
        return {'kind': 'APIGroup', 'apiVersion': 'v1', **self._group_body(group, versions)}

    @staticmethod
    def _group_body(group: str, versions: list[str]) -> dict[str, Any]:
        return {'name': group,
                'versions': [{'groupVersion': f'{group}/{version}', 'version': version} for version in versions],
                'preferredVersion': {'groupVersion': f'{group}/{versions[0]}', 'version': versions[0]}}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        with self._mutex:
            rtypes = sorted((rtype for rtype in self._types.values()
                             if rtype.group == group and version in rtype.versions), key=lambda r: r.plural)
        if not rtypes:
            raise _no_route()
        resources: list[dict[str, Any]] = []
        for rtype in rtypes:
            entry: dict[str, Any] = {'name': rtype.plural, 'singularName': rtype.singular, 'namespaced': rtype.namespaced,
                                     'kind': rtype.kind, 'verbs': rtype.verbs}
            if rtype.short_names:
                entry['shortNames'] = list(rtype.short_names)
            if rtype.categories:
                entry['categories'] = list(rtype.categories)
            resources.append(entry)
            if rtype.status_subresource:
                resources.append({'name': f'{rtype.plural}/status', 'singularName': '', 'namespaced': rtype.namespaced,
                                  'kind': rtype.kind, 'verbs': ['get', 'patch', 'update']})
        return {'kind': 'APIResourceList', 'apiVersion': 'v1',
                'groupVersion': f'{group}/{version}' if group else version, 'resources': resources}


def _truthy(value: str | None) -> bool:
    """A query flag as Go's strconv.ParseBool reads it (clients send ``true``, ``True``, ``1``)."""
    return value in ('1', 't', 'T', 'true', 'True', 'TRUE')


def _wants_table(request: rendering.Request) -> bool:
    raw = request._raw_request
    accept = (raw.headers.get('Accept') if raw is not None else request.headers.get('Accept')) or ''
    return 'as=Table' in accept


_PATH_TOKEN = re.compile(r'\.([A-Za-z0-9_-]+)|\[(\d+|\*)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["\']([^"\']*)["\']\)\]')


def _json_path(obj: Any, path: str) -> Any:
    """The subset of JSONPath printer columns use: ``.a.b``, ``[0]``, ``[*]``, ``[?(@.type=="Ready")]``."""
    values = [obj]
    position = 0
    path = path.strip()
    if path.startswith('{') and path.endswith('}'):
        path = path[1:-1]
    while position < len(path):
        match = _PATH_TOKEN.match(path, position)
        if match is None:
            return None
        position = match.end()
        key, index, filter_key, filter_value = match.groups()
        found: list[Any] = []
        for value in values:
            if key is not None and isinstance(value, dict) and key in value:
                found.append(value[key])
            elif index == '*' and isinstance(value, list):
                found.extend(value)
            elif index is not None and index != '*' and isinstance(value, list) and int(index) < len(value):
                found.append(value[int(index)])
            elif filter_key is not None and isinstance(value, list):
                found.extend(item for item in value if str(_json_path(item, '.' + filter_key)) == filter_value)
        values = found
    if not values:
        return None
    return values[0] if len(values) == 1 else ','.join(str(v) for v in values)


def _age(timestamp: Any) -> str | None:
    if not isinstance(timestamp, str):
        return None
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace('Z', '+00:00'))
    except ValueError:
        return timestamp
    seconds = int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds())
    if seconds < 0:
        return '<invalid>'
    for unit, size in (('d', 86400), ('h', 3600), ('m', 60)):
        if seconds >= size * 2 or (unit == 'm' and seconds >= 120):
            return f'{seconds // size}{unit}'
    return f'{seconds}s'


def _cell(value: Any, type_: str) -> Any:
    if value is None:
        return None
    if type_ == 'date':
        return _age(value)
    if type_ == 'integer' and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _builtin_columns(rtype: ResourceType) -> list[tuple[str, str, Any]]:
    created = ('Age', 'date', '.metadata.creationTimestamp')
    match (rtype.group, rtype.plural):
        case ('', 'events'):
            return [
                ('Last Seen', 'date', lambda e: e.get('lastTimestamp') or e.get('eventTime')
                 or e['metadata'].get('creationTimestamp')),
                ('Type', 'string', '.type'), ('Reason', 'string', '.reason'),
                ('Object', 'string', lambda e: '{}/{}'.format(
                    str((e.get('involvedObject') or {}).get('kind', '')).lower(),
                    (e.get('involvedObject') or {}).get('name', ''))),
                ('Message', 'string', '.message'),
            ]
        case ('', 'namespaces'):
            return [('Status', 'string', '.status.phase'), created]
        case ('', 'secrets'):
            return [('Type', 'string', '.type'), ('Data', 'integer', lambda s: len(s.get('data') or {})), created]
        case ('', 'configmaps'):
            return [('Data', 'integer', lambda c: len(c.get('data') or {}) + len(c.get('binaryData') or {})), created]
        case ('coordination.k8s.io', 'leases'):
            return [('Holder', 'string', '.spec.holderIdentity'), created]
        case ('apiextensions.k8s.io', 'customresourcedefinitions'):
            return [('Created At', 'string', '.metadata.creationTimestamp')]
    return []


def _translate(event: _Event, matches: Callable[[Mapping[str, Any] | None], bool]) -> tuple[str, dict[str, Any]] | None:
    """Turn a store event into what a filtered watch sees (entering/leaving the selection)."""
    now_in = matches(event.obj)
    if event.type in ('ADDED', 'DELETED'):
        return (event.type, event.obj) if now_in else None
    was_in = matches(event.old)
    if now_in and was_in:
        return ('MODIFIED', event.obj)
    if now_in:
        return ('ADDED', event.obj)
    if was_in:
        return ('DELETED', event.obj)
    return None


def _crd_resource_type(crd: dict[str, Any]) -> tuple[ResourceType | None, list[schemas.FieldError]]:
    """Interpret a CRD into the resource it declares, or the reasons it is invalid."""
    errors: list[schemas.FieldError] = []
    error = _field
    spec = crd.get('spec')
    if not isinstance(spec, dict):
        return None, [error('spec', schemas.REQUIRED)]
    group = spec.get('group') or ''
    names = spec.get('names') if isinstance(spec.get('names'), dict) else {}
    plural, kind = names.get('plural') or '', names.get('kind') or ''
    if not group:
        errors.append(error('spec.group', schemas.REQUIRED))
    elif '.' not in group:
        errors.append(error('spec.group', schemas.INVALID, group, 'should be a domain with at least one dot'))
    if not plural:
        errors.append(error('spec.names.plural', schemas.REQUIRED))
    elif not _DNS_LABEL.match(plural):
        errors.append(error('spec.names.plural', schemas.INVALID, plural,
                            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"))
    if not kind:
        errors.append(error('spec.names.kind', schemas.REQUIRED))
    name = (crd.get('metadata') or {}).get('name', '')
    if group and plural and name != f'{plural}.{group}':
        errors.append(error('metadata.name', schemas.INVALID, name, 'must be spec.names.plural+"."+spec.group'))
    scope = spec.get('scope')
    if scope not in ('Namespaced', 'Cluster'):
        errors.append(error('spec.scope', schemas.NOT_SUPPORTED, scope or '', 'supported values: "Cluster", "Namespaced"'))
    versions = spec.get('versions') if isinstance(spec.get('versions'), list) else []
    if not versions:
        errors.append(error('spec.versions', schemas.REQUIRED, detail='must have exactly one version marked as storage version'))
    storage = [v for v in versions if isinstance(v, dict) and v.get('storage')]
    if versions and len(storage) != 1:
        errors.append(error('spec.versions', schemas.INVALID, [v.get('name') for v in versions if isinstance(v, dict)],
                            'must have exactly one version marked as storage version'))
    served: list[str] = []
    schemas_by_version: dict[str, dict[str, Any]] = {}
    columns: dict[str, list[dict[str, Any]]] = {}
    status_subresource = False
    for index, version in enumerate(versions):
        if not isinstance(version, dict) or not version.get('name'):
            errors.append(error(f'spec.versions[{index}].name', schemas.REQUIRED))
            continue
        if version.get('served', True):
            served.append(version['name'])
        open_api = ((version.get('schema') or {}).get('openAPIV3Schema'))
        if open_api is None:
            errors.append(error(f'spec.versions[{index}].schema.openAPIV3Schema', schemas.REQUIRED,
                                detail='schemas are required'))
        else:
            errors += schemas.structural_errors(open_api, path=f'spec.versions[{index}].schema.openAPIV3Schema')
            schemas_by_version[version['name']] = open_api
        if isinstance((version.get('subresources') or {}).get('status'), dict):
            status_subresource = True
        columns[version['name']] = list(version.get('additionalPrinterColumns') or ())
    if errors or not storage:
        return None, errors
    rtype = ResourceType(
        group=group, plural=plural, kind=kind, namespaced=scope == 'Namespaced',
        versions=tuple(sorted(served, key=_version_priority)), storage_version=storage[0]['name'],
        singular=names.get('singular') or kind.lower(), short_names=tuple(names.get('shortNames') or ()),
        categories=tuple(names.get('categories') or ()), status_subresource=status_subresource,
        schemas=schemas_by_version, printer_columns=columns, crd_name=name,
    )
    return rtype, []


# ---------------------------------------------------------------------------
# Serving.

class ClusterServer:
    """Serve a :class:`ClusterEmulator` over HTTP on 127.0.0.1.

    In a background thread with its own event loop (``start()``/``stop()`` or
    ``with ClusterServer() as server:``), or inside the running loop
    (``async with ClusterServer() as server:``, or ``await server.serve()``
    until cancelled).  ``port=0`` picks a free port.
    """

    def __init__(self, *, emulator: ClusterEmulator | None = None, host: str = '127.0.0.1', port: int = 0) -> None:
        self.emulator = emulator if emulator is not None else ClusterEmulator()
        self.host = host
        self._port = port
        self._runner: aiohttp.web.BaseRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError('the server is not running')
        return self._port

    @property
    def url(self) -> str:
        return f'http://{self.host}:{self.port}'

    def write_kubeconfig(self, path: str | pathlib.Path, *, namespace: str = 'default') -> pathlib.Path:
        """Write a kubeconfig (context ``panda-sandbox``, no credentials) for this server."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            'apiVersion': 'v1', 'kind': 'Config', 'preferences': {},
            'clusters': [{'name': CONTEXT_NAME, 'cluster': {'server': self.url}}],
            'users': [{'name': CONTEXT_NAME, 'user': {}}],
            'contexts': [{'name': CONTEXT_NAME, 'context': {
                'cluster': CONTEXT_NAME, 'user': CONTEXT_NAME, 'namespace': namespace}}],
            'current-context': CONTEXT_NAME,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- inside a running loop --

    async def start_async(self) -> Self:
        """Start serving in the current event loop."""
        if self._runner is not None:
            raise RuntimeError('the server is already running')
        await self.emulator.__aenter__()
        server = aiohttp.web.Server(self.emulator, handler_cancellation=True)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, self.host, self._port)
        await site.start()
        self._port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def stop_async(self) -> None:
        """Stop serving: end the watches, close the listener."""
        if self._runner is None:
            return
        self.emulator.close_watches()
        await asyncio.sleep(0)
        runner, self._runner = self._runner, None
        await runner.cleanup()
        await self.emulator.__aexit__(None, None, None)

    async def serve(self) -> None:
        """Serve until cancelled (starting if needed), then stop."""
        if self._runner is None:
            await self.start_async()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop_async()

    async def __aenter__(self) -> Self:
        return await self.start_async()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_async()

    # -- in a background thread --

    def start(self) -> Self:
        """Start serving from a background thread; returns once the port listens."""
        if self._thread is not None:
            raise RuntimeError('the server is already running')
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stopping = asyncio.Event()
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as e:  # noqa: BLE001 -- reported to the starting thread
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(self._stopping.wait())
                loop.run_until_complete(self.stop_async())
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name='kube-emulator', daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop the background thread's server and wait for it."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _load_manifests(paths: Iterable[str]) -> Iterator[dict[str, Any]]:
    for path in paths:
        for doc in yaml.safe_load_all(pathlib.Path(path).read_text()):
            if isinstance(doc, dict):
                yield doc


def main(argv: list[str] | None = None) -> int:
    """``python -m controller.sandbox.kube``: serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog='python -m controller.sandbox.kube',
                                     description='Serve the Kubernetes API emulator on 127.0.0.1.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0, help='0 picks a free port')
    parser.add_argument('--kubeconfig', help='write a kubeconfig for the server here')
    parser.add_argument('-f', '--manifest', action='append', default=[],
                        help='YAML file of objects (e.g. CRDs) to create at start; repeatable')
    args = parser.parse_args(argv)

    async def run() -> None:
        server = ClusterServer(host=args.host, port=args.port)
        for manifest in _load_manifests(args.manifest):
            if manifest.get('kind') == 'CustomResourceDefinition':
                server.emulator.add_crd(manifest)
            else:
                server.emulator.create(manifest)
        await server.start_async()
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig)
        print(f'listening on {server.url}', flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await server.stop_async()

    asyncio.run(run())
    return 0


if __name__ == '__main__':
    sys.exit(main())
