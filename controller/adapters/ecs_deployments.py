"""ECS's own blue/green, canary and linear deployments through boto3 (spec.rollout BlueGreen, Canary, Linear).

The service carries the strategy (`deploymentConfiguration.strategy`), the
load balancer wiring ECS moves (`loadBalancers[].advancedConfiguration`: the
alternate target group, the production and test listener rules, the role)
and the operator's own `PAUSE` lifecycle hook at `POST_TEST_TRAFFIC_SHIFT`:
the moment the test listener serves the new revision and production does not
yet. There the deployment waits for `ContinueServiceDeployment`: `CONTINUE`
once the checks passed (and, with manual promotion, once approved), or
`ROLLBACK`. The hook's timeout action is `ROLLBACK` and its timeout is the
stage timeout plus a minute: an operator alive times out first and rolls back
itself; one that died leaves ECS to roll back on its own.

Creating the service or updating it to a new task definition starts a
service deployment; one run starts at most one: a deployment of the run's
task definition created since the run started (and not one an earlier run
recorded in its history entry) is found (ListServiceDeployments and the target revisions' task
definitions) rather than started again, even when it ended meanwhile and ECS
put the service back on the old task definition (an operator that died
between UpdateService and saving the ARN, restarted after the hook's timeout
rolled the deployment back). A service on the `CODE_DEPLOY` (or `EXTERNAL`)
controller is refused before anything changes (`DeploymentControllerMismatch`).
"""
from __future__ import annotations

import datetime
import math
from collections.abc import Collection, Mapping
from typing import Any

from controller.adapters import ServiceDeploymentState, ServiceRollout
from controller.adapters.aws import error_code
from controller.adapters.ecs import EcsService, network_configuration
from controller.errors import DeploymentControllerMismatch, Reason, StageFailed, Transient
from controller.models import CanarySteps, LinearSteps, PandaDeploySpec, Strategy, cap_message

PAUSE_STAGE = 'POST_TEST_TRAFFIC_SHIFT'  # the test listener serves green, production still blue
MAX_HOOK_MINUTES = 20160  # AWS's bound for timeoutConfiguration.timeoutInMinutes
EVENTS_SHOWN = 3  # the service's newest events in a failure message (each once)
WORDS_LIMIT = 320  # characters of ECS's statusReason in a message (events and task reasons: half), all within 1024
STOPPED_TASKS_SHOWN = 3
CLOCK_MARGIN = datetime.timedelta(seconds=60)  # a deployment this long before the run's start may be the run's


def hook_timeout_minutes(spec: PandaDeploySpec) -> int:
    """The PAUSE hook's timeout: the stage timeout in whole minutes plus one, so a live operator's own limit
    ends the wait first (and rolls back); only a dead operator's deployment times out at ECS."""
    return max(1, min(MAX_HOOK_MINUTES, math.ceil(spec.timeouts.stage / 60) + 1))


def deployment_configuration(spec: PandaDeploySpec) -> dict[str, Any]:
    """The service's deploymentConfiguration for the spec's ECS strategy."""
    rollout = spec.rollout
    assert rollout is not None and rollout.strategy.ecs_native, 'an ECS strategy'
    config: dict[str, Any] = {
        'strategy': rollout.strategy.ecs_name,
        'bakeTimeInMinutes': rollout.bake_time_minutes,
        'deploymentCircuitBreaker': {'enable': True, 'rollback': True},
        'lifecycleHooks': [{
            'targetType': 'PAUSE', 'lifecycleStages': [PAUSE_STAGE],
            'timeoutConfiguration': {'timeoutInMinutes': hook_timeout_minutes(spec), 'action': 'ROLLBACK'},
        }],
    }
    if rollout.strategy == Strategy.canary:
        canary = rollout.canary or CanarySteps()
        config['canaryConfiguration'] = {'canaryPercent': float(canary.percent),
                                         'canaryBakeTimeInMinutes': canary.bake_minutes}
    elif rollout.strategy == Strategy.linear:
        linear = rollout.linear or LinearSteps()
        config['linearConfiguration'] = {'stepPercent': float(linear.step_percent),
                                         'stepBakeTimeInMinutes': linear.step_bake_minutes}
    return config


