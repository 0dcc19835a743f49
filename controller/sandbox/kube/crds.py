"""CustomResourceDefinitions: the resource a CRD declares (or why it is invalid), and the status it gets."""
from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

from controller.sandbox import schema as schemas
from controller.sandbox.kube.columns import column_errors
from controller.sandbox.kube.errors import cause
from controller.sandbox.kube.resources import ResourceType, version_priority

DNS_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
_ONE_STORAGE = 'must have exactly one version marked as storage version'


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _name_errors(name: str, group: str, plural: str, kind: str) -> list[schemas.FieldError]:
    """``spec.group``, ``spec.names`` and ``metadata.name`` (which must be ``plural.group``)."""
    errors = []
    if not group:
        errors.append(cause('spec.group', schemas.REQUIRED))
    elif '.' not in group:
        errors.append(cause('spec.group', schemas.INVALID, group, 'should be a domain with at least one dot'))
    if not plural:
        errors.append(cause('spec.names.plural', schemas.REQUIRED))
    elif not DNS_LABEL.match(plural):
        errors.append(cause('spec.names.plural', schemas.INVALID, plural,
                            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"))
    if not kind:
        errors.append(cause('spec.names.kind', schemas.REQUIRED))
    if group and plural and name != f'{plural}.{group}':
        errors.append(cause('metadata.name', schemas.INVALID, name, 'must be spec.names.plural+"."+spec.group'))
    return errors


def _scope_and_storage_errors(spec: dict[str, Any], versions: list[Any],
                              storage: list[dict[str, Any]]) -> list[schemas.FieldError]:
    errors = []
    scope = spec.get('scope')
    if scope not in ('Namespaced', 'Cluster'):
        errors.append(cause('spec.scope', schemas.NOT_SUPPORTED, scope or '',
                            'supported values: "Cluster", "Namespaced"'))
    if not versions:
        errors.append(cause('spec.versions', schemas.REQUIRED, detail=_ONE_STORAGE))
    if versions and len(storage) != 1:
        errors.append(cause('spec.versions', schemas.INVALID,
                            [v.get('name') for v in versions if isinstance(v, dict)], _ONE_STORAGE))
    return errors


@dataclasses.dataclass
class _Versions:
    """What ``spec.versions`` declares: the served ones, and each version's schema and columns."""
    served: list[str] = dataclasses.field(default_factory=list)
    open_api: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    columns: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    status_subresource: bool = False

    def read(self, index: int, version: Any) -> list[schemas.FieldError]:
        """Take in ``spec.versions[index]``; return its errors."""
        if not isinstance(version, dict) or not version.get('name'):
            return [cause(f'spec.versions[{index}].name', schemas.REQUIRED)]
        errors = []
        name = version['name']
        if version.get('served', True):
            self.served.append(name)
        open_api = (version.get('schema') or {}).get('openAPIV3Schema')
        if open_api is None:
            errors.append(cause(f'spec.versions[{index}].schema.openAPIV3Schema', schemas.REQUIRED,
                                detail='schemas are required'))
        else:
            where = f'spec.versions[{index}].schema.openAPIV3Schema'
            errors += schemas.structural_errors(open_api, path=where) + schemas.schema_errors(open_api, where)
            self.open_api[name] = open_api
        if isinstance((version.get('subresources') or {}).get('status'), dict):
            self.status_subresource = True
        self.columns[name] = list(version.get('additionalPrinterColumns') or ())
        errors += column_errors(version.get('additionalPrinterColumns'), f'spec.versions[{index}].additionalPrinterColumns')
        return errors


def crd_resource_type(crd: dict[str, Any]) -> tuple[ResourceType | None, list[schemas.FieldError]]:
    """Interpret a CRD into the resource it declares, or the reasons it is invalid."""
    spec = crd.get('spec')
    if not isinstance(spec, dict):
        return None, [cause('spec', schemas.REQUIRED)]
    group: str = spec.get('group') or ''
    names = _dict(spec.get('names'))
    plural: str = names.get('plural') or ''
    kind: str = names.get('kind') or ''
    versions = _list(spec.get('versions'))
    storage = [v for v in versions if isinstance(v, dict) and v.get('storage')]
    name = (crd.get('metadata') or {}).get('name', '')
    errors = _name_errors(name, group, plural, kind) + _scope_and_storage_errors(spec, versions, storage)
    declared = _Versions()
    for index, version in enumerate(versions):
        errors += declared.read(index, version)
    if errors or not storage:
        return None, errors
    rtype = ResourceType(
        group=group, plural=plural, kind=kind, namespaced=spec.get('scope') == 'Namespaced',
        versions=tuple(sorted(declared.served, key=version_priority)), storage_version=storage[0]['name'],
        singular=names.get('singular') or kind.lower(), short_names=tuple(names.get('shortNames') or ()),
        categories=tuple(names.get('categories') or ()), status_subresource=declared.status_subresource,
        schemas=declared.open_api, printer_columns=declared.columns, crd_name=name,
    )
    return rtype, []


def complete_crd(crd: dict[str, Any], rtype: ResourceType, old: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """Fill in what the server adds to an accepted CRD: default names, conversion, and its status."""
    spec = crd['spec']
    names = spec['names']
    names.setdefault('singular', rtype.singular)
    names.setdefault('listKind', f'{rtype.kind}List')
    spec.setdefault('conversion', {'strategy': 'None'})
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
