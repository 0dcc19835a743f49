"""The request handlers of a resource URL, one per verb: get, list, create, update, patch, delete,
deletecollection (watch is in :mod:`~controller.sandbox.kube.watch`).  Each reads the request, makes its
change under the lock, and answers with the object as served under the requested version."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp.web
from kmock._internal import rendering

from controller.sandbox.kube.errors import not_found
from controller.sandbox.kube.patches import APPLY_PATCH, patched
from controller.sandbox.kube.resources import Target, versioned
from controller.sandbox.kube.selectors import field_selector, label_selector
from controller.sandbox.kube.tables import table
from controller.sandbox.kube.wire import header, json_response, request_body, wants_table
from controller.sandbox.kube.writes import Writes


class Handlers(Writes):
    __slots__ = ()

    def _get_object(self, request: rendering.Request, target: Target, name: str) -> aiohttp.web.Response:
        rtype, version = target.rtype, target.version
        with self._mutex:
            obj = self._current(rtype, target.namespace, name)
        if obj is None:
            raise not_found(rtype, name)
        if wants_table(request):
            return json_response(table(rtype, version, [obj], resource_version=obj['metadata']['resourceVersion']))
        return json_response(versioned(obj, rtype, version))

    def _list_objects(self, request: rendering.Request, target: Target) -> aiohttp.web.Response:
        listing = self._list(target, request.params)
        if wants_table(request):
            return json_response(table(target.rtype, target.version, listing['items'],
                                       resource_version=listing['metadata']['resourceVersion']))
        return json_response(listing)

    def _list(self, target: Target, params: Mapping[str, str]) -> dict[str, Any]:
        labels, fields = label_selector(params.get('labelSelector')), field_selector(params.get('fieldSelector'))
        with self._mutex:
            items = [obj for obj in self._iter_current(target.rtype, target.namespace) if labels(obj) and fields(obj)]
            rv = str(self._rv)
        return {'kind': f'{target.rtype.kind}List', 'apiVersion': target.rtype.api_version(target.version),
                'metadata': {'resourceVersion': rv},
                'items': [versioned(obj, target.rtype, target.version) for obj in items]}

    def _post(self, request: rendering.Request, target: Target, *, strict: bool,
              dry_run: bool) -> aiohttp.web.Response:
        body = request_body(request)
        with self._mutex:
            obj = self._create(target.rtype, target.version, target.namespace, body, strict=strict, dry_run=dry_run)
        return json_response(versioned(obj, target.rtype, target.version), status=201)

    def _put(self, request: rendering.Request, target: Target, name: str, *, strict: bool,
             dry_run: bool) -> aiohttp.web.Response:
        rtype, version = target.rtype, target.version
        body = request_body(request)
        with self._mutex:
            old = self._current(rtype, target.namespace, name)
            if old is None:
                raise not_found(rtype, name)
            obj = self._update(rtype, version, target.namespace, name, old, body,
                               subresource=target.subresource, strict=strict, dry_run=dry_run)
        return json_response(versioned(obj, rtype, version))

    def _patch(self, request: rendering.Request, target: Target, name: str, *, strict: bool,
               dry_run: bool) -> aiohttp.web.Response:
        """Apply a patch of the Content-Type's kind; a server-side apply of a missing object creates it."""
        rtype, version = target.rtype, target.version
        content_type = header(request, 'Content-Type').split(';')[0].strip().lower()
        patch = request_body(request)
        with self._mutex:
            old = self._current(rtype, target.namespace, name)
            if content_type == APPLY_PATCH and old is None:
                if isinstance(patch, dict):
                    patch.setdefault('metadata', {}).setdefault('name', name)
                obj = self._create(rtype, version, target.namespace, patch, strict=strict, dry_run=dry_run)
                return json_response(versioned(obj, rtype, version), status=201)
            if old is None:
                raise not_found(rtype, name)
            candidate = patched(content_type, versioned(old, rtype, version), patch, rtype, name)
            obj = self._update(rtype, version, target.namespace, name, old, candidate,
                               subresource=target.subresource, strict=strict, dry_run=dry_run)
        return json_response(versioned(obj, rtype, version))

    def _delete_one(self, request: rendering.Request, target: Target, name: str, *,
                    dry_run: bool) -> aiohttp.web.Response:
        rtype = target.rtype
        options = request.data if isinstance(request.data, dict) else None
        with self._mutex:
            obj = self._delete(rtype, target.namespace, name, options, dry_run=dry_run)
        if rtype.delete_returns_object:
            return json_response(versioned(obj, rtype, target.version))
        return json_response({'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Success',
                              'details': {'name': name, 'group': rtype.group, 'kind': rtype.plural,
                                          'uid': obj['metadata'].get('uid')}})

    def _delete_collection(self, target: Target, params: Mapping[str, str], *, dry_run: bool) -> aiohttp.web.Response:
        labels, fields = label_selector(params.get('labelSelector')), field_selector(params.get('fieldSelector'))
        deleted = []
        with self._mutex:
            for obj in list(self._iter_current(target.rtype, target.namespace)):
                if labels(obj) and fields(obj):
                    meta = obj['metadata']
                    deleted.append(self._delete(target.rtype, meta.get('namespace'), meta['name'], None,
                                                dry_run=dry_run))
            rv = str(self._rv)
        return json_response({'kind': f'{target.rtype.kind}List',
                              'apiVersion': target.rtype.api_version(target.version),
                              'metadata': {'resourceVersion': rv},
                              'items': [versioned(obj, target.rtype, target.version) for obj in deleted]})