def load_balancers(spec: PandaDeploySpec) -> list[dict[str, Any]]:
    """The service's loadBalancers: blue's target group with the advancedConfiguration ECS moves."""
    assert spec.rollout is not None and spec.rollout.load_balancer is not None, 'an ECS strategy has one'
    wiring = spec.rollout.load_balancer
    advanced = {'alternateTargetGroupArn': wiring.alternate_target_group_arn,
                'productionListenerRule': wiring.production_listener_rule_arn, 'roleArn': wiring.role_arn}
    if wiring.test_listener_rule_arn:
        advanced['testListenerRule'] = wiring.test_listener_rule_arn
    return [{'targetGroupArn': wiring.target_group_arn, 'containerName': spec.ecs.container_name,
             'containerPort': spec.ecs.container_port, 'advancedConfiguration': advanced}]


def _subset_differs(wanted: Mapping[str, Any], found: Mapping[str, Any] | None) -> bool:
    return any((found or {}).get(key) != value for key, value in wanted.items())


def _state(found: Mapping[str, Any]) -> ServiceDeploymentState:
    hooks = found.get('lifecycleHookDetails') or []
    paused = next((h for h in hooks if h.get('targetType') == 'PAUSE' and h.get('status') == 'AWAITING_ACTION'),
                  None)
    target = found.get('targetServiceRevision') or {}
    share = target.get('requestedProductionTrafficWeight')
    return ServiceDeploymentState(
        arn=str(found['serviceDeploymentArn']), status=str(found.get('status') or 'PENDING'),
        lifecycle_stage=found.get('lifecycleStage'), status_reason=found.get('statusReason'),
        paused_hook=str(paused['hookId']) if paused else None,
        hook_passed=any(h.get('targetType') == 'PAUSE' and h.get('status') == 'SUCCEEDED' for h in hooks),
        production_percent=float(share) if share is not None else None)


