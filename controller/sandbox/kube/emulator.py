"""The emulator as a whole, and its thread-safe Python API for tests and the sandbox."""
from __future__ import annotations

import copy
from typing import Any

from controller.sandbox.kube.resources import ResourceType, builtin_types
from controller.sandbox.kube.routes import Routes

DEFAULT_NAMESPACES = ('default', 'kube-system', 'kube-public', 'kube-node-lease')


class ClusterEmulator(Routes):
    """:class:`kmock.KubernetesEmulator` with a real API server's contract.

    Objects get ``uid``, ``creationTimestamp``, ``generation`` (bumped only when
    something outside ``metadata`` changes, and never by ``status`` where the
    status subresource is on) and a global ``resourceVersion``.  Watches resume
    from a ``resourceVersion`` (or answer ``410 Gone``), honour label and field
    selectors and ``timeoutSeconds``.  PATCH follows the Content-Type (merge,
    strategic-as-merge for built-in kinds and 415 for custom resources, JSON patch,
    apply-as-merge), PUT and PATCH check
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

    Keyword arguments: ``event_log_size`` (watch events kept per resource for
    resumption), ``history_limit`` (states kept per object in ``objects``),
    ``require_namespaces`` (refuse objects in namespaces that do not exist).

    The class is built in layers, one module each: the store, admission,
    deletion, writes, the per-verb handlers, discovery, watches and routing.
    """

    __slots__ = ()

    def __attrs_post_init__(self) -> None:
        # Deliberately not calling kmock's: its fallback reactions are replaced by _serve().
        for rtype in builtin_types():
            self._register(rtype)
        with self._mutex:
            for namespace in DEFAULT_NAMESPACES:
                self._create(self._types['', 'namespaces'], 'v1', None,
                             {'metadata': {'name': namespace}}, strict=False, dry_run=False)

    @property
    def resource_version(self) -> int:
        """The current (latest) global resourceVersion."""
        return self._rv

    @property
    def resource_types(self) -> list[ResourceType]:
        with self._mutex:
            return list(self._types.values())

    # kmock's get() is an HTTP client helper (get(url) for a running server); the emulator's
    # Python API has always offered get() for an object instead, so it deliberately differs.
    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:  # type: ignore[override]
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
            self._end_watches()
