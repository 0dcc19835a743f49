"""The demo resource's final status in a few lines, the way `kubectl get pd` and `describe` would show it."""
from __future__ import annotations

from typing import Any

from controller.sandbox.stack.manifests import NAME, NAMESPACE
from controller.sandbox.stack.progress import health_summary


def summary(found: dict[str, Any]) -> str:
    """The resource's final status: Ready, what runs, where, the checks and the history of runs."""
    status = found.get('status') or {}
    ready = ready_condition(found)
    image = status.get('image') or {}
    lines = [f'\n== {NAMESPACE}/{NAME}: {status.get("phase")}, Ready={ready.get("status")} '
             f'({ready.get("reason")}: {ready.get("message")}) ==',
             f'  generation    {found["metadata"]["generation"]} (observed {status.get("observedGeneration")})',
             f'  revision      {status.get("revision")}',
             f'  image         {image.get("uri")}@{image.get("digest")}',
             f'  task def      {status.get("taskDefinitionArn")}',
             f'  deployment    {status.get("serviceDeploymentArn") or status.get("codeDeployDeploymentId")}',
             f'  active        {status.get("activeColor")}',
             f'  blue URL      {status.get("blueUrl")}',
             f'  green URL     {status.get("greenUrl")}']
    if status.get('healthCheck'):
        lines.append(f'  health check  {health_summary(status["healthCheck"])}')
    lines.append('  history       generation  revision  result     active  seconds')
    for entry in status.get('history') or []:
        lines.append(f'                {entry["generation"]:<10}  {(entry.get("revision") or "")[:7]:<8}  '
                     f'{entry["result"]:<9}  {entry.get("activeColor") or "-":<6}  {entry["durationSeconds"]}')
    return '\n'.join(lines)


def ready_condition(found: dict[str, Any]) -> dict[str, Any]:
    """The Ready condition (empty when there is none)."""
    conditions = (found.get('status') or {}).get('conditions') or []
    return next((c for c in conditions if c.get('type') == 'Ready'), {})
