"""PATCH bodies by Content-Type: JSON merge patch, strategic merge (as merge), apply (as merge), JSON patch.

Strategic merge needs a Go type's patch strategy, which custom resources do not have: the server offers it
for built-in kinds only and answers 415 for a custom resource (``staging/src/k8s.io/apiserver/pkg/endpoints/
handlers/patch.go``, ``PatchResource``: the CRD handler's ``patchTypes`` leave it out).  Kopf and kubectl
send merge patches to custom resources, so a 415 here means a client that would fail on a cluster.
"""
from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from controller.sandbox.kube.errors import ApiError, bad_request
from controller.sandbox.kube.resources import ResourceType

JSON_PATCH = 'application/json-patch+json'
MERGE_PATCH = 'application/merge-patch+json'
STRATEGIC_MERGE_PATCH = 'application/strategic-merge-patch+json'
APPLY_PATCH = 'application/apply-patch+yaml'


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


def _json_patched(base: dict[str, Any], patch: Any, rtype: ResourceType, name: str) -> Any:
    if not isinstance(patch, list):
        raise bad_request('the body of a JSON patch must be a list of operations')
    try:
        return jsonpatch.apply_patch(base, patch)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        # JsonPatchTestFailed (a failed "test" operation) is one of these, answered alike.
        raise ApiError(422, 'Invalid', f'the server rejected our request due to an error in our request: {e}',
                       {'name': name, 'group': rtype.group, 'kind': rtype.plural}) from None


def patched(content_type: str, base: dict[str, Any], patch: Any, rtype: ResourceType, name: str) -> Any:
    """``base`` with ``patch`` applied as its Content-Type says, or the 400/415/422 a server answers."""
    if content_type == STRATEGIC_MERGE_PATCH and rtype.crd_name:
        raise _unsupported(JSON_PATCH, MERGE_PATCH, APPLY_PATCH)
    if content_type == JSON_PATCH:
        return _json_patched(base, patch, rtype, name)
    if content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH):
        if not isinstance(patch, dict):
            raise bad_request('the body of a merge patch must be a JSON object')
        if content_type == STRATEGIC_MERGE_PATCH:
            patch = _strip_directives(patch)
        return merge_patch(base, patch)
    raise _unsupported(JSON_PATCH, MERGE_PATCH, APPLY_PATCH, STRATEGIC_MERGE_PATCH)


def _unsupported(*accepted: str) -> ApiError:
    """The 415 of ``negotiation.NewUnsupportedMediaTypeError``."""
    return ApiError(415, 'UnsupportedMediaType', 'the body of the request was in an unknown format'
                                                 f' - accepted media types include: {", ".join(accepted)}')
