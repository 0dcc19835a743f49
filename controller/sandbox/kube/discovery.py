"""Discovery (``/api``, ``/apis``, resource lists), ``/version``, health, and the OpenAPI v3 documents
(only what kubectl needs to use server-side field validation)."""
from __future__ import annotations

import copy
from typing import Any

import aiohttp.web

from controller.sandbox.kube.errors import no_route
from controller.sandbox.kube.resources import ResourceType, version_priority
from controller.sandbox.kube.store import Store
from controller.sandbox.kube.wire import json_response

_PATCH_TYPES = ('application/json-patch+json', 'application/merge-patch+json', 'application/apply-patch+yaml')


def _server_version() -> dict[str, Any]:
    return {'major': '1', 'minor': '31', 'gitVersion': 'v1.31.0-panda-sandbox', 'gitCommit': 'panda-sandbox',
            'gitTreeState': 'clean', 'buildDate': '2024-08-13T00:00:00Z', 'goVersion': 'go1.22.5',
            'compiler': 'gc', 'platform': 'linux/amd64'}


def _group_body(group: str, versions: list[str]) -> dict[str, Any]:
    return {'name': group,
            'versions': [{'groupVersion': f'{group}/{version}', 'version': version} for version in versions],
            'preferredVersion': {'groupVersion': f'{group}/{versions[0]}', 'version': versions[0]}}


def _resource_entries(rtype: ResourceType) -> list[dict[str, Any]]:
    """A resource's entries in an ``APIResourceList``: itself, and its status subresource."""
    entry: dict[str, Any] = {'name': rtype.plural, 'singularName': rtype.singular, 'namespaced': rtype.namespaced,
                             'kind': rtype.kind, 'verbs': rtype.verbs}
    if rtype.short_names:
        entry['shortNames'] = list(rtype.short_names)
    if rtype.categories:
        entry['categories'] = list(rtype.categories)
    if not rtype.status_subresource:
        return [entry]
    return [entry, {'name': f'{rtype.plural}/status', 'singularName': '', 'namespaced': rtype.namespaced,
                    'kind': rtype.kind, 'verbs': ['get', 'patch', 'update']}]


def _openapi_path(rtype: ResourceType, group: str, version: str, query: list[dict[str, Any]]) -> dict[str, Any]:
    """The PATCH operation of one resource's item path: what kubectl reads to know it may validate."""
    gvk = {'group': group, 'version': version, 'kind': rtype.kind}
    return {'parameters': query, 'patch': {
        'operationId': f'patch{rtype.kind}', 'x-kubernetes-action': 'patch', 'parameters': query,
        'x-kubernetes-group-version-kind': gvk,
        'requestBody': {'content': {ct: {'schema': {'type': 'object'}} for ct in _PATCH_TYPES}},
        'responses': {'200': {'description': 'OK'}},
    }}


class Discovery(Store):
    __slots__ = ()

    def _discovery(self, segments: list[str], host: str | None) -> aiohttp.web.Response | None:
        """The answer to a GET of a path that is not a resource's, or None if it is one."""
        match segments:
            case []:
                return json_response(self._paths())
            case ['version']:
                return json_response(_server_version())
            case ['healthz' | 'readyz' | 'livez', *_]:
                return aiohttp.web.Response(text='ok')
            case ['api']:
                return json_response({'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
                    {'clientCIDR': '0.0.0.0/0', 'serverAddress': host or '127.0.0.1'}]})
            case ['apis']:
                return json_response(self._group_list())
            case ['api', version]:
                return json_response(self._resource_list('', version))
            case ['apis', group]:
                return json_response(self._group(group))
            case ['apis', group, version]:
                return json_response(self._resource_list(group, version))
            case ['openapi', 'v3', *rest]:
                return self._openapi(rest)
        return None

    def _openapi(self, rest: list[str]) -> aiohttp.web.Response | None:
        match rest:
            case []:
                return json_response(self._openapi_root())
            case ['api' | 'apis' as prefix, *gv]:
                return json_response(self._openapi_doc('' if prefix == 'api' else gv[0], gv[-1]))
        return None

    def _paths(self) -> dict[str, Any]:
        paths = {'/api', '/api/v1', '/apis', '/version', '/healthz', '/readyz', '/livez'}
        with self._mutex:
            for rtype in self._types.values():
                if rtype.group:
                    paths.add(f'/apis/{rtype.group}')
                    paths.update(f'/apis/{rtype.group}/{version}' for version in rtype.versions)
        return {'paths': sorted(paths)}

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, set[str]] = {}
        with self._mutex:
            for rtype in self._types.values():
                if rtype.group:
                    groups.setdefault(rtype.group, set()).update(rtype.versions)
        return {group: sorted(versions, key=version_priority) for group, versions in sorted(groups.items())}

    def _group_list(self) -> dict[str, Any]:
        return {'kind': 'APIGroupList', 'apiVersion': 'v1',
                'groups': [_group_body(group, versions) for group, versions in self._group_versions().items()]}

    def _group(self, group: str) -> dict[str, Any]:
        versions = self._group_versions().get(group)
        if not versions:
            raise no_route()
        return {'kind': 'APIGroup', 'apiVersion': 'v1', **_group_body(group, versions)}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        with self._mutex:
            rtypes = sorted((rtype for rtype in self._types.values()
                             if rtype.group == group and version in rtype.versions), key=lambda r: r.plural)
        if not rtypes:
            raise no_route()
        return {'kind': 'APIResourceList', 'apiVersion': 'v1',
                'groupVersion': f'{group}/{version}' if group else version,
                'resources': [entry for rtype in rtypes for entry in _resource_entries(rtype)]}

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
            raise no_route()
        prefix = f'/apis/{group}/{version}' if group else f'/api/{version}'
        query = [{'name': name, 'in': 'query', 'schema': {'type': 'string', 'uniqueItems': True}}
                 for name in ('dryRun', 'fieldManager', 'fieldValidation', 'force')]
        paths: dict[str, Any] = {}
        schemas_: dict[str, Any] = {}
        for rtype in rtypes:
            item = f'{prefix}/namespaces/{{namespace}}/{rtype.plural}/{{name}}' if rtype.namespaced \
                else f'{prefix}/{rtype.plural}/{{name}}'
            paths[item] = _openapi_path(rtype, group, version, query)
            schema = copy.deepcopy(rtype.schemas.get(version) or {'type': 'object'})
            schema['x-kubernetes-group-version-kind'] = [{'group': group, 'version': version, 'kind': rtype.kind}]
            schemas_['.'.join(reversed(group.split('.'))) + f'.{version}.{rtype.kind}' if group
                     else f'io.k8s.api.core.{version}.{rtype.kind}'] = schema
        return {'openapi': '3.0.0', 'info': {'title': 'Kubernetes', 'version': _server_version()['gitVersion']},
                'paths': paths, 'components': {'schemas': schemas_}}
