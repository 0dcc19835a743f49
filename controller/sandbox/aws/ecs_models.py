"""The state of ECS service deployments: service revisions, hook runs, the deployments, what the simulator keeps.

The names and values are botocore's ECS model (``ServiceDeployment``,
``ServiceRevision``, ``DeploymentLifecycleHookDetail``, the
``ServiceDeploymentStatus``, ``ServiceDeploymentLifecycleStage``,
``DeploymentLifecycleHookStage`` and ``DeploymentLifecycleHookStatus`` enums).
"""
from __future__ import annotations

import dataclasses
import random
import string
from collections.abc import Generator
from typing import Any

from controller.sandbox.aws.ecs_config import Route, Strategy
from controller.sandbox.aws.effects import Call, EcsEffect, Outbox

#: ServiceDeploymentStatus: started and not yet ended (a stop or rollback may still be under way).
ACTIVE_STATUSES = frozenset({'PENDING', 'IN_PROGRESS', 'STOP_REQUESTED', 'ROLLBACK_REQUESTED', 'ROLLBACK_IN_PROGRESS'})
#: ServiceDeploymentStatus: ended.
DONE_STATUSES = frozenset({'SUCCESSFUL', 'STOPPED', 'ROLLBACK_SUCCESSFUL', 'ROLLBACK_FAILED'})
SERVICE_DEPLOYMENT_STATUSES = ACTIVE_STATUSES | DONE_STATUSES
_ID_CHARS = string.ascii_letters + string.digits + '_-'


@dataclasses.dataclass(kw_only=True)
class ServiceRevision:
    """A service revision: the task definition and load balancer wiring one deployment runs, and its tasks."""

    arn: str
    service_arn: str
    cluster_arn: str
    task_definition: str
    created_at: float
    launch_type: str | None
    platform_version: str | None
    load_balancers: list[dict[str, Any]]
    network_configuration: dict[str, Any]
    container_name: str
    image: str
    container_port: int
    #: production listener rule -> the target group this revision's tasks are registered with
    target_groups: dict[str, str] = dataclasses.field(default_factory=dict)
    requested: int = 0
    running: int = 0
    production_weight: float = 0.0
    test_weight: float = 0.0

    def scale(self, count: int) -> None:
        """Its tasks: ``count`` requested and running (moto runs none; the callbacks may)."""
        self.requested = self.running = count


@dataclasses.dataclass(kw_only=True)
class HookRun:
    """One run of a lifecycle hook at one lifecycle stage (a canary's every step runs its hooks again)."""

    hook_id: str
    target_type: str  # AWS_LAMBDA | PAUSE
    target_arn: str | None
    stage: str  # DeploymentLifecycleHookStage
    expires_at: float
    timeout_action: str  # CONTINUE | ROLLBACK
    status: str = 'IN_PROGRESS'  # AWAITING_ACTION | IN_PROGRESS | SUCCEEDED | FAILED | TIMED_OUT
    completed_at: float | None = None

    @property
    def awaiting(self) -> bool:
        """A PAUSE hook waiting for ContinueServiceDeployment."""
        return self.status == 'AWAITING_ACTION'


@dataclasses.dataclass(kw_only=True)
class ServiceDeployment:
    """A service deployment of a service with a ``BLUE_GREEN``, ``CANARY`` or ``LINEAR`` strategy."""

    arn: str
    account: str
    region: str
    cluster: str
    service: str
    cluster_arn: str
    service_arn: str
    config: dict[str, Any]  # the service's deploymentConfiguration, as it was when the deployment started
    strategy: Strategy
    routes: list[Route]
    sources: list[ServiceRevision]
    target: ServiceRevision
    desired_count: int
    created_at: float
    reconcile: bool = False  # more than one revision was ACTIVE: RECONCILE_SERVICE comes first
    status: str = 'PENDING'
    status_reason: str | None = None
    lifecycle_stage: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    stopped_at: float | None = None
    updated_at: float = 0.0
    hooks: list[HookRun] = dataclasses.field(default_factory=list)  # the current stage's hooks
    rollback: dict[str, Any] | None = None
    failure_count: int = 0
    scale_up: Call | None = None  # the green revision's start (on_green_task_set), while it runs
    clock: float = 0.0
    process: Generator[EcsEffect, Any, None] | None = None
    effect: EcsEffect | None = None

    @property
    def key(self) -> str:
        """``cluster:service``, as moto keys its services."""
        return f'{self.cluster}:{self.service}'

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    def touch(self, *, status: str | None = None, stage: str | None = None, reason: str | None = None) -> None:
        """Change the status, lifecycle stage or reason, and ``updatedAt``."""
        if status is not None:
            self.status = status
        if stage is not None:
            self.lifecycle_stage = stage
        if reason is not None:
            self.status_reason = reason
        self.updated_at = self.clock

    def hook(self, hook_id: str) -> HookRun | None:
        return next((run for run in self.hooks if run.hook_id == hook_id), None)


@dataclasses.dataclass(kw_only=True)
class EcsState:
    """Every service deployment and service revision the simulator knows, and the callbacks due to run."""

    deployments: dict[str, ServiceDeployment] = dataclasses.field(default_factory=dict)
    revisions: dict[str, ServiceRevision] = dataclasses.field(default_factory=dict)
    #: cluster:service (per account and region) -> the revisions that have tasks, production's first
    running: dict[tuple[str, str, str], list[ServiceRevision]] = dataclasses.field(default_factory=dict)
    outbox: Outbox = dataclasses.field(default_factory=Outbox)

    @staticmethod
    def new_id(k: int = 22) -> str:
        return ''.join(random.choices(_ID_CHARS, k=k))

    @staticmethod
    def new_revision_id() -> str:
        return str(random.randrange(10**17, 10**18))

    def of_service(self, *, account: str, region: str, key: str) -> list[ServiceDeployment]:
        """The service's deployments, oldest first."""
        found = [d for d in self.deployments.values() if (d.account, d.region, d.key) == (account, region, key)]
        return sorted(found, key=lambda d: d.created_at)

    def forget_service(self, *, account: str, region: str, key: str) -> None:
        """A deleted service's deployments and revisions go with it."""
        for d in self.of_service(account=account, region=region, key=key):
            if d.process is not None:
                d.process.close()
            del self.deployments[d.arn]
            for revision in (*d.sources, d.target):
                self.revisions.pop(revision.arn, None)
        self.running.pop((account, region, key), None)

    def clear(self) -> None:
        for d in self.deployments.values():
            if d.process is not None:
                d.process.close()
        self.deployments.clear()
        self.revisions.clear()
        self.running.clear()
        self.outbox.clear()
