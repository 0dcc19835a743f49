"""Stage 4, BlueGreen: start one CodeDeploy ECS deployment for the run and wait for green.

With an ECS strategy (spec.rollout BlueGreen, Canary, Linear) stage 3's
UpdateService already started ECS's own service deployment: this stage follows
its lifecycle stages until it waits at the operator's PAUSE hook
(POST_TEST_TRAFFIC_SHIFT: the test listener serves the new revision), and
ends the run with ECS's words if it ends first (a circuit breaker, another
deployment replacing it).

The deployment id is recorded the moment it exists; a resumed run polls the
recorded deployment (or finds the one started for this run) and never starts
a second. The stage ends when CodeDeploy reports the replacement task set
ready for traffic (deploymentReadyOption: wait), polled without a thread.
When the service already runs the run's task definition (it was just
created with it, or the image is unchanged) there is nothing to switch and
the stage is skipped.
"""
from __future__ import annotations

from controller.errors import Reason, StageFailed
from controller.models import StageName
from controller.pipeline.rollouts import earlier_deployments, ecs_state, outcome_failure, report_lifecycle, short
from controller.pipeline.stage import Done, StageContext, Wait

POLL_SECONDS = 5.0


class BlueGreen:
    name = StageName.blue_green
    poll_seconds = POLL_SECONDS

    def run(self, ctx: StageContext) -> Done | Wait:
        if ctx.spec.ecs_native:
            return self._ecs(ctx)
        deployment_id = ctx.status.code_deploy_deployment_id
        if not deployment_id:
            found = self._find_or_start(ctx)
            if isinstance(found, Done):
                return found
            deployment_id = found
            ctx.record(code_deploy_deployment_id=deployment_id)

        state = ctx.adapters.codedeploy.get_deployment(deployment_id)
        report_lifecycle(ctx, state)
        if state.failed:
            raise StageFailed(f'CodeDeploy deployment {deployment_id} {state.status}'
                              + (f': {state.error}' if state.error else ''), reason=Reason.BLUE_GREEN_FAILED)
        if state.replacement_ready:
            return Done(f'Green task set ready (CodeDeploy deployment {deployment_id})')
        return Wait(self.poll_seconds)

    def _ecs(self, ctx: StageContext) -> Done | Wait:
        """ECS's own deployment (started by stage 3): followed through its lifecycle stages until it waits at
        the operator's PAUSE hook, where the test listener serves the new revision."""
        arn = ctx.status.service_deployment_arn or self._find_ecs(ctx)
        if isinstance(arn, Done):
            return arn
        state = ecs_state(ctx, arn)
        if state.ended and not state.succeeded:
            raise outcome_failure(ctx, state)
        if state.paused_hook:
            return Done(f'New revision on the test listener; service deployment {short(arn)} waits at the '
                        f'PAUSE hook ({state.lifecycle_stage})')
        if state.ended or state.past_gate:
            return Done(f'Service deployment {short(arn)} already past the PAUSE hook ({state.status})')
        return Wait(self.poll_seconds)

    @staticmethod
    def _find_ecs(ctx: StageContext) -> str | Done:
        """The run's service deployment when stage 3's record of it was lost (found by the task definition), or
        Done(skipped) when stage 3 deployed nothing (the service already runs the task definition)."""
        arn = ctx.status.task_definition_arn
        assert arn, 'Service records the task definition before BlueGreen runs'
        found = ctx.adapters.ecs_deployments.find_deployment(spec=ctx.spec, task_definition_arn=arn,
                                                             since=ctx.status.started_at,
                                                             earlier=earlier_deployments(ctx.status))
        if found is None:
            return Done(f'ECS service {ctx.spec.ecs.service} already runs {arn.rsplit("/", 1)[-1]}; '
                        'no deployment needed', skipped=True)
        ctx.record(service_deployment_arn=found)
        return found

    @staticmethod
    def _find_or_start(ctx: StageContext) -> str | Done:
        """The run's deployment id (found, or started now), or Done(skipped) when there is nothing to switch."""
        spec, codedeploy = ctx.spec, ctx.adapters.codedeploy
        run_id = ctx.status.deployment_id or ''
        deployment_id = codedeploy.find_deployment(spec=spec, run_id=run_id)
        if deployment_id is not None:
            return deployment_id
        arn = ctx.status.task_definition_arn
        assert arn, 'Service records the task definition before BlueGreen runs'
        if ctx.adapters.ecs.running_task_definition(spec=spec) == arn:
            # A new service, or this image is already live: nothing to switch.
            return Done(f'ECS service {spec.ecs.service} already runs {arn.rsplit("/", 1)[-1]}; '
                        'no deployment needed', skipped=True)
        deployment_id = codedeploy.create_deployment(spec=spec, task_definition_arn=arn, run_id=run_id)
        ctx.progress(f'CodeDeploy deployment {deployment_id} created')
        return deployment_id
