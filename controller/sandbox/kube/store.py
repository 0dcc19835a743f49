"""The object store under the emulator: resource types, kmock's object history, the write and event logs.

Objects live in kmock's ``objects`` (so tests keep its per-object history);
this layer adds what kmock does not keep: the registered resource types,
the global ``resourceVersion``, the log of mutating requests (:class:`Write`)
and, per resource, a bounded log of watch events and the open watches.
Everything here is called under the one lock, ``_mutex``.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import attrs
import kmock
from kmock._internal import k8s_dicts

from controller.sandbox.kube.errors import bad_request
from controller.sandbox.kube.resources import ResourceType


class Write(NamedTuple):
    """One mutating request, as recorded in :attr:`ClusterEmulator.writes`."""
    method: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


class Event(NamedTuple):
    """One change of one object, as watches see it (``old`` is None for ADDED)."""
    rv: int
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclasses.dataclass(eq=False)
class Watcher:
    """An open watch: events reach its queue from whichever thread writes; None ends the watch."""
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event | None]

    def send(self, event: Event | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the watch is over anyway
            pass


ResourceKey = tuple[str, str]  # (group, plural)


@attrs.define(kw_only=True, eq=False)
class Store(kmock.KubernetesEmulator):
    """The emulator's state and its storage primitives; see :class:`ClusterEmulator` for the whole."""

    event_log_size: int = 10000
    history_limit: int = 50
    require_namespaces: bool = False

    writes: list[Write] = attrs.field(factory=list, init=False)
    _types: dict[ResourceKey, ResourceType] = attrs.field(factory=dict, init=False)
    _mutex: threading.RLock = attrs.field(factory=threading.RLock, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _event_log: dict[ResourceKey, collections.deque[Event]] = attrs.field(factory=dict, init=False)
    _event_floor: dict[ResourceKey, int] = attrs.field(factory=dict, init=False)
    _watchers: dict[ResourceKey, set[Watcher]] = attrs.field(factory=dict, init=False)

    # -- resource types ---------------------------------------------------------

    def _register(self, rtype: ResourceType) -> None:
        with self._mutex:
            key = (rtype.group, rtype.plural)
            previous = self._types.get(key)
            self._types[key] = rtype
            if previous is not None and previous.storage_version != rtype.storage_version:
                self._rekey(previous, rtype)
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
        raise bad_request(f'no matches for kind "{kind}" in version "{api_version}"')

    # -- objects ------------------------------------------------------------------

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

    # -- watch events -------------------------------------------------------------

    def _emit(self, rtype: ResourceType, type_: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        key = (rtype.group, rtype.plural)
        log = self._event_log.setdefault(key, collections.deque(maxlen=self.event_log_size))
        if log.maxlen is not None and len(log) >= log.maxlen:
            self._event_floor[key] = log[0].rv
        event = Event(int(obj['metadata']['resourceVersion']), type_, obj, old)
        log.append(event)
        for watcher in self._watchers.get(key, ()):
            watcher.send(event)

    def _end_watches(self, key: ResourceKey | None = None) -> None:
        """End the open watches of one resource (and forget them), or of every resource."""
        if key is not None:
            for watcher in self._watchers.pop(key, set()):
                watcher.send(None)
            return
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.send(None)
