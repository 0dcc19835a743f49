"""Deletion: preconditions, finalizers holding an object, namespaces emptied before they go, CRDs taking
their resource's objects with them."""
from __future__ import annotations

import copy
from typing import Any

from controller.sandbox.kube.admission import Admission, now
from controller.sandbox.kube.errors import ApiError, conflict, not_found
from controller.sandbox.kube.resources import ResourceType


def _is_namespaces(rtype: ResourceType) -> bool:
    return rtype.plural == 'namespaces' and rtype.group == ''


def _check_preconditions(rtype: ResourceType, name: str, old: dict[str, Any], preconditions: Any) -> None:
    """``DeleteOptions.preconditions``: the uid and resourceVersion the client expects to delete."""
    if preconditions.get('uid') and preconditions['uid'] != old['metadata'].get('uid'):
        raise ApiError(409, 'Conflict', f'Precondition failed: UID in precondition: {preconditions["uid"]},'
                                        f' UID in object meta: {old["metadata"].get("uid")}',
                       {'name': name, 'group': rtype.group, 'kind': rtype.plural})
    if preconditions.get('resourceVersion') and preconditions['resourceVersion'] != old['metadata']['resourceVersion']:
        raise conflict(rtype, name)


class Deletion(Admission):
    __slots__ = ()

    def _delete(self, rtype: ResourceType, namespace: str | None, name: str, options: Any,
                *, dry_run: bool) -> dict[str, Any]:
        old = self._current(rtype, namespace, name)
        if old is None:
            raise not_found(rtype, name)
        preconditions = (options or {}).get('preconditions') if isinstance(options, dict) else None
        if preconditions:
            _check_preconditions(rtype, name, old, preconditions)
        if old['metadata'].get('deletionTimestamp'):
            return old
        if dry_run:
            return old
        if old['metadata'].get('finalizers') or _is_namespaces(rtype):
            return self._mark_deleting(rtype, namespace, name, old)
        return self._remove(rtype, namespace, name, old, old=old)

    def _mark_deleting(self, rtype: ResourceType, namespace: str | None, name: str,
                       old: dict[str, Any]) -> dict[str, Any]:
        """Set ``deletionTimestamp``: the finalizers (or, for a namespace, its emptying) hold the object."""
        new = copy.deepcopy(old)
        new['metadata']['deletionTimestamp'] = now()
        new['metadata']['deletionGracePeriodSeconds'] = 0
        # markAsDeleting (staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go): setting the
        # deletionTimestamp bumps a generational object's generation, so controllers see a change to act on.
        if int(new['metadata'].get('generation') or 0) > 0:
            new['metadata']['generation'] = int(new['metadata']['generation']) + 1
        new['metadata']['resourceVersion'] = self._next_rv()
        if _is_namespaces(rtype):
            new.setdefault('status', {})['phase'] = 'Terminating'
        self._store(rtype, namespace, name, new)
        self._emit(rtype, 'MODIFIED', new, old)
        if _is_namespaces(rtype):
            self._terminate_namespace(name)
            return self._current(rtype, None, name) or new
        return new

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
        """Remove a terminating namespace once nothing is left in it."""
        ns_type = self._types['', 'namespaces']
        ns_obj = self._current(ns_type, None, namespace)
        if ns_obj is None or not ns_obj['metadata'].get('deletionTimestamp'):
            return
        for rtype in self._types.values():
            if rtype.namespaced and next(self._iter_current(rtype, namespace), None) is not None:
                return
        self._remove(ns_type, None, namespace, ns_obj, old=ns_obj)

    def _unregister(self, group: str, plural: str) -> None:
        """Forget a resource whose CRD went (or was renamed): its objects go, its watches end."""
        with self._mutex:
            rtype = self._types.pop((group, plural), None)
            if rtype is None:
                return
            for obj in list(self._iter_current(rtype, None)):
                meta = obj['metadata']
                self._remove(rtype, meta.get('namespace'), meta['name'], obj)
            self._end_watches((group, plural))
            self._sync_kmock_resources()
