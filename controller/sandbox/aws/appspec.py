"""The revision of an ECS deployment: AppSpec content, and what it says.

CodeDeploy user guide: "AppSpec 'resources' section" and "AppSpec 'hooks'
section for an Amazon ECS deployment". Only ``AppSpecContent`` (and ``String``)
revisions are simulated; a malformed one is refused with
``InvalidRevisionException`` as CreateDeployment refuses it.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import yaml

from controller.sandbox.aws.events import HOOK_EVENTS, LIFECYCLE_EVENTS
from controller.sandbox.aws.exceptions import CodeDeployError, invalid_revision


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppSpec:
    """What an ECS AppSpec says: the replacement task set and the hook functions per lifecycle event."""

    task_definition: str
    container_name: str
    container_port: int
    platform_version: str | None = None
    network_configuration: dict[str, Any] | None = None  # ECS API shape: {'awsvpcConfiguration': {...}}
    capacity_provider_strategy: list[dict[str, Any]] | None = None  # ECS API shape
    hooks: Mapping[str, str] = dataclasses.field(default_factory=dict)


def revision_content(revision: Mapping[str, Any]) -> str:
    """The AppSpec text of an ``AppSpecContent`` (or ``String``) revision, its sha256 checked when given."""
    if not isinstance(revision, Mapping) or not revision:
        raise CodeDeployError('RevisionRequiredException', 'The revision ID was not specified.')
    kind = revision.get('revisionType')
    holder = {'AppSpecContent': 'appSpecContent', 'String': 'string'}.get(str(kind))
    if holder is None:
        raise invalid_revision(f'The sandbox simulates ECS deployments from AppSpecContent revisions only, '
                               f'not revisionType {kind!r}.')
    body = revision.get(holder) or {}
    content = body.get('content') if isinstance(body, Mapping) else None
    if not isinstance(content, str) or not content.strip():
        raise invalid_revision(f'The revision has no {holder}.content.')
    sha256 = body.get('sha256')
    if sha256 and hashlib.sha256(content.encode()).hexdigest() != str(sha256).lower():
        raise invalid_revision('The sha256 of the revision does not match its content.')
    return content


def parse_appspec(content: str) -> AppSpec:
    """Parse ECS AppSpec content (JSON or YAML); refuse a malformed one with ``InvalidRevisionException``."""
    doc = _document(content)
    properties = _service_properties(doc)
    task_definition = properties.get('TaskDefinition')
    if not isinstance(task_definition, str) or not task_definition:
        raise invalid_revision('The AppSpec resource has no Properties.TaskDefinition.')
    container_name, container_port = _load_balancer_target(properties)
    network = _network_configuration(properties.get('NetworkConfiguration'))
    strategy = _capacity_provider_strategy(properties.get('CapacityProviderStrategy'))
    hooks = _hooks(_key(doc, 'Hooks') or [])
    platform = properties.get('PlatformVersion')
    return AppSpec(task_definition=task_definition, container_name=container_name,
                   container_port=container_port, platform_version=platform if isinstance(platform, str) else None,
                   network_configuration=network, capacity_provider_strategy=strategy, hooks=hooks)


def _key(mapping: Mapping[str, Any], name: str) -> Any:
    """A top-level AppSpec key, case-insensitively (``Resources`` or ``resources``)."""
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() == name.lower():
            return value
    return None


def _document(content: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(content)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise invalid_revision(f'The AppSpec content is neither JSON nor YAML: {exc}') from None
    if not isinstance(doc, dict):
        raise invalid_revision('The AppSpec content must be a mapping with version, Resources and Hooks.')
    return doc


def _service_properties(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``Properties`` of the one ``AWS::ECS::Service`` under ``Resources``."""
    resources = _key(doc, 'Resources')
    if not isinstance(resources, list) or not resources:
        raise invalid_revision('The AppSpec must list one AWS::ECS::Service under Resources.')
    services = [body for item in resources if isinstance(item, dict) for body in item.values()
                if isinstance(body, dict) and body.get('Type') == 'AWS::ECS::Service']
    if len(services) != 1:
        raise invalid_revision(f'The AppSpec must have exactly one resource of Type AWS::ECS::Service; '
                               f'found {len(services)}.')
    properties = services[0].get('Properties')
    if not isinstance(properties, dict):
        raise invalid_revision('The AWS::ECS::Service resource has no Properties.')
    return properties


def _load_balancer_target(properties: Mapping[str, Any]) -> tuple[str, int]:
    """(container name, container port) of ``LoadBalancerInfo``."""
    lb_info = properties.get('LoadBalancerInfo')
    if not isinstance(lb_info, dict):
        raise invalid_revision('The AppSpec resource has no Properties.LoadBalancerInfo.')
    container_name = lb_info.get('ContainerName')
    if not isinstance(container_name, str) or not container_name:
        raise invalid_revision('The AppSpec resource has no LoadBalancerInfo.ContainerName.')
    raw_port: Any = lb_info.get('ContainerPort')
    try:
        container_port = int(raw_port)
    except (TypeError, ValueError):
        raise invalid_revision('LoadBalancerInfo.ContainerPort must be a port number.') from None
    if not 0 < container_port < 65536:
        raise invalid_revision(f'LoadBalancerInfo.ContainerPort {container_port} is out of range.')
    return container_name, container_port


def _network_configuration(raw: Any) -> dict[str, Any] | None:
    """``NetworkConfiguration`` in the ECS API's shape."""
    if raw is None:
        return None
    awsvpc = raw.get('AwsvpcConfiguration') if isinstance(raw, dict) else None
    if not isinstance(awsvpc, dict):
        raise invalid_revision('NetworkConfiguration must hold AwsvpcConfiguration.')
    return {'awsvpcConfiguration': {
        'subnets': list(awsvpc.get('Subnets') or []),
        'securityGroups': list(awsvpc.get('SecurityGroups') or []),
        **({'assignPublicIp': awsvpc['AssignPublicIp']} if 'AssignPublicIp' in awsvpc else {}),
    }}


def _capacity_provider_strategy(raw: Any) -> list[dict[str, Any]] | None:
    """``CapacityProviderStrategy`` in the ECS API's shape."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(s, dict) for s in raw):
        raise invalid_revision('CapacityProviderStrategy must be a list of mappings.')
    return [{'capacityProvider': s.get('CapacityProvider'), 'weight': s.get('Weight', 1),
             'base': s.get('Base', 0)} for s in raw]


def _hooks(raw: Any) -> dict[str, str]:
    """``Hooks``: the Lambda function per hookable lifecycle event."""
    message = 'Hooks must be a list of {LifecycleEvent: LambdaFunction} entries.'
    if not isinstance(raw, list):
        raise invalid_revision(message)
    hooks: dict[str, str] = {}
    for entry in raw:
        if not isinstance(entry, dict):
            raise invalid_revision(message)
        for event, function in entry.items():
            if event not in HOOK_EVENTS:
                raise invalid_revision(f'{event} is not a lifecycle event an ECS deployment can hook; '
                                       f'use one of {", ".join(e for e in LIFECYCLE_EVENTS if e in HOOK_EVENTS)}.')
            if not isinstance(function, str) or not function:
                raise invalid_revision(f'The {event} hook must name a Lambda function.')
            if event in hooks:
                raise invalid_revision(f'The {event} hook is given twice.')
            hooks[event] = function
    return hooks
