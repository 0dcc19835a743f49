"""Create and update (PUT, and the result of a PATCH): the server-owned metadata, ``generation`` and
``resourceVersion``, the status subresource's isolation, and a CRD's resource registered once it is stored."""
from __future__ import annotations

import copy
import random
import uuid
from typing import Any

from controller.sandbox import schema as schemas
from controller.sandbox.kube.admission import now, ordered, spec_of
from controller.sandbox.kube.crds import crd_resource_type
from controller.sandbox.kube.deletion import Deletion
from controller.sandbox.kube.errors import ApiError, bad_request, cause, conflict, invalid, method_not_allowed
from controller.sandbox.kube.resources import ResourceType

_NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789'
_NOT_AN_OBJECT = 'the body of the request was not a JSON object'
_OTHER_NAMESPACE = 'the namespace of the provided object does not match the namespace sent on the request'
# Set by the server alone: dropped from a new object's metadata, kept from the old one's on update.
_CREATE_OWNED = ('uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation',
                 'selfLink')
_UPDATE_OWNED = ('name', 'namespace', 'uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds',
                 'generation', 'resourceVersion')


class Writes(Deletion):
    __slots__ = ()

    # -- create -------------------------------------------------------------------

    def _create(self, rtype: ResourceType, version: str, namespace: str | None, body: Any,
                *, strict: bool, dry_run: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(_NOT_AN_OBJECT)
        obj = copy.deepcopy(body)
        meta = obj.get('metadata')
        if not isinstance(meta, dict):
            meta = obj['metadata'] = {}
        self._check_kind(rtype, obj)
        obj['apiVersion'], obj['kind'] = rtype.api_version(), rtype.kind
        namespace = self._new_namespace(rtype, namespace, meta)
        if meta.get('resourceVersion'):
            raise bad_request('resourceVersion should not be set on objects to be created')
        name = self._new_name(rtype, namespace, meta)
        if rtype.status_subresource:
            obj.pop('status', None)
        for key in _CREATE_OWNED:
            meta.pop(key, None)
        obj = ordered(self._admit(rtype, version, name, obj, None, strict=strict))
        meta = obj['metadata']
        meta['uid'] = str(uuid.uuid4())
        meta['creationTimestamp'] = now()
        meta['generation'] = 1
        if dry_run:
            meta['resourceVersion'] = str(self._rv)
            return obj
        meta['resourceVersion'] = self._next_rv()
        self._store(rtype, namespace, name, obj)
        self._emit(rtype, 'ADDED', obj, None)
        self._after_write(rtype, obj, None)
        return obj

    def _new_namespace(self, rtype: ResourceType, namespace: str | None, meta: dict[str, Any]) -> str | None:
        """The namespace a new object goes in (the URL's, or its own), which must exist and not be terminating."""
        if not rtype.namespaced:
            meta.pop('namespace', None)
            return None
        if meta.get('namespace') and namespace and meta['namespace'] != namespace:
            raise bad_request(_OTHER_NAMESPACE)
        namespace = namespace or meta.get('namespace')
        if not namespace:
            raise method_not_allowed()
        meta['namespace'] = namespace
        self._check_namespace(namespace)
        return namespace

    def _new_name(self, rtype: ResourceType, namespace: str | None, meta: dict[str, Any]) -> str:
        """A new object's name (made from ``generateName`` if need be), valid and not taken."""
        if not meta.get('name'):
            if not meta.get('generateName'):
                raise invalid(rtype, '', [cause('metadata.name', schemas.REQUIRED,
                                                detail='name or generateName is required')])
            for _ in range(10):
                meta['name'] = meta['generateName'] + ''.join(random.choices(_NAME_CHARS, k=5))
                if self._current(rtype, namespace, meta['name']) is None:
                    break
        name: str = meta['name']
        self._check_name(rtype, name)
        if self._current(rtype, namespace, name) is not None:
            raise ApiError(409, 'AlreadyExists', f'{rtype.qualified} "{name}" already exists',
                           {'name': name, 'group': rtype.group, 'kind': rtype.plural})
        return name

    # -- update -------------------------------------------------------------------

    def _update(self, rtype: ResourceType, version: str, namespace: str | None, name: str,
                old: dict[str, Any], body: Any, *, subresource: str | None,
                strict: bool, dry_run: bool) -> dict[str, Any]:
        """Replace ``old`` with ``body`` (a PUT, or the result of applying a patch)."""
        if not isinstance(body, dict):
            raise bad_request(_NOT_AN_OBJECT)
        meta = body.get('metadata')
        if not isinstance(meta, dict):
            meta = {}
        self._check_replacement(rtype, namespace, name, old, body, meta)
        new = _replacement(rtype, old, body, meta, subresource=subresource)
        if old['metadata'].get('deletionTimestamp'):
            _check_no_new_finalizers(rtype, name, old, new)
        new = ordered(self._admit(rtype, version, name, new, old, strict=strict))
        new_meta = new['metadata']
        if spec_of(rtype, new) != spec_of(rtype, old):
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

    def _check_replacement(self, rtype: ResourceType, namespace: str | None, name: str, old: dict[str, Any],
                           body: dict[str, Any], meta: dict[str, Any]) -> None:
        """The body must be of the object the URL names, at its current resourceVersion if it gives one."""
        if meta.get('resourceVersion') and str(meta['resourceVersion']) != old['metadata']['resourceVersion']:
            raise conflict(rtype, name)
        if meta.get('name') and meta['name'] != name:
            raise bad_request(f'the name of the object ({meta["name"]}) does not match the name on the URL ({name})')
        if rtype.namespaced and meta.get('namespace') and meta['namespace'] != namespace:
            raise bad_request(_OTHER_NAMESPACE)
        self._check_kind(rtype, body)

    # -- after a write --------------------------------------------------------------

    def _after_write(self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """A stored CRD (re)registers its resource; a renamed one drops the resource it had."""
        if not (rtype.group == 'apiextensions.k8s.io' and rtype.plural == 'customresourcedefinitions'):
            return
        new_type, _ = crd_resource_type(obj)
        if new_type is None:
            return
        if old is not None:
            old_spec = old.get('spec') or {}
            old_key = (old_spec.get('group', ''), (old_spec.get('names') or {}).get('plural', ''))
            if old_key != (new_type.group, new_type.plural):
                self._unregister(*old_key)
        self._register(new_type)


def _replacement(rtype: ResourceType, old: dict[str, Any], body: dict[str, Any], meta: dict[str, Any],
                 *, subresource: str | None) -> dict[str, Any]:
    """The object as ``body`` would have it: status alone (status subresource) or all but status, and
    the server-owned metadata kept from ``old``."""
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
    for key in _UPDATE_OWNED:
        if key in old['metadata']:
            new_meta[key] = old['metadata'][key]
        else:
            new_meta.pop(key, None)
    return new


def _check_no_new_finalizers(rtype: ResourceType, name: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    added = set(new['metadata'].get('finalizers') or ()) - set(old['metadata'].get('finalizers') or ())
    if added:
        raise invalid(rtype, name, [cause(
            'metadata.finalizers', schemas.FORBIDDEN,
            detail=f'no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)!r}')])
