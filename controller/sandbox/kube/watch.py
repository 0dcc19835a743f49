"""Watches: resumed from a ``resourceVersion`` (or ``410 Gone``), filtered by selectors, ended by
``timeoutSeconds``, with ``sendInitialEvents`` and its bookmark."""
from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp.web
from kmock._internal import rendering

from controller.sandbox.kube.errors import ApiError, bad_request
from controller.sandbox.kube.resources import Target, versioned
from controller.sandbox.kube.selectors import field_selector, label_selector
from controller.sandbox.kube.store import Event, Store, Watcher
from controller.sandbox.kube.tables import table
from controller.sandbox.kube.wire import truthy, wants_table

Matcher = Callable[[Mapping[str, Any] | None], bool]
Change = tuple[str, dict[str, Any]]  # (type, object) as a watch sends it


def translate(event: Event, matches: Matcher) -> Change | None:
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


def _matcher(target: Target, params: Mapping[str, str]) -> Matcher:
    labels, fields = label_selector(params.get('labelSelector')), field_selector(params.get('fieldSelector'))
    by_name = field_selector(f'metadata.name={target.name}') if target.name is not None else None

    def matches(obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        if target.namespace is not None and (obj.get('metadata') or {}).get('namespace') != target.namespace:
            return False
        return labels(obj) and fields(obj) and (by_name is None or by_name(obj))
    return matches


@dataclasses.dataclass(frozen=True)
class _Options:
    """A watch request's query: ``timeoutSeconds``, ``resourceVersion``, ``sendInitialEvents``, bookmarks."""
    timeout: float | None
    since: str
    send_initial: bool
    bookmarks: bool

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> _Options:
        try:
            timeout = float(params['timeoutSeconds']) if params.get('timeoutSeconds') else None
        except ValueError:
            raise bad_request(f'invalid timeoutSeconds: {params["timeoutSeconds"]!r}') from None
        since = params.get('resourceVersion') or ''
        options = cls(timeout=timeout, since=since, send_initial=truthy(params.get('sendInitialEvents')),
                      bookmarks=truthy(params.get('allowWatchBookmarks')))
        if since and not since.isdigit():
            raise bad_request(f'invalid resourceVersion: {since!r}')
        return options


@dataclasses.dataclass
class _Backlog:
    """What a new watch sends before it follows: the current objects, or the changes since its version."""
    start_rv: int
    changes: list[Change]
    gone: bool = False


class _Stream:
    """The chunked response of one watch: one JSON event per line."""

    def __init__(self, response: aiohttp.web.StreamResponse, target: Target, *, as_table: bool) -> None:
        self.response = response
        self.target = target
        self.as_table = as_table

    @classmethod
    async def open(cls, request: rendering.Request, target: Target) -> _Stream:
        raw = request._raw_request
        assert raw is not None
        response = aiohttp.web.StreamResponse(status=200, headers={'Content-Type': 'application/json'})
        response.enable_chunked_encoding()
        await response.prepare(raw)
        return cls(response, target, as_table=wants_table(request))

    async def send(self, type_: str, obj: dict[str, Any]) -> None:
        line = json.dumps({'type': type_, 'object': obj}).encode() + b'\n'
        await self.response.write(line)

    async def send_change(self, change: Change) -> None:
        """An object's change, served under the watched version (as a Table row if the client asked)."""
        type_, obj = change
        rtype, version = self.target.rtype, self.target.version
        obj = versioned(obj, rtype, version)
        if self.as_table:
            obj = table(rtype, version, [obj], resource_version=obj['metadata']['resourceVersion'])
        await self.send(type_, obj)

    async def close(self) -> None:
        try:
            await self.response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass


async def _follow(stream: _Stream, watcher: Watcher, matches: Matcher, *, deadline: float | None,
                  skip_through: int | None) -> None:
    """Send the changes as they come, until the deadline or the end of the watch."""
    loop = asyncio.get_running_loop()
    while True:
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            return
        try:
            event = await asyncio.wait_for(watcher.queue.get(), timeout=remaining)
        except TimeoutError:
            return
        if event is None:
            return
        if skip_through is not None and event.rv <= skip_through:
            continue  # already in the initial events
        change = translate(event, matches)
        if change is not None:
            await stream.send_change(change)


async def _replay(stream: _Stream, backlog: _Backlog, options: _Options) -> None:
    for change in backlog.changes:
        await stream.send_change(change)
    if options.send_initial and options.bookmarks:
        rtype, version = stream.target.rtype, stream.target.version
        await stream.send('BOOKMARK', {'kind': rtype.kind, 'apiVersion': rtype.api_version(version), 'metadata': {
            'resourceVersion': str(backlog.start_rv), 'annotations': {'k8s.io/initial-events-end': 'true'}}})


class Watches(Store):
    __slots__ = ()

    async def _watch(self, request: rendering.Request, target: Target) -> aiohttp.web.StreamResponse:
        matches = _matcher(target, request.params)
        options = _Options.parse(request.params)
        key = (target.rtype.group, target.rtype.plural)
        watcher = Watcher(loop=asyncio.get_running_loop(), queue=asyncio.Queue())
        backlog = self._subscribe(target, options, matches, watcher)
        stream = await _Stream.open(request, target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.timeout if options.timeout is not None else None
        try:
            if backlog.gone:  # a real server ends the stream after this error
                floor = self._event_floor.get(key, 0)
                await stream.send('ERROR', ApiError(410, 'Expired',
                                                    f'too old resource version: {options.since} ({floor})').status())
            else:
                await _replay(stream, backlog, options)
                await _follow(stream, watcher, matches, deadline=deadline,
                              skip_through=backlog.start_rv if options.send_initial else None)
        except ConnectionResetError:
            return stream.response
        finally:
            with self._mutex:
                self._watchers.get(key, set()).discard(watcher)
        await stream.close()
        return stream.response

    def _subscribe(self, target: Target, options: _Options, matches: Matcher, watcher: Watcher) -> _Backlog:
        """Take what the watch sends first and, unless its version is too old, register it for what follows."""
        key = (target.rtype.group, target.rtype.plural)
        with self._mutex:
            backlog = _Backlog(start_rv=self._rv, changes=[])
            if options.since in ('', '0') or options.send_initial:
                backlog.changes = [('ADDED', obj) for obj in self._iter_current(target.rtype, target.namespace)
                                   if matches(obj)]
            elif int(options.since) < self._event_floor.get(key, 0):
                backlog.gone = True
                return backlog
            else:
                for event in self._event_log.get(key, ()):
                    if event.rv > int(options.since) and (change := translate(event, matches)) is not None:
                        backlog.changes.append(change)
            self._watchers.setdefault(key, set()).add(watcher)
        return backlog
