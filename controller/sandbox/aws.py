"""The AWS stand-in: moto's server, with CodeDeploy ECS blue/green deployments simulated.

Why this exists: stages 3 to 6 of a rollout talk to ECS, ELBv2, ECR, STS and
CodeDeploy, and neither the tests nor ``panda-deploy demo`` can reach AWS.
moto serves ECS, ELBv2, ECR, STS, IAM, Logs and CodeDeploy's *resources*
(applications, deployment groups) faithfully enough, but its CodeDeploy
*deployments* are inert records: they stay ``Created`` for ever, have no
lifecycle events or targets, and cannot be continued or stopped, so the very
part of the operator that decides whether production traffic moves -- wait for
``Ready``, health-check green, ``ContinueDeployment`` or ``StopDeployment`` with
rollback -- could not be exercised at all.

This module serves moto's whole application (every service, on one port, as
``moto_server`` does) behind a thin WSGI wrapper.  Requests whose
``X-Amz-Target`` is a CodeDeploy *deployment* operation (``CreateDeployment``,
``GetDeployment``, ``ContinueDeployment``, ``StopDeployment``,
``PutLifecycleEventHookExecutionStatus``, the target operations, ...) go to
:class:`DeploymentSimulator` instead; everything else goes to moto unchanged.
Applications and deployment groups stay in moto; the simulator reads them from
moto's backend and acts on moto's ECS and ELBv2 backends, so ``describe_listeners``
and ``describe_task_sets`` show what a real deployment would have done.

The simulator follows the ECS blue/green deployment as AWS documents it (CodeDeploy
user guide: "AppSpec 'hooks' section for an Amazon ECS deployment" for the
lifecycle events and what each one does; API reference ``DeploymentReadyOption``,
``ContinueDeployment``, ``StopDeployment``, ``PutLifecycleEventHookExecutionStatus``;
the predefined ``CodeDeployDefault.ECS*`` deployment configurations)::

    Created -> InProgress
      BeforeInstall (hook) -> Install (replacement task set on the green target
      group) -> AfterInstall (hook) -> AllowTestTraffic (test listener -> green)
      -> AfterAllowTestTraffic (hook)
      [deploymentReadyOption STOP_DEPLOYMENT: status Ready until
       ContinueDeployment(READY_WAIT); Stopped after waitTimeInMinutes]
      -> BeforeAllowTraffic (hook) -> AllowTraffic (production listener -> green,
      all at once, canary or linear; green becomes the primary task set)
      -> AfterAllowTraffic (hook)
      [terminateBlueInstancesOnDeploymentSuccess TERMINATE: wait
       terminationWaitTimeInMinutes or ContinueDeployment(TERMINATION_WAIT),
       then remove the original task set]
    -> Succeeded

A hook named in the AppSpec's ``Hooks`` stays ``InProgress`` until someone
reports ``PutLifecycleEventHookExecutionStatus`` for its execution id (AWS
would invoke the Lambda function with that id; moto cannot run it, so the id is
published by :meth:`AwsSandbox.pending_hooks`, the ``on_hook`` callback and
``GET /_sandbox/codedeploy/hooks``).  ``auto_hooks=True`` (``--auto-hooks``) is
a sandbox-only convenience that reports ``Succeeded`` for every hook after a
short delay.  A ``Failed`` hook fails the deployment; failure and
``StopDeployment`` roll back when asked to (``autoRollbackEnabled``, or the
group's ``autoRollbackConfiguration``): production and test listeners return
to the original target group, the replacement task set is removed, and a
``codeDeployRollback`` deployment records the rollback.

Time moves on its own: a background thread advances every deployment; each
step lasts :attr:`Timings.step_seconds` (0.5 s by default) and a "minute" of
``waitTimeInMinutes`` and friends lasts :attr:`Timings.minute_seconds`.

The demo runs the green image as a local container because moto runs none:
``AwsSandbox(on_green_task_set=..., on_cleanup=...)`` are called with
``(task definition ARN, image, container port)`` when a replacement task set is
created and when any task set is removed.

Out of scope: EC2/on-premises and Lambda deployments (passed through to moto,
inert as before), custom deployment configurations, S3 and GitHub revisions,
alarms, triggers, and pagination (everything comes in one page).  moto's state
is process-global: two sandboxes in one process share their AWS resources.
``python -m controller.sandbox.aws --port PORT`` serves it standalone.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import logging
import os
import random
import re
import signal
import string
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import yaml
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

__all__ = [
    'AwsSandbox', 'DeploymentSimulator', 'SandboxApp', 'CodeDeployResponses', 'CodeDeployError',
    'Timings', 'AppSpec', 'parse_appspec', 'Deployment', 'LifecycleEvent', 'HookExecution', 'TaskSetRecord',
    'TrafficRouting', 'ECS_DEPLOYMENT_CONFIGS', 'LIFECYCLE_EVENTS', 'HOOK_EVENTS', 'SIMULATED_OPERATIONS', 'main',
]

log = logging.getLogger(__name__)

TARGET_PREFIX = 'CodeDeploy_20141006.'
HOOKS_PATH = '/_sandbox/codedeploy/hooks'
JSON_CONTENT_TYPE = 'application/x-amz-json-1.1'

#: The ECS deployment's lifecycle events, in the documented order.
LIFECYCLE_EVENTS = (
    'BeforeInstall', 'Install', 'AfterInstall', 'AllowTestTraffic', 'AfterAllowTestTraffic',
    'BeforeAllowTraffic', 'AllowTraffic', 'AfterAllowTraffic',
)
#: The events an ECS AppSpec may attach a Lambda hook to (the others are CodeDeploy's own).
HOOK_EVENTS = frozenset({'BeforeInstall', 'AfterInstall', 'AfterAllowTestTraffic', 'BeforeAllowTraffic',
                         'AfterAllowTraffic'})
#: CodeDeploy operations answered by the simulator rather than by moto.
SIMULATED_OPERATIONS = frozenset({
    'CreateDeployment', 'GetDeployment', 'BatchGetDeployments', 'ListDeployments', 'ContinueDeployment',
    'StopDeployment', 'ListDeploymentTargets', 'GetDeploymentTarget', 'BatchGetDeploymentTargets',
    'PutLifecycleEventHookExecutionStatus',
})
#: CodeDeploy operations on resources that moto keeps, checked or completed on the way through.
ADJUSTED_OPERATIONS = frozenset({'CreateDeploymentGroup', 'GetDeploymentGroup', 'GetDeploymentConfig'})

ACTIVE_STATUSES = frozenset({'Created', 'Queued', 'InProgress', 'Baking', 'Ready'})
DONE_STATUSES = frozenset({'Succeeded', 'Failed', 'Stopped'})
DEPLOYMENT_STATUSES = ACTIVE_STATUSES | DONE_STATUSES
TARGET_STATUSES = ('Pending', 'InProgress', 'Succeeded', 'Failed', 'Skipped', 'Ready')
_ID_CHARS = string.ascii_uppercase + string.digits


# ----------------------------------------------------------------------------------------------
# errors


class CodeDeployError(Exception):
    """An error answered in AWS JSON 1.1 shape: ``{"__type": code, "message": message}``."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f'{code}: {message}')
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> dict[str, str]:
        """The JSON error document."""
        return {'__type': self.code, 'message': self.message}