class EcsServiceDeployments(EcsService):
    """The `EcsDeployments` adapter: the service with its strategy, and its service deployments."""

    failure_reason = Reason.SERVICE_UPDATE_FAILED

    def deploy(self, *, spec: PandaDeploySpec, task_definition_arn: str, since: datetime.datetime | None,
               earlier: Collection[str] = ()) -> ServiceRollout:
        cluster, name = spec.ecs.cluster, spec.ecs.service
        found = self._describe(cluster=cluster, service=name)
        if found is None:
            return self._create(spec, task_definition_arn=task_definition_arn)
        self._check_controller(spec, found)
        config = deployment_configuration(spec)
        balancers = None if not _subset_differs({'loadBalancers': load_balancers(spec)}, found) \
            else load_balancers(spec)
        arn = self.find_deployment(spec=spec, task_definition_arn=task_definition_arn, since=since,
                                   earlier=earlier) \
            if since is not None or found.get('taskDefinition') == task_definition_arn else None
        if found.get('taskDefinition') == task_definition_arn:
            if balancers is None and not _subset_differs(config, found.get('deploymentConfiguration')):
                return ServiceRollout(cluster=cluster, service=name, created=False, started=False, deployment_arn=arn)
            answer = self._update(spec, config=config, balancers=balancers)
            started = answer.get('currentServiceDeployment') not in (None, found.get('currentServiceDeployment'))
            return ServiceRollout(cluster=cluster, service=name, created=False, started=started,
                                  deployment_arn=answer.get('currentServiceDeployment') if started else arn)
        if arn is not None:  # started by this run before a restart, and ended since (ECS rolled it back)
            return ServiceRollout(cluster=cluster, service=name, created=False, started=False, deployment_arn=arn)
        answer = self._update(spec, config=config, balancers=balancers, task_definition_arn=task_definition_arn)
        arn = answer.get('currentServiceDeployment')
        if not arn or arn == found.get('currentServiceDeployment'):
            arn = self.find_deployment(spec=spec, task_definition_arn=task_definition_arn, since=since,
                                       earlier=earlier)
        return ServiceRollout(cluster=cluster, service=name, created=False, started=True, deployment_arn=arn)

    def find_deployment(self, *, spec: PandaDeploySpec, task_definition_arn: str, since: datetime.datetime | None,
                        earlier: Collection[str] = ()) -> str | None:
        cluster, name = spec.ecs.cluster, spec.ecs.service
        request: dict[str, Any] = {'cluster': cluster, 'service': name, 'maxResults': 20}
        if since is not None:
            request['createdAt'] = {'after': since - CLOCK_MARGIN}  # the operator's clock and ECS's differ a little
        ecs = self._client('ecs')
        action = 'ListServiceDeployments'
        try:
            briefs = [b for b in ecs.list_service_deployments(**request).get('serviceDeployments') or []
                      if str(b['serviceDeploymentArn']).rsplit('/', 1)[-1] not in earlier]
            revisions = [str(b['targetServiceRevisionArn']) for b in briefs if b.get('targetServiceRevisionArn')]
            action = 'DescribeServiceRevisions'
            found = ecs.describe_service_revisions(serviceRevisionArns=revisions)['serviceRevisions'] \
                if revisions else []
        except Exception as exc:
            if error_code(exc) == 'ServiceNotFoundException':
                return None
            raise self._service_error(exc, action, cluster=cluster, service=name) from exc
        definitions = {str(r['serviceRevisionArn']): r.get('taskDefinition') for r in found}
        newest = sorted(briefs, key=lambda b: b.get('createdAt') or 0, reverse=True)
        for brief in newest:
            if definitions.get(str(brief.get('targetServiceRevisionArn'))) == task_definition_arn:
                return str(brief['serviceDeploymentArn'])
        return None

    def get(self, arn: str) -> ServiceDeploymentState:
        ecs = self._client('ecs')
        try:
            answer = ecs.describe_service_deployments(serviceDeploymentArns=[arn])
        except Exception as exc:
            raise self._deployment_error(exc, 'DescribeServiceDeployments', arn) from exc
        found = answer.get('serviceDeployments') or []
        if not found:
            raise StageFailed(f'ECS service deployment {arn} not found (the service was deleted?)',
                              reason=Reason.DEPLOYMENT_REPLACED)
        state = _state(found[0])
        if state.status == 'STOPPED':
            current = self._current_deployment(found[0])
            if current and current != arn:
                return ServiceDeploymentState(**{**state.__dict__, 'replaced_by': current})
        return state

    def continue_deployment(self, arn: str, *, hook_id: str, rollback: bool = False) -> None:
        action = 'ROLLBACK' if rollback else 'CONTINUE'
        try:
            self._client('ecs').continue_service_deployment(serviceDeploymentArn=arn, hookId=hook_id, action=action)
        except Exception as exc:
            raise self._deployment_error(exc, f'ContinueServiceDeployment {action}', arn) from exc

    def stop(self, arn: str) -> None:
        try:
            self._client('ecs').stop_service_deployment(serviceDeploymentArn=arn, stopType='ROLLBACK')
        except Exception as exc:
            if error_code(exc) == 'ConflictException':  # it ended meanwhile: nothing left to stop
                return
            raise self._deployment_error(exc, 'StopServiceDeployment ROLLBACK', arn) from exc

    def explain(self, *, spec: PandaDeploySpec, state: ServiceDeploymentState) -> str:
        words = [f'ECS service deployment {state.arn.rsplit("/", 1)[-1]} ended {state.status}'
                 + (f': {cap_message(state.status_reason, WORDS_LIMIT)}' if state.status_reason else '')]
        try:
            service = self._describe(cluster=spec.ecs.cluster, service=spec.ecs.service) or {}
            newest = (str(e.get('message')) for e in (service.get('events') or [])[:EVENTS_SHOWN])
            if events := [cap_message(text, WORDS_LIMIT // 2) for text in dict.fromkeys(newest)]:
                words.append('service events: ' + ' | '.join(events))
            if stopped := self._stopped_reasons(spec):
                words.append('stopped tasks: ' + ' | '.join(cap_message(text, WORDS_LIMIT // 2) for text in stopped))
        except Exception as exc:  # the outcome stands; the extra words are best effort
            words.append(f'(service events unreadable: {type(exc).__name__})')
        return '; '.join(words)

    # -- inside ------------------------------------------------------------------------

    def _create(self, spec: PandaDeploySpec, *, task_definition_arn: str) -> ServiceRollout:
        cluster, name = spec.ecs.cluster, spec.ecs.service
        request: dict[str, Any] = {
            'cluster': cluster, 'serviceName': name, 'taskDefinition': task_definition_arn,
            'desiredCount': spec.ecs.desired_count, 'launchType': spec.ecs.launch_type,
            'deploymentController': {'type': 'ECS'}, 'schedulingStrategy': 'REPLICA',
            'deploymentConfiguration': deployment_configuration(spec), 'loadBalancers': load_balancers(spec)}
        if (network := network_configuration(spec)) is not None:
            request['networkConfiguration'] = network
        try:
            answer = self._client('ecs').create_service(**request)['service']
        except Exception as exc:
            if error_code(exc) == 'InvalidParameterException' and self._describe(cluster=cluster, service=name):
                # created meanwhile by another run: deploy to it as to any existing service
                return self.deploy(spec=spec, task_definition_arn=task_definition_arn, since=None)
            raise self._service_error(exc, 'CreateService', cluster=cluster, service=name) from exc
        return ServiceRollout(cluster=cluster, service=name, created=True, started=True,
                              deployment_arn=answer.get('currentServiceDeployment'))

    def _update(self, spec: PandaDeploySpec, *, config: dict[str, Any], balancers: list[dict[str, Any]] | None,
                task_definition_arn: str | None = None) -> dict[str, Any]:
        cluster, name = spec.ecs.cluster, spec.ecs.service
        request: dict[str, Any] = {'cluster': cluster, 'service': name, 'deploymentConfiguration': config}
        if task_definition_arn is not None:
            request['taskDefinition'] = task_definition_arn
        if balancers is not None:
            request['loadBalancers'] = balancers
        try:
            return dict(self._client('ecs').update_service(**request)['service'])
        except Exception as exc:
            raise self._service_error(exc, 'UpdateService', cluster=cluster, service=name) from exc

    @staticmethod
    def _check_controller(spec: PandaDeploySpec, found: Mapping[str, Any]) -> None:
        cluster, name = spec.ecs.cluster, spec.ecs.service
        if found.get('status') == 'DRAINING':
            raise Transient(f'ECS service {name} in cluster {cluster} is DRAINING (being deleted); '
                            f'it can be created again once it is INACTIVE')
        controller = (found.get('deploymentController') or {}).get('type') or 'ECS'
        if controller != 'ECS':
            raise DeploymentControllerMismatch(cluster=cluster, service=name, controller=controller,
                                               strategy=spec.strategy.value)

    def _current_deployment(self, deployment: Mapping[str, Any]) -> str | None:
        """The service's current service deployment (which replaced a STOPPED one, when it differs)."""
        service_arn, cluster_arn = deployment.get('serviceArn'), deployment.get('clusterArn')
        if not service_arn or not cluster_arn:
            return None
        try:
            services = self._client('ecs').describe_services(cluster=cluster_arn, services=[service_arn])
        except Exception as exc:
            raise self._deployment_error(exc, 'DescribeServices', str(service_arn)) from exc
        for service in services.get('services') or []:
            current = service.get('currentServiceDeployment')
            return str(current) if current else None
        return None

    def _stopped_reasons(self, spec: PandaDeploySpec) -> list[str]:
        ecs = self._client('ecs')
        arns = ecs.list_tasks(cluster=spec.ecs.cluster, serviceName=spec.ecs.service, desiredStatus='STOPPED',
                              maxResults=STOPPED_TASKS_SHOWN).get('taskArns') or []
        if not arns:
            return []
        tasks = ecs.describe_tasks(cluster=spec.ecs.cluster, tasks=arns).get('tasks') or []
        return [str(t.get('stoppedReason')) for t in tasks if t.get('stoppedReason')]

    def _deployment_error(self, exc: BaseException, action: str, arn: str) -> Exception:
        mapped = self._error(exc, f'ECS {action} {arn}')
        if isinstance(mapped, Transient) or mapped.reason == Reason.INVALID_CREDENTIALS:
            return mapped
        return StageFailed(mapped.message, reason=Reason.BLUE_GREEN_FAILED)
