"""Routing: a request to discovery, or to the handler of its verb on the resource its URL names.

kmock's reactions (its DSL, for fault injection) answer first; an
:class:`~controller.sandbox.kube.errors.ApiError` becomes its ``Status``; any
other exception a 500, as a server answers rather than crashes.
"""
from __future__ import annotations

import aiohttp.web
from kmock._internal import apps, rendering

from controller.sandbox.kube.discovery import Discovery
from controller.sandbox.kube.errors import ApiError, method_not_allowed, no_route
from controller.sandbox.kube.handlers import Handlers
from controller.sandbox.kube.resources import Target
from controller.sandbox.kube.store import Write
from controller.sandbox.kube.watch import Watches
from controller.sandbox.kube.wire import json_response, truthy

_WRITES = ('POST', 'PUT', 'PATCH', 'DELETE')


class Routes(Handlers, Discovery, Watches):
    __slots__ = ()

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
            return json_response(e.status(), status=e.code)
        except Exception as e:  # noqa: BLE001 -- a server answers 500, it does not crash
            return json_response(ApiError(500, 'InternalError', f'Internal error occurred: {e!r}').status(), status=500)

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        method = request.method.value.upper() if request.method is not None else 'GET'
        segments = [segment for segment in request.url.path.split('/') if segment]
        if method == 'GET':
            response = self._discovery(segments, request.url.host)
            if response is not None:
                return response
        match segments:
            case ['api', version, *rest] if rest:
                target = self._target('', version, rest)
            case ['apis', group, version, *rest] if rest:
                target = self._target(group, version, rest)
            case _:
                raise no_route()
        return await self._serve_resource(request, method, target)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        """What the path after ``/api/v1`` or ``/apis/group/version`` names, or a 404."""
        with self._mutex:
            namespace: str | None = None
            if rest[0] == 'namespaces' and len(rest) >= 3:
                rtype = self._types.get((group, rest[2]))
                if rtype is not None and rtype.namespaced:
                    namespace, rest = rest[1], rest[2:]
            rtype = self._types.get((group, rest[0]))
            if rtype is None or version not in rtype.versions:
                raise no_route()
            if namespace is not None and not rtype.namespaced:
                raise no_route()
            name = rest[1] if len(rest) > 1 else None
            subresource = '/'.join(rest[2:]) or None
            if subresource is not None and not (subresource == 'status' and rtype.status_subresource):
                raise no_route()
            return Target(rtype, version, namespace, name, subresource)

    async def _serve_resource(self, request: rendering.Request, method: str,
                              target: Target) -> aiohttp.web.StreamResponse:
        if method in _WRITES:
            self._log_write(request, method, target)
        if method == 'GET':
            if truthy(request.params.get('watch')):
                return await self._watch(request, target)
            if target.name is None:
                return self._list_objects(request, target)
            return self._get_object(request, target, target.name)
        dry_run = 'dryRun' in request.params
        strict = request.params.get('fieldValidation', '').lower() == 'strict'
        name = target.name
        if method == 'POST' and name is None:
            return self._post(request, target, strict=strict, dry_run=dry_run)
        if method == 'PUT' and name is not None:
            return self._put(request, target, name, strict=strict, dry_run=dry_run)
        if method == 'PATCH' and name is not None:
            return self._patch(request, target, name, strict=strict, dry_run=dry_run)
        if method == 'DELETE' and name is not None and target.subresource is None:
            return self._delete_one(request, target, name, dry_run=dry_run)
        if method == 'DELETE' and name is None:
            return self._delete_collection(target, request.params, dry_run=dry_run)
        raise method_not_allowed()

    def _log_write(self, request: rendering.Request, method: str, target: Target) -> None:
        """Record a mutating request in :attr:`writes` (a POST by the name in its body)."""
        name = target.name
        if name is None and method == 'POST' and isinstance(request.data, dict):
            name = (request.data.get('metadata') or {}).get('name')
        self.writes.append(Write(method, target.rtype.plural, target.namespace, name, target.subresource))
