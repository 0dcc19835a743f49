"""The JSON documents of ECS service deployments, in the shapes of botocore's model.

``ServiceDeployment`` (DescribeServiceDeployments), ``ServiceDeploymentBrief``
(ListServiceDeployments), ``ServiceRevision`` (DescribeServiceRevisions), and
the fields a deployment adds to moto's ``Service``. Timestamps are epoch
seconds, as AWS JSON 1.1 sends them; absent values are left out.
"""
from __future__ import annotations

from typing import Any

from controller.sandbox.aws.ecs_lifecycle import circuit_breaker_threshold
from controller.sandbox.aws.ecs_models import ServiceDeployment, ServiceRevision


def compact(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if v is not None}


def service_deployment(d: ServiceDeployment) -> dict[str, Any]:
    """A ``ServiceDeployment``."""
    return compact({
        'serviceDeploymentArn': d.arn, 'serviceArn': d.service_arn, 'clusterArn': d.cluster_arn,
        'createdAt': d.created_at, 'startedAt': d.started_at, 'finishedAt': d.finished_at,
        'stoppedAt': d.stopped_at, 'updatedAt': d.updated_at,
        'sourceServiceRevisions': [revision_summary(r) for r in d.sources],
        'targetServiceRevision': revision_summary(d.target),
        'status': d.status, 'statusReason': d.status_reason, 'lifecycleStage': d.lifecycle_stage,
        'lifecycleHookDetails': [compact({
            'hookId': run.hook_id, 'targetType': run.target_type, 'targetArn': run.target_arn,
            'status': run.status, 'expiresAt': run.expires_at, 'timeoutAction': run.timeout_action,
        }) for run in d.hooks],
        'deploymentConfiguration': d.config, 'rollback': d.rollback,
        'deploymentCircuitBreaker': _circuit_breaker(d), 'alarms': _alarms(d),
    })


def revision_summary(r: ServiceRevision) -> dict[str, Any]:
    """A ``ServiceRevisionSummary``: the revision's tasks and the traffic it was given."""
    return {'arn': r.arn, 'requestedTaskCount': r.requested, 'runningTaskCount': r.running, 'pendingTaskCount': 0,
            'requestedTestTrafficWeight': r.test_weight, 'requestedProductionTrafficWeight': r.production_weight}


def _circuit_breaker(d: ServiceDeployment) -> dict[str, Any]:
    breaker = d.strategy.circuit_breaker
    if not breaker.get('enable'):
        return {'status': 'DISABLED'}
    threshold = circuit_breaker_threshold(d)
    status = ('TRIGGERED' if d.failure_count >= threshold else 'MONITORING' if d.active
              else 'MONITORING_COMPLETE')
    return {'status': status, 'failureCount': d.failure_count, 'threshold': threshold}


def _alarms(d: ServiceDeployment) -> dict[str, Any]:
    alarms = d.strategy.alarms
    if not alarms.get('enable'):
        return {'status': 'DISABLED'}
    return {'status': 'MONITORING' if d.active else 'MONITORING_COMPLETE',
            'alarmNames': list(alarms.get('alarmNames') or []), 'triggeredAlarmNames': []}


def brief(d: ServiceDeployment) -> dict[str, Any]:
    """A ``ServiceDeploymentBrief``."""
    return compact({
        'serviceDeploymentArn': d.arn, 'serviceArn': d.service_arn, 'clusterArn': d.cluster_arn,
        'startedAt': d.started_at, 'createdAt': d.created_at, 'finishedAt': d.finished_at,
        'targetServiceRevisionArn': d.target.arn, 'status': d.status, 'statusReason': d.status_reason,
    })


def service_revision(r: ServiceRevision) -> dict[str, Any]:
    """A ``ServiceRevision``, with ``resolvedConfiguration``: the target group its tasks are registered with."""
    return compact({
        'serviceRevisionArn': r.arn, 'serviceArn': r.service_arn, 'clusterArn': r.cluster_arn,
        'taskDefinition': r.task_definition, 'launchType': r.launch_type, 'platformVersion': r.platform_version,
        'loadBalancers': r.load_balancers or None, 'networkConfiguration': r.network_configuration or None,
        'containerImages': [{'containerName': r.container_name, 'image': r.image}] if r.image else None,
        'createdAt': r.created_at,
        'resolvedConfiguration': {'loadBalancers': [
            {'targetGroupArn': group, 'productionListenerRule': rule} for rule, group in r.target_groups.items()]},
    })


def service_fields(d: ServiceDeployment, service: Any) -> dict[str, Any]:
    """What a deployment adds to moto's answer about the service (CreateService, UpdateService)."""
    return compact({
        'taskDefinition': service.task_definition,
        'deploymentConfiguration': getattr(service, 'deployment_configuration', None),
        'currentServiceDeployment': d.arn,
        'currentServiceRevisions': getattr(service, 'current_service_revisions', None),
        'deployments': getattr(service, 'deployments', None),
        'events': getattr(service, 'events', None),
    })