class _Failure(Exception):
    """A deployment fails: the ``errorInformation`` it ends with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ----------------------------------------------------------------------------------------------
# deployment configurations and the AppSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrafficRouting:
    """How AllowTraffic moves production traffic: all at once, or canary/linear steps of percent per minutes."""

    kind: str = 'AllAtOnce'  # AllAtOnce | TimeBasedCanary | TimeBasedLinear
    percent: int = 100
    minutes: int = 0

    def steps(self) -> list[tuple[int, int]]:
        """(green weight in percent, minutes to hold it) in order; the last step is (100, 0)."""
        if self.kind == 'TimeBasedCanary':
            return [(self.percent, self.minutes), (100, 0)]
        if self.kind == 'TimeBasedLinear':
            weights = list(range(self.percent, 100, self.percent))
            return [(w, self.minutes) for w in weights] + [(100, 0)]
        return [(100, 0)]

    def serialise(self) -> dict[str, Any]:
        """The ``trafficRoutingConfig`` of GetDeploymentConfig."""
        if self.kind == 'TimeBasedCanary':
            return {'type': self.kind, 'timeBasedCanary': {'canaryPercentage': self.percent,
                                                           'canaryInterval': self.minutes}}
        if self.kind == 'TimeBasedLinear':
            return {'type': self.kind, 'timeBasedLinear': {'linearPercentage': self.percent,
                                                           'linearInterval': self.minutes}}
        return {'type': 'AllAtOnce'}


#: The predefined ECS deployment configurations (custom ones are not simulated).
ECS_DEPLOYMENT_CONFIGS: Mapping[str, TrafficRouting] = {
    'CodeDeployDefault.ECSAllAtOnce': TrafficRouting(),
    'CodeDeployDefault.ECSLinear10PercentEvery1Minutes': TrafficRouting(kind='TimeBasedLinear', percent=10, minutes=1),
    'CodeDeployDefault.ECSLinear10PercentEvery3Minutes': TrafficRouting(kind='TimeBasedLinear', percent=10, minutes=3),
    'CodeDeployDefault.ECSCanary10Percent5Minutes': TrafficRouting(kind='TimeBasedCanary', percent=10, minutes=5),
    'CodeDeployDefault.ECSCanary10Percent15Minutes': TrafficRouting(kind='TimeBasedCanary', percent=10, minutes=15),
}
DEFAULT_ECS_CONFIG = 'CodeDeployDefault.ECSAllAtOnce'
# moto gives every deployment group this default, whatever its compute platform.
_MOTO_DEFAULT_CONFIG = 'CodeDeployDefault.OneAtATime'


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


def _invalid_revision(message: str) -> CodeDeployError:
    return CodeDeployError('InvalidRevisionException', message)


def _key(mapping: Mapping[str, Any], name: str) -> Any:
    """A top-level AppSpec key, case-insensitively (``Resources`` or ``resources``)."""
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower() == name.lower():
            return value
    return None


def parse_appspec(content: str) -> AppSpec:
    """Parse ECS AppSpec content (JSON or YAML); refuse a malformed one with ``InvalidRevisionException``."""
    try:
        doc = yaml.safe_load(content)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise _invalid_revision(f'The AppSpec content is neither JSON nor YAML: {exc}') from None
    if not isinstance(doc, dict):
        raise _invalid_revision('The AppSpec content must be a mapping with version, Resources and Hooks.')
    resources = _key(doc, 'Resources')
    if not isinstance(resources, list) or not resources:
        raise _invalid_revision('The AppSpec must list one AWS::ECS::Service under Resources.')
    services = [body for item in resources if isinstance(item, dict) for body in item.values()
                if isinstance(body, dict) and body.get('Type') == 'AWS::ECS::Service']
    if len(services) != 1:
        raise _invalid_revision(f'The AppSpec must have exactly one resource of Type AWS::ECS::Service; '
                                f'found {len(services)}.')
    properties = services[0].get('Properties')
    if not isinstance(properties, dict):
        raise _invalid_revision('The AWS::ECS::Service resource has no Properties.')
    task_definition = properties.get('TaskDefinition')
    if not isinstance(task_definition, str) or not task_definition:
        raise _invalid_revision('The AppSpec resource has no Properties.TaskDefinition.')
    lb_info = properties.get('LoadBalancerInfo')
    if not isinstance(lb_info, dict):
        raise _invalid_revision('The AppSpec resource has no Properties.LoadBalancerInfo.')
    container_name = lb_info.get('ContainerName')
    if not isinstance(container_name, str) or not container_name:
        raise _invalid_revision('The AppSpec resource has no LoadBalancerInfo.ContainerName.')
    try:
        container_port = int(lb_info.get('ContainerPort'))
    except (TypeError, ValueError):
        raise _invalid_revision('LoadBalancerInfo.ContainerPort must be a port number.') from None
    if not 0 < container_port < 65536:
        raise _invalid_revision(f'LoadBalancerInfo.ContainerPort {container_port} is out of range.')

    network: dict[str, Any] | None = None
    if (raw_network := properties.get('NetworkConfiguration')) is not None:
        awsvpc = raw_network.get('AwsvpcConfiguration') if isinstance(raw_network, dict) else None
        if not isinstance(awsvpc, dict):
            raise _invalid_revision('NetworkConfiguration must hold AwsvpcConfiguration.')
        network = {'awsvpcConfiguration': {
            'subnets': list(awsvpc.get('Subnets') or []),
            'securityGroups': list(awsvpc.get('SecurityGroups') or []),
            **({'assignPublicIp': awsvpc['AssignPublicIp']} if 'AssignPublicIp' in awsvpc else {}),
        }}
    strategy: list[dict[str, Any]] | None = None
    if (raw_strategy := properties.get('CapacityProviderStrategy')) is not None:
        if not isinstance(raw_strategy, list) or not all(isinstance(s, dict) for s in raw_strategy):
            raise _invalid_revision('CapacityProviderStrategy must be a list of mappings.')
        strategy = [{'capacityProvider': s.get('CapacityProvider'), 'weight': s.get('Weight', 1),
                     'base': s.get('Base', 0)} for s in raw_strategy]

    hooks: dict[str, str] = {}
    raw_hooks = _key(doc, 'Hooks') or []
    if not isinstance(raw_hooks, list):
        raise _invalid_revision('Hooks must be a list of {LifecycleEvent: LambdaFunction} entries.')
    for entry in raw_hooks:
        if not isinstance(entry, dict):
            raise _invalid_revision('Hooks must be a list of {LifecycleEvent: LambdaFunction} entries.')
        for event, function in entry.items():
            if event not in HOOK_EVENTS:
                raise _invalid_revision(f'{event} is not a lifecycle event an ECS deployment can hook; '
                                        f'use one of {", ".join(e for e in LIFECYCLE_EVENTS if e in HOOK_EVENTS)}.')
            if not isinstance(function, str) or not function:
                raise _invalid_revision(f'The {event} hook must name a Lambda function.')
            if event in hooks:
                raise _invalid_revision(f'The {event} hook is given twice.')
            hooks[event] = function
    platform = properties.get('PlatformVersion')
    return AppSpec(task_definition=task_definition, container_name=container_name,
                   container_port=container_port, platform_version=platform if isinstance(platform, str) else None,
                   network_configuration=network, capacity_provider_strategy=strategy, hooks=hooks)


def revision_content(revision: Mapping[str, Any]) -> str:
    """The AppSpec text of an ``AppSpecContent`` (or ``String``) revision, its sha256 checked when given."""
    if not isinstance(revision, Mapping) or not revision:
        raise CodeDeployError('RevisionRequiredException', 'The revision ID was not specified.')
    kind = revision.get('revisionType')
    holder = {'AppSpecContent': 'appSpecContent', 'String': 'string'}.get(str(kind))
    if holder is None:
        raise _invalid_revision(f'The sandbox simulates ECS deployments from AppSpecContent revisions only, '
                                f'not revisionType {kind!r}.')
    body = revision.get(holder) or {}
    content = body.get('content') if isinstance(body, Mapping) else None
    if not isinstance(content, str) or not content.strip():
        raise _invalid_revision(f'The revision has no {holder}.content.')
    sha256 = body.get('sha256')
    if sha256 and hashlib.sha256(content.encode()).hexdigest() != str(sha256).lower():
        raise _invalid_revision('The sha256 of the revision does not match its content.')
    return content


# ----------------------------------------------------------------------------------------------
# state


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timings:
    """How fast simulated time moves."""

    step_seconds: float = 0.5  # Created -> InProgress, and each lifecycle event without a hook
    minute_seconds: float = 60.0  # one minute of waitTimeInMinutes, terminationWaitTimeInMinutes, canary/linear
    hook_timeout_minutes: float = 60.0  # AWS fails a hook that does not report within an hour
    auto_hook_seconds: float = 0.5  # with auto_hooks, how long a hook takes to report Succeeded
    tick_seconds: float = 0.02  # how often the background thread advances deployments


@dataclasses.dataclass(kw_only=True)
class LifecycleEvent:
    """One lifecycle event of the deployment's ECS target."""

    name: str
    status: str = 'Pending'  # Pending | InProgress | Succeeded | Failed | Skipped
    start_time: float | None = None
    end_time: float | None = None
    diagnostics: dict[str, str] | None = None


@dataclasses.dataclass(kw_only=True)
class HookExecution:
    """A hook function's run: AWS passes ``execution_id`` to the Lambda, which must report its status."""

    execution_id: str
    deployment_id: str
    lifecycle_event: str
    function_name: str
    started: float
    status: str = 'InProgress'  # InProgress | Succeeded | Failed | Skipped
    completed: float | None = None

    def serialise(self) -> dict[str, Any]:
        """The sandbox endpoint's JSON for one execution."""
        return {'deploymentId': self.deployment_id, 'lifecycleEventHookExecutionId': self.execution_id,
                'lifecycleEventName': self.lifecycle_event, 'functionName': self.function_name,
                'status': self.status, 'startTime': self.started}


@dataclasses.dataclass(kw_only=True)
class TaskSetRecord:
    """One colour of the deployment: an ECS task set (in moto) behind one target group."""

    label: str  # Blue (original) | Green (replacement)
    arn: str
    identifier: str
    task_definition_arn: str
    image: str
    container_name: str
    container_port: int
    target_group_arn: str
    target_group_name: str
    desired_count: int
    status: str  # PRIMARY | ACTIVE | DRAINING
    traffic_weight: float = 0.0


@dataclasses.dataclass(kw_only=True)
class Deployment:
    """A simulated ECS deployment, with the deployment group's settings as they were when it was created."""

    deployment_id: str
    account: str
    region: str
    application_name: str
    group_name: str
    config_name: str
    routing: TrafficRouting
    revision: dict[str, Any]
    appspec: AppSpec | None
    description: str | None
    creator: str
    auto_rollback: dict[str, Any]
    deployment_style: dict[str, Any]
    blue_green: dict[str, Any]
    load_balancer_info: dict[str, Any]
    cluster: str
    service: str
    create_time: float
    previous_revision: dict[str, Any] | None = None
    status: str = 'Created'
    start_time: float | None = None
    complete_time: float | None = None
    error: dict[str, str] | None = None
    rollback_info: dict[str, str] | None = None
    status_messages: list[str] = dataclasses.field(default_factory=list)
    events: list[LifecycleEvent] = dataclasses.field(
        default_factory=lambda: [LifecycleEvent(name=name) for name in LIFECYCLE_EVENTS])
    target_status: str = 'Pending'
    target_updated: float = 0.0
    service_arn: str = ''
    blue: TaskSetRecord | None = None
    green: TaskSetRecord | None = None
    termination_wait_started: bool = False
    continued: dict[str, float] = dataclasses.field(default_factory=dict)
    hooks: list[HookExecution] = dataclasses.field(default_factory=list)
    clock: float = 0.0
    process: Generator[_Effect, Any, None] | None = None
    effect: _Effect | None = None

    @property
    def target_id(self) -> str:
        """The ECS target's id: ``cluster:service``."""
        return f'{self.cluster}:{self.service}'

    def event(self, name: str) -> LifecycleEvent:
        """The lifecycle event of that name."""
        return next(e for e in self.events if e.name == name)

    @property
    def waiting_for(self) -> str | None:
        """The ContinueDeployment wait type the deployment is paused on, if any."""
        return self.effect.wait_type if isinstance(self.effect, _AwaitContinue) else None


# What a deployment's process waits for between steps (the driver resumes it).


@dataclasses.dataclass(kw_only=True)
class _Sleep:
    until: float


@dataclasses.dataclass(kw_only=True)
class _AwaitHook:
    execution: HookExecution
    deadline: float


@dataclasses.dataclass(kw_only=True)
class _AwaitContinue:
    wait_type: str  # READY_WAIT | TERMINATION_WAIT
    deadline: float | None


