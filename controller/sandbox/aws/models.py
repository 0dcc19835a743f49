"""The simulator's state: deployments, the task sets they move traffic between, and what the simulator keeps."""
from __future__ import annotations

import dataclasses
import random
import string
from collections.abc import Generator
from typing import Any

from controller.sandbox.aws.appspec import AppSpec
from controller.sandbox.aws.deployment_configs import TrafficRouting
from controller.sandbox.aws.effects import AwaitContinue, Effect, Outbox
from controller.sandbox.aws.events import LIFECYCLE_EVENTS, HookExecution, LifecycleEvent

ACTIVE_STATUSES = frozenset({'Created', 'Queued', 'InProgress', 'Baking', 'Ready'})
DONE_STATUSES = frozenset({'Succeeded', 'Failed', 'Stopped'})
DEPLOYMENT_STATUSES = ACTIVE_STATUSES | DONE_STATUSES
TARGET_STATUSES = ('Pending', 'InProgress', 'Succeeded', 'Failed', 'Skipped', 'Ready')
_ID_CHARS = string.ascii_uppercase + string.digits


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
    process: Generator[Effect, Any, None] | None = None
    effect: Effect | None = None

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
        return self.effect.wait_type if isinstance(self.effect, AwaitContinue) else None

    def target_group_pair(self) -> dict[str, Any]:
        """The group's ``targetGroupPairInfoList[0]`` (an empty mapping without one)."""
        pair: dict[str, Any] = (self.load_balancer_info.get('targetGroupPairInfoList') or [{}])[0]
        return pair

    def listener_arns(self, route: str) -> list[str]:
        """The listeners of the pair's ``prodTrafficRoute`` or ``testTrafficRoute``."""
        arns: list[str] = (self.target_group_pair().get(route) or {}).get('listenerArns') or []
        return arns

    def rollback(self, *, deployment_id: str) -> Deployment:
        """The ``codeDeployRollback`` deployment that records this one's rollback: done as soon as it exists."""
        assert self.blue is not None
        record = Deployment(
            deployment_id=deployment_id, account=self.account, region=self.region,
            application_name=self.application_name, group_name=self.group_name, config_name=self.config_name,
            routing=self.routing, revision=self.previous_revision or {}, appspec=None,
            description=f'Rollback of {self.deployment_id}', creator='codeDeployRollback', auto_rollback={},
            deployment_style=self.deployment_style, blue_green=self.blue_green,
            load_balancer_info=self.load_balancer_info, cluster=self.cluster, service=self.service,
            create_time=self.clock, start_time=self.clock, complete_time=self.clock, status='Succeeded',
            target_status='Succeeded', target_updated=self.clock, service_arn=self.service_arn,
            blue=dataclasses.replace(self.blue), clock=self.clock,
            rollback_info={'rollbackTriggeringDeploymentId': self.deployment_id,
                           'rollbackMessage': f'Rollback of deployment {self.deployment_id}'})
        for event in record.events:
            done = event.name == 'AllowTraffic'  # the only thing a rollback does: reroute to the original
            event.status = 'Succeeded' if done else 'Skipped'
            event.start_time = event.end_time = self.clock
        return record


@dataclasses.dataclass(kw_only=True)
class SimulatorState:
    """Every deployment and hook execution the simulator knows, and the callbacks due to run."""

    deployments: dict[str, Deployment] = dataclasses.field(default_factory=dict)
    executions: dict[str, HookExecution] = dataclasses.field(default_factory=dict)
    outbox: Outbox = dataclasses.field(default_factory=Outbox)

    def new_deployment_id(self) -> str:
        """``d-`` and nine characters, unused so far."""
        while True:
            candidate = 'd-' + ''.join(random.choices(_ID_CHARS, k=9))
            if candidate not in self.deployments:
                return candidate

    def clear(self) -> None:
        """Forget everything (the dictionaries stay the same objects)."""
        for d in self.deployments.values():
            if d.process is not None:
                d.process.close()
        self.deployments.clear()
        self.executions.clear()
        self.outbox.clear()
