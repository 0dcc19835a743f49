"""Progress inside a stage, shown in status while it happens, within a write budget.

kubectl users see a run in `status` (and `kubectl pd watch`), not in the
operator's log, so the health-check count ("HealthCheck in progress - Check
3/5") and, for Canary and Linear, the traffic step ("Canary step 1/2: 10% of
production on the new revision") go to `status.message`, the stage's
condition and the `Reconciling` condition's message.

Each such write is a Kubernetes API write, and a run's writes are the
operator's own cost: a successful rollout writes 17 times without this (8
status patches, 7 Events, 2 of Kopf's). A run spends at most
`PROGRESS_WRITES` status patches on progress alone, so a successful rollout
stays within 17 + 6 = 23 writes (the stated budget is 25) whatever the number
of checks or steps. The points a run will show are known from the spec
(`expected_points`: its checks plus its traffic steps), so the budget is
spread over them evenly: every `stride`-th point gets a write of its own;
the others are still set in status and travel with the next write the run
makes anyway (a wait's, a record's).
"""
from __future__ import annotations

import dataclasses
import math

from controller.models import PandaDeploySpec, Strategy

PROGRESS_WRITES = 6


def traffic_steps(spec: PandaDeploySpec) -> int:
    """How many production shares a rollout moves through: Canary 2 (the canary, then all), Linear one per step,
    ECS blue/green 1; CodeDeploy's switch is the stage's own end."""
    rollout = spec.rollout
    if not spec.ecs_native or rollout is None:
        return 0
    if rollout.strategy == Strategy.canary:
        return 2
    if rollout.strategy == Strategy.linear:
        step = rollout.linear.step_percent if rollout.linear is not None else 20.0
        return math.ceil(100.0 / step)
    return 1


def expected_points(spec: PandaDeploySpec) -> int:
    return spec.health_check.checks + traffic_steps(spec)


def traffic_step(spec: PandaDeploySpec, percent: float) -> str:
    """'Canary step 1/2: 10% of production on the new revision' (the step from the share ECS reports)."""
    share = f'{percent:g}% of production on the new revision'
    steps = traffic_steps(spec)
    if steps <= 1 or spec.rollout is None:
        return f'{spec.strategy.value}: {share}'
    if spec.rollout.strategy == Strategy.canary:
        step = 2 if percent >= 100 else 1
    else:
        step_percent = spec.rollout.linear.step_percent if spec.rollout.linear is not None else 20.0
        step = min(steps, max(1, math.ceil(percent / step_percent - 1e-9)))
    return f'{spec.strategy.value} step {step}/{steps}: {share}'


@dataclasses.dataclass
class ProgressBudget:
    """Which progress points of a run get a status write of their own."""
    expected: int
    writes: int = PROGRESS_WRITES
    seen: int = 0
    spent: int = 0

    @property
    def stride(self) -> int:
        return max(1, math.ceil(self.expected / self.writes))

    def take(self) -> bool:
        """Count a point; whether it may be written now."""
        self.seen += 1
        if self.spent < self.writes and self.seen % self.stride == 0:
            self.spent += 1
            return True
        return False
