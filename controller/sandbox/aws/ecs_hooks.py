"""The lifecycle hooks of a service deployment's stage: Lambda hooks invoked, PAUSE hooks waited for.

As AWS documents them ("Lifecycle hooks for Amazon ECS service deployments",
"Lambda hooks ...", "Pause hooks ..."): every hook configured for a stage runs
when the deployment reaches it, and all must succeed before it goes on.

- ``AWS_LAMBDA``: moto runs no functions, so the sandbox calls ``on_lambda_hook``
  with a :class:`LambdaInvocation` and reads its answer as ECS reads the
  function's: ``hookStatus`` ``SUCCEEDED`` (go on), ``FAILED`` (roll back) or
  ``IN_PROGRESS`` (call again after ``callBackDelay`` seconds, 30 by default,
  with the ``hookDetails`` it returned); anything else, or an exception, rolls
  back. Without ``on_lambda_hook`` every function succeeds.
- ``PAUSE``: status ``AWAITING_ACTION`` with a ``hookId`` until
  ContinueServiceDeployment (``CONTINUE`` or ``ROLLBACK``), or until
  ``timeoutConfiguration.timeoutInMinutes`` (1440 by default) passes and its
  ``action`` (``ROLLBACK`` by default) is taken: status ``TIMED_OUT``.

A hook that times out takes its timeout action. The hooks of the stage under
way are the deployment's ``lifecycleHookDetails``.
"""
from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Callable, Generator, Mapping
from typing import Any

from controller.sandbox.aws.ecs_config import HookSpec
from controller.sandbox.aws.ecs_models import HookRun, ServiceDeployment
from controller.sandbox.aws.effects import AwaitAction, Call, EcsEffect, Sleep
from controller.sandbox.aws.exceptions import DeploymentFailed
from controller.sandbox.aws.timings import Timings

Process = Generator[EcsEffect, Any, None]
DEFAULT_CALLBACK_DELAY_SECONDS = 30


@dataclasses.dataclass(frozen=True, kw_only=True)
class LambdaInvocation:
    """What ECS would invoke a hook's Lambda function with (the payload as AWS documents it)."""

    function_arn: str
    hook_id: str
    lifecycle_stage: str  # DeploymentLifecycleHookStage
    service_deployment_arn: str
    payload: Mapping[str, Any]


LambdaHook = Callable[[LambdaInvocation], Mapping[str, Any] | None]


def new_hook_id(target_type: str) -> str:
    """``ecs-pause-`` and 43 URL-safe characters, as AWS's example shows (``ecs-lambda-`` for Lambda hooks)."""
    prefix = 'ecs-pause-' if target_type == 'PAUSE' else 'ecs-lambda-'
    return prefix + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('=')


class HookRunner:
    """Runs the hooks configured for one stage of a deployment."""

    def __init__(self, *, timings: Timings, on_lambda_hook: LambdaHook | None) -> None:
        self.timings = timings
        self.on_lambda_hook = on_lambda_hook

    def run(self, d: ServiceDeployment, stage: str) -> Process:
        """Start every hook of ``stage``, then wait until all succeeded; raises DeploymentFailed to roll back."""
        specs = d.strategy.hooks_at(stage)
        d.hooks = [HookRun(hook_id=new_hook_id(spec.target_type), target_type=spec.target_type,
                           target_arn=spec.target_arn, stage=stage, timeout_action=spec.timeout_action,
                           expires_at=d.clock + spec.timeout_minutes * self.timings.minute_seconds,
                           status='AWAITING_ACTION' if spec.target_type == 'PAUSE' else 'IN_PROGRESS')
                   for spec in specs]
        for spec, run in zip(specs, list(d.hooks), strict=True):
            if spec.target_type == 'AWS_LAMBDA':
                yield from self._lambda(d, run, spec)
        for run in list(d.hooks):
            if run.awaiting:
                yield AwaitAction(run=run)
            if run.status == 'TIMED_OUT' and run.timeout_action == 'ROLLBACK':
                raise DeploymentFailed('HOOK_TIMED_OUT', timed_out(run))

    def _lambda(self, d: ServiceDeployment, run: HookRun, spec: HookSpec) -> Process:
        """Invoke the function until it answers SUCCEEDED or FAILED, or the hook times out."""
        details = spec.hook_details
        while True:
            answer = yield from self._invoke(d, run, details)
            status = answer.get('hookStatus')
            if status == 'SUCCEEDED':
                run.status, run.completed_at = 'SUCCEEDED', d.clock
                return
            if status != 'IN_PROGRESS':
                run.status, run.completed_at = 'FAILED', d.clock
                raise DeploymentFailed('HOOK_FAILED', f'The lifecycle hook {run.hook_id} ({run.target_arn}) at '
                                                      f'{run.stage} answered {answer.get("hookStatus", answer)!r}.')
            delay = float(answer.get('callBackDelay') or DEFAULT_CALLBACK_DELAY_SECONDS)
            again = d.clock + delay * self.timings.minute_seconds / 60
            if again >= run.expires_at:
                yield Sleep(until=run.expires_at)
                run.status, run.completed_at = 'TIMED_OUT', run.expires_at
                if run.timeout_action == 'ROLLBACK':
                    raise DeploymentFailed('HOOK_TIMED_OUT', timed_out(run))
                return
            yield Sleep(until=again)
            details = answer.get('hookDetails', details)

    def _invoke(self, d: ServiceDeployment, run: HookRun, details: Any) -> Generator[EcsEffect, Any, Mapping[str, Any]]:
        """One invocation's answer (``{}`` when the function raised or answered no object)."""
        if self.on_lambda_hook is None:
            yield Sleep(until=d.clock + self.timings.auto_hook_seconds)
            return {'hookStatus': 'SUCCEEDED'}
        call = Call(fn=self.on_lambda_hook, args=(LambdaInvocation(
            function_arn=run.target_arn or '', hook_id=run.hook_id, lifecycle_stage=run.stage,
            service_deployment_arn=d.arn, payload=payload(d, details)),))
        yield call
        answer = call.result if call.error is None else None
        return answer if isinstance(answer, Mapping) else {}


def payload(d: ServiceDeployment, details: Any) -> dict[str, Any]:
    """The event a hook's Lambda function receives: the service, the target revision, both traffic splits."""
    revisions = [*d.sources, d.target]
    event: dict[str, Any] = {
        'serviceArn': d.service_arn, 'targetServiceRevisionArn': d.target.arn,
        'testTrafficWeights': {r.arn: r.test_weight for r in revisions},
        'productionTrafficWeights': {r.arn: r.production_weight for r in revisions},
    }
    if details is not None:
        event['hookDetails'] = details
    return event


def timed_out(run: HookRun) -> str:
    return f'The lifecycle hook {run.hook_id} at {run.stage} timed out; its timeout action is {run.timeout_action}.'