@dataclasses.dataclass(kw_only=True)
class _Call:
    """A user callback, run by the background thread outside the simulator's lock."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    queued: bool = False
    done: bool = False
    error: BaseException | None = None
    finished: float = 0.0

    def run(self) -> None:
        try:
            self.fn(*self.args)
        except Exception as exc:  # noqa: BLE001 -- reported to the waiting deployment
            log.warning('sandbox callback %s failed: %s', getattr(self.fn, '__name__', self.fn), exc)
            self.error = exc
        self.finished = time.time()
        self.done = True


_Effect = _Sleep | _AwaitHook | _AwaitContinue | _Call


# ----------------------------------------------------------------------------------------------
# the simulator


class _Moto:
    """moto's backends for one account and region."""

    def __init__(self, *, account: str, region: str) -> None:
        self.ecs: Any = get_backend('ecs')[account][region]
        self.elbv2: Any = get_backend('elbv2')[account][region]
        self.codedeploy: Any = get_backend('codedeploy')[account][region]

    def listener(self, arn: str) -> Any | None:
        for load_balancer in self.elbv2.load_balancers.values():
            if arn in load_balancer.listeners:
                return load_balancer.listeners[arn]
        return None

    def target_group_arn(self, name: str) -> str | None:
        return next((tg.arn for tg in self.elbv2.target_groups.values() if tg.name == name), None)

    def forwarded_target_group(self, listener_arn: str) -> str | None:
        """The target group a listener's default action forwards (most of) its traffic to."""
        listener = self.listener(listener_arn)
        if listener is None or not listener.default_actions:
            return None
        data = listener.default_actions[0].data
        if data.get('TargetGroupArn'):
            return str(data['TargetGroupArn'])
        groups = (data.get('ForwardConfig') or {}).get('TargetGroups') or []
        best = max(groups, key=lambda g: int(g.get('Weight', 1)), default=None)
        return str(best['TargetGroupArn']) if best else None

    def route(self, listener_arns: Iterable[str], *, weights: Mapping[str, int]) -> None:
        """Point listeners' default action at target groups by weight (one group: a plain forward)."""
        live = {arn: w for arn, w in weights.items() if w > 0}
        if len(live) == 1:
            action: dict[str, Any] = {'Type': 'forward', 'TargetGroupArn': next(iter(live))}
        else:
            action = {'Type': 'forward', 'ForwardConfig': {'TargetGroups': [
                {'TargetGroupArn': arn, 'Weight': w} for arn, w in weights.items()]}}
        for arn in listener_arns:
            self.elbv2.modify_listener(arn, certificates=[], actions=[json.loads(json.dumps(action))])

    def service(self, *, cluster: str, service: str) -> Any | None:
        return self.ecs.services.get(f'{cluster.split("/")[-1]}:{service.split("/")[-1]}')


