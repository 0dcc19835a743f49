"""Resumes each deployment's process once what it waits for has happened.

A deployment keeps its own ``clock``: the simulated time its process has
reached. Resuming moves the clock to the moment the awaited thing happened
(a sleep's end, a hook's report, a ContinueDeployment, a callback's return),
not to the time of the tick, so that a slow tick does not stretch a deployment.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from controller.sandbox.aws.effects import AwaitContinue, AwaitHook, Call, Effect, Sleep
from controller.sandbox.aws.lifecycle import DeploymentLifecycle
from controller.sandbox.aws.models import Deployment, SimulatorState
from controller.sandbox.aws.timings import Timings

log = logging.getLogger(__name__)

#: What an effect resolves to: (when it happened, the value sent into the process), or None while it has not.
Outcome = tuple[float, Any] | None


@dataclasses.dataclass(kw_only=True)
class Driver:
    """Moves deployments' processes on; ``auto_hooks`` reports every hook Succeeded after a short delay."""

    timings: Timings
    auto_hooks: bool
    state: SimulatorState
    lifecycle: DeploymentLifecycle

    def advance(self, d: Deployment, *, now: float) -> None:
        """Resume the deployment's process as long as what it waits for has happened by ``now``."""
        while d.process is not None and d.effect is not None:
            outcome = self._outcome(d, d.effect, now=now)
            if outcome is None:
                return
            when, value = outcome
            d.clock = max(d.clock, when)
            self._resume(d, value)

    def _outcome(self, d: Deployment, effect: Effect, *, now: float) -> Outcome:
        if isinstance(effect, Sleep):
            return (effect.until, None) if now >= effect.until else None
        if isinstance(effect, AwaitHook):
            return self._hook_outcome(d, effect, now=now)
        if isinstance(effect, AwaitContinue):
            return self._continue_outcome(d, effect, now=now)
        return self._call_outcome(effect)

    def _hook_outcome(self, d: Deployment, effect: AwaitHook, *, now: float) -> Outcome:
        execution = effect.execution
        auto_at = execution.started + self.timings.auto_hook_seconds
        if self.auto_hooks and execution.status == 'InProgress' and now >= auto_at:
            execution.status, execution.completed = 'Succeeded', auto_at
        if execution.status in ('Succeeded', 'Failed'):
            return execution.completed or d.clock, execution.status
        if now >= effect.deadline:
            return effect.deadline, 'Timeout'
        return None

    @staticmethod
    def _continue_outcome(d: Deployment, effect: AwaitContinue, *, now: float) -> Outcome:
        if (when := d.continued.get(effect.wait_type)) is not None:
            return when, 'continued'
        if effect.deadline is not None and now >= effect.deadline:
            return effect.deadline, 'timeout'
        return None

    def _call_outcome(self, effect: Call) -> Outcome:
        """A callback's error (or None) once the background thread has run it; queued for it the first time."""
        return (effect.finished, effect.error) if self.state.outbox.ready(effect) else None

    def _resume(self, d: Deployment, value: Any) -> None:
        assert d.process is not None
        try:
            d.effect = d.process.send(value)
        except StopIteration:
            d.process = d.effect = None
        except Exception as exc:  # noqa: BLE001 -- a simulator bug fails the deployment, not the server
            log.exception('deployment %s: simulator error', d.deployment_id)
            d.process = d.effect = None
            self.lifecycle.finish(d, status='Failed', code='INTERNAL_ERROR', message=f'Simulator error: {exc!r}')
