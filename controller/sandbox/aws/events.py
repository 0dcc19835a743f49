"""The lifecycle events of an ECS deployment, and the runs of the hook functions attached to them."""
from __future__ import annotations

import dataclasses
from typing import Any

#: The ECS deployment's lifecycle events, in the documented order.
LIFECYCLE_EVENTS = (
    'BeforeInstall', 'Install', 'AfterInstall', 'AllowTestTraffic', 'AfterAllowTestTraffic',
    'BeforeAllowTraffic', 'AllowTraffic', 'AfterAllowTraffic',
)
#: The events an ECS AppSpec may attach a Lambda hook to (the others are CodeDeploy's own).
HOOK_EVENTS = frozenset({'BeforeInstall', 'AfterInstall', 'AfterAllowTestTraffic', 'BeforeAllowTraffic',
                         'AfterAllowTraffic'})


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