class DeploymentSimulator:
    """CodeDeploy's ECS blue/green deployments, acting on moto's ECS and ELBv2 backends.

    Every public method is one CodeDeploy operation's semantics (arguments already
    parsed, results as state objects); :class:`CodeDeployResponses` is the wire layer.
    """

    def __init__(self, *, timings: Timings | None = None, auto_hooks: bool = False,
                 on_green_task_set: Callable[[str, str, int], Any] | None = None,
                 on_cleanup: Callable[[str, str, int], Any] | None = None,
                 on_hook: Callable[[HookExecution], Any] | None = None) -> None:
        self.timings = timings or Timings()
        self.auto_hooks = auto_hooks
        self.on_green_task_set = on_green_task_set
        self.on_cleanup = on_cleanup
        self.on_hook = on_hook
        self.deployments: dict[str, Deployment] = {}
        self.executions: dict[str, HookExecution] = {}
        self.lock = threading.RLock()  # held while state changes or is serialised
        self._outbox: list[_Call] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle of the simulator itself --

    def start(self) -> None:
        """Start the background thread that moves time on."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run_clock, name='codedeploy-simulator', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def reset(self) -> None:
        """Forget every deployment (moto's reset does the same for the resources)."""
        with self.lock:
            for d in self.deployments.values():
                if d.process is not None:
                    d.process.close()
            self.deployments.clear()
            self.executions.clear()
            self._outbox.clear()

    def _run_clock(self) -> None:
        while not self._stopping.wait(self.timings.tick_seconds):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 -- the clock must keep running
                log.exception('the CodeDeploy simulator failed to advance')

    def tick(self, *, now: float | None = None) -> None:
        """Advance every deployment to ``now``, then run the callbacks that became due."""
        with self.lock:
            now = time.time() if now is None else now
            for d in list(self.deployments.values()):
                self._advance(d, now=now)
            calls, self._outbox = self._outbox, []
        for call in calls:
            call.run()

    def pending_hooks(self) -> list[HookExecution]:
        """Hook executions waiting for PutLifecycleEventHookExecutionStatus, oldest first."""
        with self.lock:
            return [dataclasses.replace(e) for e in self.executions.values() if e.status == 'InProgress']

    # -- operations --

    def create_deployment(self, *, account: str, region: str, application_name: str | None,
                          group_name: str | None, revision: Mapping[str, Any] | None,
                          config_name: str | None = None, description: str | None = None,
                          auto_rollback: Mapping[str, Any] | None = None) -> Deployment:
        """CreateDeployment for an ECS application."""
        if not application_name:
            raise CodeDeployError('ApplicationNameRequiredException', 'The minimum number of required application '
                                  'names was not specified.')
        if not group_name:
            raise CodeDeployError('DeploymentGroupNameRequiredException', 'The deployment group name was not '
                                  'specified.')
        if description is not None and len(description) > 512:
            raise CodeDeployError('DescriptionTooLongException', 'The description is too long.')
        moto = _Moto(account=account, region=region)
        group = self.deployment_group(moto=moto, application_name=application_name, group_name=group_name)
        content = revision_content(revision or {})
        appspec = parse_appspec(content)
        config_name = config_name or str(group.deployment_config_name or '') or DEFAULT_ECS_CONFIG
        if config_name == _MOTO_DEFAULT_CONFIG:
            config_name = DEFAULT_ECS_CONFIG
        if config_name not in ECS_DEPLOYMENT_CONFIGS:
            raise CodeDeployError('DeploymentConfigDoesNotExistException',
                                  f'The deployment configuration {config_name} does not exist with the user or AWS '
                                  f'account (the sandbox knows the predefined CodeDeployDefault.ECS* ones).')
        services = group.ecs_services or []
        if len(services) != 1 or not services[0].get('clusterName') or not services[0].get('serviceName'):
            raise CodeDeployError('InvalidECSServiceException',
                                  f'The deployment group {group_name} does not name one ECS service.')
        with self.lock:
            for other in self.deployments.values():
                if (other.account, other.region, other.application_name, other.group_name) == \
                        (account, region, application_name, group_name) and other.status in ACTIVE_STATUSES:
                    raise CodeDeployError('DeploymentLimitExceededException',
                                          f"The Deployment Group '{group_name}' already has an active Deployment "
                                          f"'{other.deployment_id}'")
            now = time.time()
            d = Deployment(
                deployment_id=self._new_deployment_id(), account=account, region=region,
                application_name=application_name, group_name=group_name, config_name=config_name,
                routing=ECS_DEPLOYMENT_CONFIGS[config_name], revision=json.loads(json.dumps(revision)),
                appspec=appspec, description=description, creator='user',
                auto_rollback=dict(auto_rollback if auto_rollback is not None
                                   else (group.auto_rollback_configuration or {})),
                deployment_style=dict(group.deployment_style or {}),
                blue_green=json.loads(json.dumps(group.blue_green_deployment_configuration or {})),
                load_balancer_info=json.loads(json.dumps(group.load_balancer_info or {})),
                cluster=services[0]['clusterName'], service=services[0]['serviceName'],
                create_time=now, clock=now, target_updated=now,
                previous_revision=self._last_successful_revision(account=account, region=region,
                                                                 application_name=application_name,
                                                                 group_name=group_name),
            )
            self.deployments[d.deployment_id] = d
            d.process = self._process(d)
            d.effect = next(d.process)
            log.info('deployment %s created for %s/%s (%s)', d.deployment_id, application_name, group_name,
                     appspec.task_definition)
            return d

    def get_deployment(self, *, account: str, region: str, deployment_id: str | None) -> Deployment:
        """GetDeployment."""
        if not deployment_id:
            raise CodeDeployError('DeploymentIdRequiredException', 'At least one deployment ID must be specified.')
        with self.lock:
            d = self.deployments.get(deployment_id)
            if d is None or (d.account, d.region) != (account, region):
                raise CodeDeployError('DeploymentDoesNotExistException',
                                      f'The deployment {deployment_id} does not exist with the user or AWS account.')
            return d

    def list_deployments(self, *, account: str, region: str, application_name: str | None = None,
                         group_name: str | None = None, statuses: Iterable[str] = (),
                         created_after: float | None = None, created_before: float | None = None) -> list[str]:
        """ListDeployments (the caller validates the names against moto), newest first."""
        statuses = set(statuses)
        if unknown := statuses - DEPLOYMENT_STATUSES:
            raise CodeDeployError('InvalidDeploymentStatusException',
                                  f'The deployment status {sorted(unknown)[0]} is not valid.')
        with self.lock:
            found = [d for d in self.deployments.values()
                     if (d.account, d.region) == (account, region)
                     and (not application_name or d.application_name == application_name)
                     and (not group_name or d.group_name == group_name)
                     and (not statuses or d.status in statuses)
                     and (created_after is None or d.create_time >= created_after)
                     and (created_before is None or d.create_time <= created_before)]
            return [d.deployment_id for d in sorted(found, key=lambda d: d.create_time, reverse=True)]

    def continue_deployment(self, *, account: str, region: str, deployment_id: str | None,
                            wait_type: str | None = None) -> None:
        """ContinueDeployment: end the READY_WAIT (reroute production traffic) or the TERMINATION_WAIT."""
        wait_type = wait_type or 'READY_WAIT'
        if wait_type not in ('READY_WAIT', 'TERMINATION_WAIT'):
            raise CodeDeployError('InvalidDeploymentWaitTypeException',
                                  f'The wait type {wait_type} is invalid; use READY_WAIT or TERMINATION_WAIT.')
        with self.lock:
            d = self.get_deployment(account=account, region=region, deployment_id=deployment_id)
            if d.status in DONE_STATUSES:
                raise CodeDeployError('DeploymentAlreadyCompletedException',
                                      f'The deployment {d.deployment_id} is already completed.')
            if d.waiting_for != wait_type:
                what = ('a status of Ready' if wait_type == 'READY_WAIT'
                        else 'started waiting to terminate the original task set')
                raise CodeDeployError('DeploymentIsNotInReadyStateException',
                                      f'The deployment {d.deployment_id} does not have {what} and cannot continue '
                                      f'yet (status {d.status}).')
            d.continued[wait_type] = time.time()
            log.info('deployment %s continued (%s)', d.deployment_id, wait_type)
            self._advance(d, now=time.time())

    def stop_deployment(self, *, account: str, region: str, deployment_id: str | None,
                        auto_rollback_enabled: bool | None = None) -> tuple[str, str]:
        """StopDeployment: ``(status, statusMessage)``; rolls back when asked or the group says so."""
        with self.lock:
            d = self.get_deployment(account=account, region=region, deployment_id=deployment_id)
            if d.status in DONE_STATUSES:
                raise CodeDeployError('DeploymentAlreadyCompletedException',
                                      f'The deployment {d.deployment_id} is already completed.')
            rollback = (auto_rollback_enabled if auto_rollback_enabled is not None
                        else self._rolls_back(d, on='DEPLOYMENT_STOP_ON_REQUEST'))
            self._halt(d)
            d.clock = max(d.clock, time.time())
            self._finish(d, status='Stopped', code='MANUAL_STOP',
                         message='The deployment was stopped by a StopDeployment request.', rollback=rollback)
            return 'Succeeded', f'Deployment {d.deployment_id} stopped' + (' and rolled back.' if rollback else '.')

    def deployment_target(self, *, account: str, region: str, deployment_id: str | None,
                          target_id: str | None) -> Deployment:
        """GetDeploymentTarget's checks: the deployment, once started, and its one ECS target."""
        d = self._started(account=account, region=region, deployment_id=deployment_id)
        if not target_id:
            raise CodeDeployError('DeploymentTargetIdRequiredException', 'A deployment target ID was not provided.')
        if target_id != d.target_id:
            raise CodeDeployError('DeploymentTargetDoesNotExistException',
                                  f'The deployment target {target_id} does not exist in deployment {d.deployment_id}.')
        return d

    def list_targets(self, *, account: str, region: str, deployment_id: str | None,
                     target_statuses: Iterable[str] = ()) -> list[str]:
        """ListDeploymentTargets: the deployment's one ECS target (``cluster:service``)."""
        d = self._started(account=account, region=region, deployment_id=deployment_id)
        statuses = set(target_statuses)
        return [d.target_id] if not statuses or d.target_status in statuses else []

    def put_hook_status(self, *, account: str, region: str, deployment_id: str | None,
                        execution_id: str | None, status: str | None) -> str:
        """PutLifecycleEventHookExecutionStatus: a hook function reports Succeeded or Failed."""
        with self.lock:
            d = self.get_deployment(account=account, region=region, deployment_id=deployment_id)
            if status not in ('Succeeded', 'Failed'):
                raise CodeDeployError('InvalidLifecycleEventHookExecutionStatusException',
                                      f'The status {status} is not valid; a hook reports Succeeded or Failed.')
            execution = self.executions.get(execution_id or '')
            if execution is None or execution.deployment_id != d.deployment_id:
                raise CodeDeployError('InvalidLifecycleEventHookExecutionIdException',
                                      f'The lifecycle event hook execution id {execution_id} is not valid for '
                                      f'deployment {d.deployment_id}.')
            if execution.status != 'InProgress':
                raise CodeDeployError('LifecycleEventAlreadyCompletedException',
                                      f'The {execution.lifecycle_event} lifecycle event has already completed '
                                      f'({execution.status}).')
            execution.status = status
            execution.completed = time.time()
            log.info('deployment %s: hook %s for %s reported %s', d.deployment_id, execution.function_name,
                     execution.lifecycle_event, status)
            self._advance(d, now=time.time())
            return execution.execution_id

    # -- deployment groups (kept by moto) --

    def deployment_group(self, *, moto: _Moto, application_name: str, group_name: str) -> Any:
        """The ECS deployment group from moto's backend (its exceptions turned into ours)."""
        application = moto.codedeploy.applications.get(application_name)
        if application is None:
            raise CodeDeployError('ApplicationDoesNotExistException',
                                  f'The application {application_name} does not exist with the user or AWS account.')
        group = moto.codedeploy.deployment_groups.get(application_name, {}).get(group_name)
        if group is None:
            raise CodeDeployError('DeploymentGroupDoesNotExistException',
                                  f'The deployment group {group_name} does not exist with the user or AWS account.')
        if application.compute_platform != 'ECS':
            raise CodeDeployError('InvalidComputePlatformException',
                                  f'The application {application_name} is not an ECS application.')
        return group

    def check_ecs_deployment_group(self, *, account: str, region: str, request: Mapping[str, Any]) -> None:
        """CreateDeploymentGroup for an ECS application: refuse what AWS refuses, before moto stores it."""
        moto = _Moto(account=account, region=region)
        style = request.get('deploymentStyle') or {}
        if (style.get('deploymentType'), style.get('deploymentOption')) != ('BLUE_GREEN', 'WITH_TRAFFIC_CONTROL'):
            raise CodeDeployError('InvalidDeploymentStyleException',
                                  'An ECS deployment group needs deploymentStyle BLUE_GREEN with '
                                  'WITH_TRAFFIC_CONTROL.')
        config_name = request.get('deploymentConfigName')
        if config_name and config_name not in ECS_DEPLOYMENT_CONFIGS:
            raise CodeDeployError('DeploymentConfigDoesNotExistException',
                                  f'The deployment configuration {config_name} does not exist with the user or AWS '
                                  f'account.')
        services = request.get('ecsServices') or []
        if len(services) != 1 or not services[0].get('serviceName') or not services[0].get('clusterName'):
            raise CodeDeployError('InvalidECSServiceException',
                                  'An ECS deployment group needs exactly one ecsServices entry with serviceName and '
                                  'clusterName.')
        service = moto.service(cluster=services[0]['clusterName'], service=services[0]['serviceName'])
        if service is None or service.status != 'ACTIVE':
            raise CodeDeployError('InvalidECSServiceException',
                                  f'The ECS service {services[0]["serviceName"]} in cluster '
                                  f'{services[0]["clusterName"]} does not exist.')
        if (service.deployment_controller or {}).get('type') != 'CODE_DEPLOY':
            raise CodeDeployError('InvalidECSServiceException',
                                  f'The ECS service {service.name} must use the CODE_DEPLOY deployment controller.')
        pairs = (request.get('loadBalancerInfo') or {}).get('targetGroupPairInfoList') or []
        if len(pairs) != 1:
            raise CodeDeployError('InvalidLoadBalancerInfoException',
                                  'An ECS deployment group needs loadBalancerInfo.targetGroupPairInfoList with '
                                  'exactly one target group pair.')
        pair = pairs[0]
        names = [tg.get('name') for tg in pair.get('targetGroups') or []]
        if len(names) != 2 or len(set(names)) != 2:
            raise CodeDeployError('InvalidTargetGroupPairException',
                                  'A target group pair needs two different target groups.')
        for name in names:
            if not name or moto.target_group_arn(name) is None:
                raise CodeDeployError('InvalidTargetGroupPairException', f'The target group {name} does not exist.')
        for route in ('prodTrafficRoute', 'testTrafficRoute'):
            arns = (pair.get(route) or {}).get('listenerArns') or []
            if route == 'prodTrafficRoute' and len(arns) != 1 or len(arns) > 1:
                raise CodeDeployError('InvalidTargetGroupPairException',
                                      f'{route} needs {"exactly" if route == "prodTrafficRoute" else "at most"} '
                                      f'one listener ARN.')
            for arn in arns:
                if moto.listener(arn) is None:
                    raise CodeDeployError('InvalidTargetGroupPairException', f'The listener {arn} does not exist.')
        blue_green = request.get('blueGreenDeploymentConfiguration') or {}
        ready = blue_green.get('deploymentReadyOption') or {}
        if ready.get('actionOnTimeout', 'CONTINUE_DEPLOYMENT') not in ('CONTINUE_DEPLOYMENT', 'STOP_DEPLOYMENT'):
            raise CodeDeployError('InvalidBlueGreenDeploymentConfigurationException',
                                  f'actionOnTimeout {ready.get("actionOnTimeout")} is not valid.')
        terminate = blue_green.get('terminateBlueInstancesOnDeploymentSuccess') or {}
        if terminate.get('action', 'TERMINATE') not in ('TERMINATE', 'KEEP_ALIVE'):
            raise CodeDeployError('InvalidBlueGreenDeploymentConfigurationException',
                                  f'terminateBlueInstancesOnDeploymentSuccess.action {terminate.get("action")} is '
                                  f'not valid.')

    def group_history(self, *, account: str, region: str, application_name: str,
                      group_name: str) -> tuple[Deployment | None, Deployment | None]:
        """(last attempted, last successful) deployment of a group, for GetDeploymentGroup."""
        with self.lock:
            ours = sorted((d for d in self.deployments.values()
                           if (d.account, d.region, d.application_name, d.group_name)
                           == (account, region, application_name, group_name) and d.creator == 'user'),
                          key=lambda d: d.create_time)
            succeeded = [d for d in ours if d.status == 'Succeeded']
            return (ours[-1] if ours else None), (succeeded[-1] if succeeded else None)

    # -- the state machine --

    def _process(self, d: Deployment) -> Generator[_Effect, Any, None]:
        """The deployment from Created to its end, as a generator paused on what it waits for."""
        try:
            yield from self._deploy(d)
        except _Failure as failure:
            self._finish(d, status='Failed', code=failure.code, message=failure.message,
                         rollback=self._rolls_back(d, on='DEPLOYMENT_FAILURE'))
        except _ReadyTimeout as timeout:
            self._finish(d, status='Stopped', code='TIMEOUT', message=str(timeout), rollback=True)

    def _deploy(self, d: Deployment) -> Generator[_Effect, Any, None]:
        t = self.timings
        yield _Sleep(until=d.clock + t.step_seconds)
        d.status, d.start_time = 'InProgress', d.clock
        self._set_target(d, 'InProgress')
        moto = _Moto(account=d.account, region=d.region)
        self._resolve_blue(d, moto=moto)
        for event in d.events:
            event.status, event.start_time = 'InProgress', d.clock
            d.target_updated = d.clock
            if event.name in HOOK_EVENTS:
                yield from self._hook(d, event)
            elif event.name == 'Install':
                yield from self._install(d, moto=moto)
            elif event.name == 'AllowTestTraffic':
                self._route_test(d, moto=moto, to=d.green)
                yield _Sleep(until=d.clock + t.step_seconds)
            elif event.name == 'AllowTraffic':
                yield from self._allow_traffic(d, moto=moto)
            event.status, event.end_time = 'Succeeded', d.clock
            d.target_updated = d.clock
            if event.name == 'AfterAllowTestTraffic':
                yield from self._ready_wait(d)
        yield from self._terminate_blue(d, moto=moto)
        self._finish(d, status='Succeeded')

    def _resolve_blue(self, d: Deployment, *, moto: _Moto) -> None:
        """Find the original (blue) task set: the service's primary one, behind the production target group."""
        service = moto.service(cluster=d.cluster, service=d.service)
        if service is None or service.status != 'ACTIVE':
            raise _Failure('INVALID_ECS_SERVICE', f'The ECS service {d.service} in cluster {d.cluster} does not exist.')
        d.service_arn = service.arn
        pair = ((d.load_balancer_info.get('targetGroupPairInfoList') or [{}])[0])
        prod = (pair.get('prodTrafficRoute') or {}).get('listenerArns') or []
        names = [tg.get('name') for tg in pair.get('targetGroups') or []]
        arns = {name: moto.target_group_arn(name) for name in names}
        if len(names) != 2 or None in arns.values() or not prod:
            raise _Failure('MISSING_ELB_INFORMATION', f'The deployment group {d.group_name} needs two existing target '
                                                      f'groups and a production listener.')
        serving = moto.forwarded_target_group(prod[0])
        if serving not in arns.values():
            raise _Failure('ELASTIC_LOAD_BALANCING_INVALID',
                           f'The production listener {prod[0]} forwards to neither target group of the pair '
                           f'({", ".join(names)}).')
        blue_name = next(name for name, arn in arns.items() if arn == serving)
        green_name = next(name for name in names if name != blue_name)
        primary = next((ts for ts in service.task_sets if ts.status == 'PRIMARY'), None)
        if primary is None:
            # moto starts a CODE_DEPLOY service without the primary task set ECS would give it: adopt one.
            if not service.task_definition:
                raise _Failure('INVALID_ECS_SERVICE', f'The ECS service {d.service} has no task definition.')
            balancers = service.load_balancers or [{'targetGroupArn': serving,
                                                    'containerName': d.appspec.container_name if d.appspec else '',
                                                    'containerPort': d.appspec.container_port if d.appspec else 0}]
            primary = moto.ecs.create_task_set(
                service.name, service.cluster_name, service.task_definition,
                network_configuration=service.network_configuration or None, load_balancers=balancers,
                launch_type=service.launch_type, platform_version=service.platform_version)
            self._mark_running(primary, desired=service.desired_count)
            moto.ecs.update_service_primary_task_set(service.cluster_name, service.name, primary.task_set_arn)
        balancer = (primary.load_balancers or [{}])[0]
        image = self._image(moto, primary.task_definition, balancer.get('containerName', ''))
        d.blue = TaskSetRecord(
            label='Blue', arn=primary.task_set_arn, identifier=primary.id, task_definition_arn=primary.task_definition,
            image=image, container_name=balancer.get('containerName', ''),
            container_port=int(balancer.get('containerPort') or 0), target_group_arn=serving,
            target_group_name=blue_name, desired_count=service.desired_count, status='PRIMARY', traffic_weight=100.0)
        d.green = TaskSetRecord(
            label='Green', arn='', identifier='', task_definition_arn='', image='', container_name='',
            container_port=0, target_group_arn=arns[green_name] or '', target_group_name=green_name,
            desired_count=0, status='', traffic_weight=0.0)

    @staticmethod
    def _image(moto: _Moto, task_definition: str, container_name: str) -> str:
        try:
            definition = moto.ecs.describe_task_definition(task_definition)
        except Exception:  # noqa: BLE001 -- a deregistered or unknown definition has no image to report
            return ''
        container = next((c for c in definition.container_definitions if c.get('name') == container_name), None)
        return str((container or {}).get('image') or '')

    @staticmethod
    def _mark_running(task_set: Any, *, desired: int) -> None:
        """moto's task sets have no counts; report the desired tasks as running (moto runs none)."""
        task_set.scale = {'value': 100.0, 'unit': 'PERCENT'}
        task_set.computed_desired_count = desired
        task_set.running_count = desired
        task_set.pending_count = 0

    def _install(self, d: Deployment, *, moto: _Moto) -> Generator[_Effect, Any, None]:
        """Install: create the replacement task set behind the green target group."""
        assert d.appspec is not None and d.green is not None
        spec = d.appspec
        try:
            definition = moto.ecs.describe_task_definition(spec.task_definition)
        except Exception:  # noqa: BLE001 -- moto raises its own not-found error
            raise _Failure('ECS_UPDATE_ERROR', f'The task definition {spec.task_definition} does not exist.') from None
        container = next((c for c in definition.container_definitions if c.get('name') == spec.container_name), None)
        if container is None:
            raise _Failure('ECS_UPDATE_ERROR', f'The task definition {definition.arn} has no container named '
                                               f'{spec.container_name}.')
        ports = {int(m.get('containerPort', 0)) for m in container.get('portMappings') or []}
        if spec.container_port not in ports:
            raise _Failure('ECS_UPDATE_ERROR', f'The container {spec.container_name} of {definition.arn} does not '
                                               f'map port {spec.container_port}.')
        service = moto.service(cluster=d.cluster, service=d.service)
        if service is None:
            raise _Failure('INVALID_ECS_SERVICE', f'The ECS service {d.service} no longer exists.')
        try:
            task_set = moto.ecs.create_task_set(
                service.name, service.cluster_name, definition.arn, external_id=d.deployment_id,
                network_configuration=spec.network_configuration or service.network_configuration or None,
                load_balancers=[{'targetGroupArn': d.green.target_group_arn, 'containerName': spec.container_name,
                                 'containerPort': spec.container_port}],
                launch_type=None if spec.capacity_provider_strategy else service.launch_type,
                capacity_provider_strategy=spec.capacity_provider_strategy,
                platform_version=spec.platform_version or service.platform_version)
        except Exception as exc:  # noqa: BLE001 -- reported as the deployment's error
            raise _Failure('ECS_UPDATE_ERROR', f'The replacement task set could not be created: {exc}') from None
        self._mark_running(task_set, desired=service.desired_count)
        d.green = dataclasses.replace(
            d.green, arn=task_set.task_set_arn, identifier=task_set.id, task_definition_arn=definition.arn,
            image=str(container.get('image') or ''), container_name=spec.container_name,
            container_port=spec.container_port, desired_count=service.desired_count, status='ACTIVE')
        log.info('deployment %s: replacement task set %s (%s) on %s', d.deployment_id, task_set.id,
                 definition.arn, d.green.target_group_name)
        if self.on_green_task_set is not None:
            error = yield _Call(fn=self.on_green_task_set, args=(definition.arn, d.green.image, spec.container_port))
            if error is not None:
                raise _Failure('ECS_UPDATE_ERROR', f'The replacement task set did not start: {error}')
        yield _Sleep(until=d.clock + self.timings.step_seconds)

    def _hook(self, d: Deployment, event: LifecycleEvent) -> Generator[_Effect, Any, None]:
        """A hookable event: run the AppSpec's function for it and wait for its reported status."""
        function = d.appspec.hooks.get(event.name) if d.appspec else None
        if function is None:
            yield _Sleep(until=d.clock + self.timings.step_seconds)
            return
        execution = HookExecution(execution_id=str(uuid.uuid4()), deployment_id=d.deployment_id,
                                  lifecycle_event=event.name, function_name=function, started=d.clock)
        self.executions[execution.execution_id] = execution
        d.hooks.append(execution)
        if self.on_hook is not None:
            self._notify(self.on_hook, dataclasses.replace(execution))
        deadline = d.clock + self.timings.hook_timeout_minutes * self.timings.minute_seconds
        outcome = yield _AwaitHook(execution=execution, deadline=deadline)
        if outcome == 'Failed':
            event.diagnostics = {'errorCode': 'ScriptFailed', 'scriptName': function,
                                 'message': f'The {event.name} hook {function} reported Failed.', 'logTail': ''}
            raise _Failure('HOOK_EXECUTION_FAILURE',
                           f'The deployment failed because the {event.name} hook {function} reported Failed.')
        if outcome == 'Timeout':
            execution.status = 'Failed'
            event.diagnostics = {'errorCode': 'ScriptTimedOut', 'scriptName': function,
                                 'message': f'The {event.name} hook {function} did not report in time.',
                                 'logTail': ''}
            raise _Failure('HOOK_EXECUTION_FAILURE',
                           f'The deployment failed because the {event.name} hook {function} did not report a '
                           f'status within {self.timings.hook_timeout_minutes:g} minutes.')

    def _route_test(self, d: Deployment, *, moto: _Moto, to: TaskSetRecord | None) -> None:
        """Point the test listener (if any) at one colour's target group."""
        pair = (d.load_balancer_info.get('targetGroupPairInfoList') or [{}])[0]
        test = (pair.get('testTrafficRoute') or {}).get('listenerArns') or []
        if test and to is not None:
            moto.route(test, weights={to.target_group_arn: 100})

    def _allow_traffic(self, d: Deployment, *, moto: _Moto) -> Generator[_Effect, Any, None]:
        """AllowTraffic: shift the production listener to green (at once, canary or linear), make green primary."""
        assert d.blue is not None and d.green is not None
        pair = (d.load_balancer_info.get('targetGroupPairInfoList') or [{}])[0]
        prod = (pair.get('prodTrafficRoute') or {}).get('listenerArns') or []
        for weight, hold_minutes in d.routing.steps():
            moto.route(prod, weights={d.blue.target_group_arn: 100 - weight, d.green.target_group_arn: weight})
            d.green.traffic_weight, d.blue.traffic_weight = float(weight), float(100 - weight)
            d.target_updated = d.clock
            log.info('deployment %s: %d%% of production traffic on %s', d.deployment_id, weight,
                     d.green.target_group_name)
            if hold_minutes:
                yield _Sleep(until=d.clock + hold_minutes * self.timings.minute_seconds)
        service = moto.service(cluster=d.cluster, service=d.service)
        if service is not None and d.green.arn:
            moto.ecs.update_service_primary_task_set(service.cluster_name, service.name, d.green.arn)
            d.green.status, d.blue.status = 'PRIMARY', 'ACTIVE'
        yield _Sleep(until=d.clock + self.timings.step_seconds)

    def _ready_wait(self, d: Deployment) -> Generator[_Effect, Any, None]:
        """With deploymentReadyOption STOP_DEPLOYMENT: status Ready until ContinueDeployment or the wait time ends."""
        ready = d.blue_green.get('deploymentReadyOption') or {}
        if ready.get('actionOnTimeout') != 'STOP_DEPLOYMENT':
            return
        minutes = float(ready.get('waitTimeInMinutes') or 0)
        deadline = d.clock + minutes * self.timings.minute_seconds if minutes > 0 else None
        d.status = 'Ready'
        self._set_target(d, 'Ready')
        log.info('deployment %s is Ready: test traffic on %s, waiting for ContinueDeployment', d.deployment_id,
                 d.green.target_group_name if d.green else '?')
        outcome = yield _AwaitContinue(wait_type='READY_WAIT', deadline=deadline)
        if outcome == 'timeout':
            raise _ReadyTimeout(f'Traffic rerouting was not started within {minutes:g} minutes '
                                f'(deploymentReadyOption.waitTimeInMinutes).')
        d.status = 'InProgress'
        self._set_target(d, 'InProgress')

    def _terminate_blue(self, d: Deployment, *, moto: _Moto) -> Generator[_Effect, Any, None]:
        """After AfterAllowTraffic: wait terminationWaitTimeInMinutes (or TERMINATION_WAIT), remove blue."""
        terminate = d.blue_green.get('terminateBlueInstancesOnDeploymentSuccess') or {}
        if terminate.get('action', 'TERMINATE') != 'TERMINATE' or d.blue is None:
            return
        minutes = float(terminate.get('terminationWaitTimeInMinutes') or 0)
        d.termination_wait_started = True
        if minutes > 0:
            yield _AwaitContinue(wait_type='TERMINATION_WAIT', deadline=d.clock + minutes * self.timings.minute_seconds)
        self._remove(d, d.blue, moto=moto)

    def _remove(self, d: Deployment, record: TaskSetRecord, *, moto: _Moto) -> None:
        """Delete one colour's task set from moto and tell ``on_cleanup``."""
        if not record.arn or record.status == 'DRAINING':
            return
        service = moto.service(cluster=d.cluster, service=d.service)
        if service is not None:
            try:
                moto.ecs.delete_task_set(service.cluster_name, service.name, record.arn)
            except Exception:  # noqa: BLE001 -- already gone is fine
                pass
        record.status, record.traffic_weight, record.desired_count = 'DRAINING', 0.0, 0
        log.info('deployment %s: task set %s (%s) removed', d.deployment_id, record.identifier, record.label)
        if self.on_cleanup is not None:
            self._notify(self.on_cleanup, record.task_definition_arn, record.image, record.container_port)

    def _finish(self, d: Deployment, *, status: str, code: str | None = None, message: str | None = None,
                rollback: bool = False) -> None:
        """End the deployment: statuses of events, target and hooks, rollback, completion time."""
        for event in d.events:
            if event.status == 'InProgress':
                event.status = 'Failed' if status == 'Failed' else 'Skipped'
                event.end_time = d.clock
            elif event.status == 'Pending' and status != 'Succeeded':
                event.status = 'Skipped'
        for execution in d.hooks:
            if execution.status == 'InProgress':
                execution.status, execution.completed = 'Skipped', d.clock
        if code is not None:
            d.error = {'code': code, 'message': message or code}
        if rollback:
            self._roll_back(d)
        d.status, d.complete_time = status, d.clock
        self._set_target(d, {'Succeeded': 'Succeeded', 'Failed': 'Failed'}.get(status, 'Skipped'))
        log.info('deployment %s %s%s', d.deployment_id, status, f': {message}' if message else '')

    def _roll_back(self, d: Deployment) -> None:
        """Reroute production and test traffic to blue, remove green, record a codeDeployRollback deployment."""
        if d.blue is None or d.green is None or not d.green.arn:
            return  # nothing was changed yet (AWS: "a rollback is not possible at this point")
        moto = _Moto(account=d.account, region=d.region)
        pair = (d.load_balancer_info.get('targetGroupPairInfoList') or [{}])[0]
        listeners = [*((pair.get('prodTrafficRoute') or {}).get('listenerArns') or []),
                     *((pair.get('testTrafficRoute') or {}).get('listenerArns') or [])]
        moto.route(listeners, weights={d.blue.target_group_arn: 100})
        service = moto.service(cluster=d.cluster, service=d.service)
        if service is not None and d.blue.status != 'DRAINING':
            try:
                moto.ecs.update_service_primary_task_set(service.cluster_name, service.name, d.blue.arn)
            except Exception:  # noqa: BLE001 -- the original task set is gone; nothing to make primary
                pass
        d.blue.status, d.blue.traffic_weight = 'PRIMARY', 100.0
        self._remove(d, d.green, moto=moto)
        rollback = Deployment(
            deployment_id=self._new_deployment_id(), account=d.account, region=d.region,
            application_name=d.application_name, group_name=d.group_name, config_name=d.config_name,
            routing=d.routing, revision=d.previous_revision or {}, appspec=None,
            description=f'Rollback of {d.deployment_id}', creator='codeDeployRollback', auto_rollback={},
            deployment_style=d.deployment_style, blue_green=d.blue_green, load_balancer_info=d.load_balancer_info,
            cluster=d.cluster, service=d.service, create_time=d.clock, start_time=d.clock, complete_time=d.clock,
            status='Succeeded', target_status='Succeeded', target_updated=d.clock, service_arn=d.service_arn,
            blue=dataclasses.replace(d.blue), clock=d.clock,
            rollback_info={'rollbackTriggeringDeploymentId': d.deployment_id,
                           'rollbackMessage': f'Rollback of deployment {d.deployment_id}'})
        for event in rollback.events:
            done = event.name == 'AllowTraffic'  # the only thing a rollback does: reroute to the original
            event.status = 'Succeeded' if done else 'Skipped'
            event.start_time = event.end_time = d.clock
        self.deployments[rollback.deployment_id] = rollback
        d.rollback_info = {'rollbackDeploymentId': rollback.deployment_id,
                           'rollbackMessage': f'Deployment {d.deployment_id} was rolled back by deployment '
                                              f'{rollback.deployment_id}: traffic is on {d.blue.target_group_name}.'}
        log.info('deployment %s rolled back (%s): traffic on %s', d.deployment_id, rollback.deployment_id,
                 d.blue.target_group_name)

    # -- the driver --

    def _advance(self, d: Deployment, *, now: float) -> None:
        """Resume the deployment's process as long as what it waits for has happened by ``now``."""
        while d.process is not None and d.effect is not None:
            effect = d.effect
            value: Any = None
            if isinstance(effect, _Sleep):
                if now < effect.until:
                    return
                d.clock = max(d.clock, effect.until)
            elif isinstance(effect, _AwaitHook):
                execution = effect.execution
                auto_at = execution.started + self.timings.auto_hook_seconds
                if self.auto_hooks and execution.status == 'InProgress' and now >= auto_at:
                    execution.status, execution.completed = 'Succeeded', auto_at
                if execution.status in ('Succeeded', 'Failed'):
                    d.clock, value = max(d.clock, execution.completed or d.clock), execution.status
                elif now >= effect.deadline:
                    d.clock, value = max(d.clock, effect.deadline), 'Timeout'
                else:
                    return
            elif isinstance(effect, _AwaitContinue):
                if (when := d.continued.get(effect.wait_type)) is not None:
                    d.clock, value = max(d.clock, when), 'continued'
                elif effect.deadline is not None and now >= effect.deadline:
                    d.clock, value = max(d.clock, effect.deadline), 'timeout'
                else:
                    return
            elif isinstance(effect, _Call):
                if not effect.done:
                    if not effect.queued:
                        effect.queued = True
                        self._outbox.append(effect)
                    return
                d.clock, value = max(d.clock, effect.finished), effect.error
            try:
                d.effect = d.process.send(value)
            except StopIteration:
                d.process = d.effect = None
            except Exception as exc:  # noqa: BLE001 -- a simulator bug fails the deployment, not the server
                log.exception('deployment %s: simulator error', d.deployment_id)
                d.process = d.effect = None
                self._finish(d, status='Failed', code='INTERNAL_ERROR', message=f'Simulator error: {exc!r}')

    def _halt(self, d: Deployment) -> None:
        if d.process is not None:
            d.process.close()
        d.process = d.effect = None

    def _notify(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a callback soon, outside the lock, without waiting for it."""
        self._outbox.append(_Call(fn=fn, args=args, queued=True))

    def _set_target(self, d: Deployment, status: str) -> None:
        d.target_status, d.target_updated = status, d.clock

    def _rolls_back(self, d: Deployment, *, on: str) -> bool:
        config = d.auto_rollback or {}
        return bool(config.get('enabled')) and on in (config.get('events') or [])

    def _started(self, *, account: str, region: str, deployment_id: str | None) -> Deployment:
        d = self.get_deployment(account=account, region=region, deployment_id=deployment_id)
        if d.status == 'Created':
            raise CodeDeployError('DeploymentNotStartedException', f'The deployment {d.deployment_id} has not started.')
        return d

    def _last_successful_revision(self, *, account: str, region: str, application_name: str,
                                  group_name: str) -> dict[str, Any] | None:
        _, succeeded = self.group_history(account=account, region=region, application_name=application_name,
                                          group_name=group_name)
        return succeeded.revision if succeeded else None

    def _new_deployment_id(self) -> str:
        while True:
            candidate = 'd-' + ''.join(random.choices(_ID_CHARS, k=9))
            if candidate not in self.deployments:
                return candidate


class _ReadyTimeout(Exception):
    """The READY_WAIT ran out: AWS changes the deployment's status to Stopped."""


# ----------------------------------------------------------------------------------------------
# parse and serialise (AWS JSON 1.1)


@dataclasses.dataclass(kw_only=True)
class Forward:
    """Answer from moto instead: with this request body (None: unchanged), its JSON answer passed through ``merge``."""

    body: dict[str, Any] | None = None
    merge: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


def _compact(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if v is not None}


class CodeDeployResponses:
    """The wire layer: JSON requests in, simulator calls, JSON documents out (or a :class:`Forward` to moto)."""

    def __init__(self, *, simulator: DeploymentSimulator) -> None:
        self.simulator = simulator

    def dispatch(self, operation: str, request: dict[str, Any], *, account: str,
                 region: str) -> dict[str, Any] | Forward:
        """Answer one operation; raises :class:`CodeDeployError`."""
        method = getattr(self, re.sub(r'(?<!^)(?=[A-Z])', '_', operation).lower())
        return method(request, account=account, region=region)

    # -- simulated operations --

    def create_deployment(self, request: dict[str, Any], *, account: str, region: str) -> dict[str, Any] | Forward:
        moto = _Moto(account=account, region=region)
        application = moto.codedeploy.applications.get(request.get('applicationName') or '')
        if application is not None and application.compute_platform != 'ECS':
            return Forward()  # EC2/on-premises and Lambda deployments stay moto's
        d = self.simulator.create_deployment(
            account=account, region=region, application_name=request.get('applicationName'),
            group_name=request.get('deploymentGroupName'), revision=request.get('revision'),
            config_name=request.get('deploymentConfigName'), description=request.get('description'),
            auto_rollback=request.get('autoRollbackConfiguration'))
        return {'deploymentId': d.deployment_id}

    def get_deployment(self, request: dict[str, Any], *, account: str, region: str) -> dict[str, Any] | Forward:
        deployment_id = request.get('deploymentId')
        if deployment_id and self._moto_has(deployment_id, account=account, region=region):
            return Forward()
        d = self.simulator.get_deployment(account=account, region=region, deployment_id=deployment_id)
        with self.simulator.lock:
            return {'deploymentInfo': self.deployment_info(d)}

    def batch_get_deployments(self, request: dict[str, Any], *, account: str,
                              region: str) -> dict[str, Any] | Forward:
        ids = request.get('deploymentIds')
        if not ids:
            raise CodeDeployError('DeploymentIdRequiredException', 'At least one deployment ID must be specified.')
        if len(ids) > 25:
            raise CodeDeployError('BatchLimitExceededException', 'The maximum number of names or IDs allowed for '
                                                                 'this request (25) was exceeded.')
        infos = []
        with self.simulator.lock:
            for deployment_id in ids:
                d = self.simulator.deployments.get(deployment_id)
                if d is not None and (d.account, d.region) == (account, region):
                    infos.append(self.deployment_info(d))
        theirs = [i for i in ids if self._moto_has(i, account=account, region=region)]
        if not theirs:
            return {'deploymentsInfo': infos}
        return Forward(body={'deploymentIds': theirs},
                       merge=lambda answer: {'deploymentsInfo': infos + list(answer.get('deploymentsInfo') or [])})

    def list_deployments(self, request: dict[str, Any], *, account: str, region: str) -> dict[str, Any] | Forward:
        time_range = request.get('createTimeRange') or {}
        ours = self.simulator.list_deployments(
            account=account, region=region, application_name=request.get('applicationName'),
            group_name=request.get('deploymentGroupName'), statuses=request.get('includeOnlyStatuses') or (),
            created_after=_epoch(time_range.get('start')), created_before=_epoch(time_range.get('end')))
        # moto checks the names and the time range, and adds its own (non-ECS) deployments.
        return Forward(merge=lambda answer: {'deployments': ours + list(answer.get('deployments') or [])})

    def continue_deployment(self, request: dict[str, Any], *, account: str, region: str) -> dict[str, Any]:
        self.simulator.continue_deployment(account=account, region=region, deployment_id=request.get('deploymentId'),
                                           wait_type=request.get('deploymentWaitType'))
        return {}

    def stop_deployment(self, request: dict[str, Any], *, account: str, region: str) -> dict[str, Any]:
        status, message = self.simulator.stop_deployment(
            account=account, region=region, deployment_id=request.get('deploymentId'),
            auto_rollback_enabled=request.get('autoRollbackEnabled'))
        return {'status': status, 'statusMessage': message}

    def list_deployment_targets(self, request: dict[str, Any], *, account: str, region: str) -> dict[str, Any]:
        filters = request.get('targetFilters') or {}
        if unknown := set(filters) - {'TargetStatus', 'ServerInstanceLabel'}:
            raise CodeDeployError('InvalidTargetFilterNameException', f'The target filter {sorted(unknown)[0]} is '
                                                                      f'not valid.')
        ids = self.simulator.list_targets(account=account, region=region, deployment_id=request.get('deploymentId'),
                                          target_statuses=filters.get('TargetStatus') or ())
        return {'targetIds': ids}

    def get_deployment_target(self, request: dict[str, Any], *, account: str, region: str) -> dict[str, Any]:
        d = self.simulator.deployment_target(account=account, region=region,
                                             deployment_id=request.get('deploymentId'),
                                             target_id=request.get('targetId'))
        with self.simulator.lock:
            return {'deploymentTarget': self.deployment_target(d)}

    def batch_get_deployment_targets(self, request: dict[str, Any], *, account: str,
                                     region: str) -> dict[str, Any]:
        ids = request.get('targetIds')
        if not ids:
            raise CodeDeployError('DeploymentTargetIdRequiredException', 'A deployment target ID was not provided.')
        if len(ids) > 25:
            raise CodeDeployError('DeploymentTargetListSizeExceededException',
                                  'The maximum number of targets that can be associated with an Amazon ECS '
                                  'deployment was exceeded.')
        targets = []
        for target_id in ids:
            d = self.simulator.deployment_target(account=account, region=region,
                                                 deployment_id=request.get('deploymentId'), target_id=target_id)
            with self.simulator.lock:
                targets.append(self.deployment_target(d))
        return {'deploymentTargets': targets}

    def put_lifecycle_event_hook_execution_status(self, request: dict[str, Any], *, account: str,
                                                  region: str) -> dict[str, Any]:
        execution_id = self.simulator.put_hook_status(
            account=account, region=region, deployment_id=request.get('deploymentId'),
            execution_id=request.get('lifecycleEventHookExecutionId'), status=request.get('status'))
        return {'lifecycleEventHookExecutionId': execution_id}

    # -- moto's resources, adjusted on the way --

    def create_deployment_group(self, request: dict[str, Any], *, account: str,
                                region: str) -> dict[str, Any] | Forward:
        moto = _Moto(account=account, region=region)
        application = moto.codedeploy.applications.get(request.get('applicationName') or '')
        if application is None or application.compute_platform != 'ECS':
            return Forward()
        if request.get('deploymentGroupName') in moto.codedeploy.deployment_groups.get(
                application.application_name, {}):
            return Forward()  # moto answers DeploymentGroupAlreadyExistsException
        self.simulator.check_ecs_deployment_group(account=account, region=region, request=request)
        return Forward(body={**request, 'deploymentConfigName': request.get('deploymentConfigName')
                             or DEFAULT_ECS_CONFIG})

    def get_deployment_group(self, request: dict[str, Any], *, account: str, region: str) -> Forward:
        attempted, succeeded = self.simulator.group_history(
            account=account, region=region, application_name=request.get('applicationName') or '',
            group_name=request.get('deploymentGroupName') or '')

        def merge(answer: dict[str, Any]) -> dict[str, Any]:
            info = dict(answer.get('deploymentGroupInfo') or {})
            if info.get('computePlatform') == 'ECS' and info.get('deploymentConfigName') == _MOTO_DEFAULT_CONFIG:
                info['deploymentConfigName'] = DEFAULT_ECS_CONFIG
            for key, d in (('lastAttemptedDeployment', attempted), ('lastSuccessfulDeployment', succeeded)):
                if d is not None:
                    info[key] = _compact({'deploymentId': d.deployment_id, 'status': d.status,
                                          'endTime': d.complete_time, 'createTime': d.create_time})
            if succeeded is not None:
                info['targetRevision'] = succeeded.revision
            return {**answer, 'deploymentGroupInfo': info}

        return Forward(merge=merge)

    def get_deployment_config(self, request: dict[str, Any], *, account: str,
                              region: str) -> dict[str, Any] | Forward:
        name = request.get('deploymentConfigName') or ''
        routing = ECS_DEPLOYMENT_CONFIGS.get(name)
        if routing is None:
            return Forward()
        return {'deploymentConfigInfo': {
            'deploymentConfigId': str(uuid.uuid5(uuid.NAMESPACE_URL, name)), 'deploymentConfigName': name,
            'computePlatform': 'ECS', 'trafficRoutingConfig': routing.serialise(), 'createTime': 0.0}}

    # -- documents --

    @staticmethod
    def deployment_info(d: Deployment) -> dict[str, Any]:
        """A ``DeploymentInfo`` document."""
        overview = {status: 0 for status in TARGET_STATUSES}
        if d.target_status in overview:
            overview[d.target_status] = 1
        return _compact({
            'applicationName': d.application_name, 'deploymentGroupName': d.group_name,
            'deploymentConfigName': d.config_name, 'deploymentId': d.deployment_id,
            'previousRevision': d.previous_revision, 'revision': d.revision, 'status': d.status,
            'errorInformation': d.error, 'createTime': d.create_time, 'startTime': d.start_time,
            'completeTime': d.complete_time, 'deploymentOverview': overview, 'description': d.description,
            'creator': d.creator, 'ignoreApplicationStopFailures': False,
            'autoRollbackConfiguration': d.auto_rollback or None, 'updateOutdatedInstancesOnly': False,
            'rollbackInfo': d.rollback_info, 'deploymentStyle': d.deployment_style or None,
            'instanceTerminationWaitTimeStarted': d.termination_wait_started,
            'blueGreenDeploymentConfiguration': d.blue_green or None, 'loadBalancerInfo': d.load_balancer_info or None,
            'deploymentStatusMessages': list(d.status_messages), 'computePlatform': 'ECS',
        })

    @staticmethod
    def deployment_target(d: Deployment) -> dict[str, Any]:
        """A ``DeploymentTarget`` document for the deployment's ECS target."""
        task_sets = [_compact({
            'identifer': ts.identifier,  # sic: the API's spelling
            'desiredCount': ts.desired_count, 'pendingCount': 0, 'runningCount': ts.desired_count,
            'status': ts.status, 'trafficWeight': ts.traffic_weight, 'targetGroup': {'name': ts.target_group_name},
            'taskSetLabel': ts.label,
        }) for ts in (d.blue, d.green) if ts is not None and ts.arn]
        events = [_compact({'lifecycleEventName': e.name, 'status': e.status, 'startTime': e.start_time,
                            'endTime': e.end_time, 'diagnostics': e.diagnostics}) for e in d.events]
        return {'deploymentTargetType': 'ECSTarget', 'ecsTarget': _compact({
            'deploymentId': d.deployment_id, 'targetId': d.target_id, 'targetArn': d.service_arn or None,
            'lastUpdatedAt': d.target_updated, 'lifecycleEvents': events, 'status': d.target_status,
            'taskSetsInfo': task_sets})}

    @staticmethod
    def _moto_has(deployment_id: str, *, account: str, region: str) -> bool:
        return deployment_id in _Moto(account=account, region=region).codedeploy.deployments


# ----------------------------------------------------------------------------------------------
# the WSGI application and the server

_CREDENTIAL = re.compile(r'Credential=([^/,\s]+)/\d{8}/([^/]+)/')


def _request_scope(environ: Mapping[str, Any]) -> tuple[str, str]:
    """(account, region) of a request, the way moto decides them."""
    match = _CREDENTIAL.search(environ.get('HTTP_AUTHORIZATION', ''))
    region = match.group(2) if match else 'us-east-1'
    if 'MOTO_ACCOUNT_ID' in os.environ:
        return os.environ['MOTO_ACCOUNT_ID'], region
    if account := environ.get('HTTP_X_MOTO_ACCOUNT_ID'):
        return str(account), region
    from moto.iam.models import get_account_id_from
    return (get_account_id_from(match.group(1)) if match else DEFAULT_ACCOUNT_ID), region


class SandboxApp:
    """moto's application, with CodeDeploy deployment operations answered by the simulator."""

    def __init__(self, *, simulator: DeploymentSimulator, moto_app: Callable[..., Any] | None = None) -> None:
        self.simulator = simulator
        self.responses = CodeDeployResponses(simulator=simulator)
        self.moto = moto_app or DomainDispatcherApplication(create_backend_app)
        #: None: any access key is accepted (moto's default). A set: requests signed with another key
        #: are refused as AWS refuses unknown keys (see `AwsSandbox.refuse_unknown_keys`).
        self.known_access_keys: frozenset[str] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.known_access_keys is not None:
            found = re.search(r'Credential=([^/,\s]+)/', environ.get('HTTP_AUTHORIZATION', ''))
            if found and found.group(1) not in self.known_access_keys:
                return self._unknown_key(environ, start_response)
        target = environ.get('HTTP_X_AMZ_TARGET', '')
        operation = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ''
        if operation in SIMULATED_OPERATIONS or operation in ADJUSTED_OPERATIONS:
            return self._codedeploy(operation, environ, start_response)
        path = environ.get('PATH_INFO', '')
        if path == HOOKS_PATH and environ.get('REQUEST_METHOD') == 'GET':
            hooks = [h.serialise() for h in self.simulator.pending_hooks()]
            return self._respond(start_response, 200, {'hookExecutions': hooks}, content_type='application/json')
        if path == '/moto-api/reset' and environ.get('REQUEST_METHOD') == 'POST':
            self.simulator.reset()
        return self.moto(environ, start_response)

    def _codedeploy(self, operation: str, environ: dict[str, Any],
                    start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = self._read_body(environ)
        try:
            request = json.loads(body or b'{}')
            if not isinstance(request, dict):
                raise ValueError('not an object')
        except ValueError:
            return self._respond(start_response, 400, {'__type': 'SerializationException',
                                                       'message': 'The request body is not a JSON object.'})
        account, region = _request_scope(environ)
        try:
            answer = self.responses.dispatch(operation, request, account=account, region=region)
        except CodeDeployError as error:
            return self._respond(start_response, error.status, error.body())
        except Exception as exc:  # noqa: BLE001 -- answered as AWS answers its own failures
            log.exception('CodeDeploy %s failed in the sandbox', operation)
            return self._respond(start_response, 500, {'__type': 'InternalFailure', 'message': repr(exc)})
        if isinstance(answer, Forward):
            return self._forward(environ, start_response, body=body if answer.body is None
                                 else json.dumps(answer.body).encode(), merge=answer.merge)
        return self._respond(start_response, 200, answer)

    def _forward(self, environ: dict[str, Any], start_response: Callable[..., Any], *, body: bytes,
                 merge: Callable[[dict[str, Any]], dict[str, Any]] | None) -> Iterable[bytes]:
        """Let moto answer (with this body); pass its answer on, merged when it succeeded."""
        environ = {**environ, 'wsgi.input': io.BytesIO(body), 'CONTENT_LENGTH': str(len(body))}
        captured: dict[str, Any] = {}
        chunks: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured.update(status=status, headers=headers)
            return chunks.append

        result = self.moto(environ, capture)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, 'close'):
                result.close()
        payload = b''.join(chunks)
        status = str(captured.get('status', '500 INTERNAL SERVER ERROR'))
        if merge is not None and status.startswith('200'):
            return self._respond(start_response, 200, merge(json.loads(payload or b'{}')))
        headers = [(k, v) for k, v in captured.get('headers', []) if k.lower() != 'content-length']
        start_response(status, [*headers, ('Content-Length', str(len(payload)))])
        return [payload]

    def _unknown_key(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """AWS's answer to an access key it does not know: JSON protocols (ECS, ECR, CodeDeploy) say
        UnrecognizedClientException, query protocols (STS, ELBv2, IAM) InvalidClientTokenId; HTTP 403."""
        self._read_body(environ)
        message = 'The security token included in the request is invalid.'
        if environ.get('HTTP_X_AMZ_TARGET'):
            return self._respond(start_response, 403, {'__type': 'UnrecognizedClientException', 'message': message})
        payload = (f'<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>'
                   f'<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>'
                   ).encode()
        start_response('403 Forbidden', [('Content-Type', 'text/xml'), ('Content-Length', str(len(payload)))])
        return [payload]

    @staticmethod
    def _read_body(environ: Mapping[str, Any]) -> bytes:
        try:
            length = int(environ.get('CONTENT_LENGTH') or 0)
        except ValueError:
            length = 0
        return environ['wsgi.input'].read(length) if length > 0 else b''

    @staticmethod
    def _respond(start_response: Callable[..., Any], status: int, document: Mapping[str, Any], *,
                 content_type: str = JSON_CONTENT_TYPE) -> list[bytes]:
        payload = json.dumps(document).encode()
        reason = {200: 'OK', 400: 'Bad Request', 500: 'Internal Server Error'}.get(status, 'Error')
        start_response(f'{status} {reason}', [('Content-Type', content_type), ('Content-Length', str(len(payload))),
                                              ('x-amzn-RequestId', str(uuid.uuid4()))])
        return [payload]


class _QuietRequestHandler(MotoRequestHandler):
    """moto's request handler without a log line per request."""

    def log_request(self, code: int | str = '-', size: int | str = '-') -> None:
        pass


class AwsSandbox:
    """moto plus the CodeDeploy simulator, served on ``host:port`` from a background thread."""

    def __init__(self, *, host: str = '127.0.0.1', port: int = 0, auto_hooks: bool = False,
                 timings: Timings | None = None,
                 on_green_task_set: Callable[[str, str, int], Any] | None = None,
                 on_cleanup: Callable[[str, str, int], Any] | None = None,
                 on_hook: Callable[[HookExecution], Any] | None = None,
                 log_requests: bool = False) -> None:
        self.host = host
        self.port = port
        self.simulator = DeploymentSimulator(timings=timings, auto_hooks=auto_hooks,
                                             on_green_task_set=on_green_task_set, on_cleanup=on_cleanup,
                                             on_hook=on_hook)
        self.app = SandboxApp(simulator=self.simulator)
        self._log_requests = log_requests
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once started."""
        if self._server is None:
            raise RuntimeError('the sandbox is not running')
        return f'http://{self.host}:{self._server.server_port}'

    def start(self) -> Self:
        """Serve from a background thread; returns once the port listens."""
        if self._server is not None:
            raise RuntimeError('the sandbox is already running')
        handler = MotoRequestHandler if self._log_requests else _QuietRequestHandler
        self._server = make_server(self.host, self.port, self.app, threaded=True, request_handler=handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name='aws-sandbox', daemon=True)
        self._thread.start()
        self.simulator.start()
        return self

    def stop(self) -> None:
        """Stop serving and the simulator's clock."""
        self.simulator.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def reset(self) -> None:
        """Forget every AWS resource (moto's ``/moto-api/reset``) and every simulated deployment."""
        request = urllib.request.Request(f'{self.url}/moto-api/reset', method='POST', data=b'')
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def refuse_unknown_keys(self, access_keys: Iterable[str] | None) -> None:
        """Refuse requests signed with an access key not in `access_keys`, as AWS does (None: accept any)."""
        self.app.known_access_keys = None if access_keys is None else frozenset(access_keys)

    def pending_hooks(self) -> list[HookExecution]:
        """Hook executions waiting for PutLifecycleEventHookExecutionStatus (AWS would pass the id to the Lambda)."""
        return self.simulator.pending_hooks()

    def environ(self) -> dict[str, str]:
        """Environment variables that point boto3 (and the operator) at the sandbox."""
        return {'AWS_ENDPOINT_URL': self.url, 'AWS_ACCESS_KEY_ID': 'sandbox', 'AWS_SECRET_ACCESS_KEY': 'sandbox'}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m controller.sandbox.aws``: serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog='python -m controller.sandbox.aws',
        description='Serve moto (every AWS service) with a CodeDeploy ECS blue/green deployment simulator.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0, help='0 picks a free port')
    parser.add_argument('--auto-hooks', action='store_true',
                        help='sandbox only: report Succeeded for every lifecycle hook after a short delay, '
                             'as if its Lambda function had run and passed')
    parser.add_argument('--step-seconds', type=float, default=Timings.step_seconds,
                        help='duration of each deployment step (default %(default)s)')
    parser.add_argument('--minute-seconds', type=float, default=Timings.minute_seconds,
                        help='length of a simulated minute for waitTimeInMinutes, terminationWaitTimeInMinutes '
                             'and canary/linear intervals (default %(default)s)')
    parser.add_argument('--log-requests', action='store_true', help='log every request, as moto_server does')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s')
    timings = Timings(step_seconds=args.step_seconds, minute_seconds=args.minute_seconds,
                      auto_hook_seconds=args.step_seconds)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with AwsSandbox(host=args.host, port=args.port, auto_hooks=args.auto_hooks, timings=timings,
                    log_requests=args.log_requests) as sandbox:
        print(f'listening on {sandbox.url}', flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
