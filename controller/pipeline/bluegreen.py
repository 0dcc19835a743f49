"""Stage 4, BlueGreen: start one CodeDeploy ECS deployment for the run and wait for green.

The deployment id is recorded the moment it exists; a resumed run polls the
recorded deployment (or finds the one started for this run) and never starts
a second. The stage ends when CodeDeploy reports the replacement task set
ready for traffic (deploymentReadyOption: wait), polled without a thread.
When the service already runs the run's task definition (it was just
created with it, or the image is unchanged) there is nothing to switch and
the stage is skipped.
"""
from __future__ import annotations

import dataclasses

from controller.adapters import DeploymentState
from controller.errors import Reason, StageFailed
from controller.models import StageName
from controller.pipeline.stage import Done, StageContext, Wait

POLL_SECONDS = 5.0


@dataclasses.dataclass
class ReportedLifecycle:
    """The lifecycle events (name, status) already published for the run; shared by stages 4 and 5."""
    seen: set[tuple[str, str]] = dataclasses.field(default_factory=set)


_REPORTED = 'lifecycle'  # the key of ReportedLifecycle in the run's scratch


def report_lifecycle(ctx: StageContext, state: DeploymentState) -> None:
    """Publish each lifecycle event of the deployment target once, as it happens (stages 4 and 5)."""
    reported = ctx.run.scratch.setdefault(_REPORTED, ReportedLifecycle())
    assert isinstance(reported, ReportedLifecycle)
    for event in state.events:
        if (event.name, event.status) not in reported.seen and event.started:
            reported.seen.add((event.name, event.status))
            ctx.progress(f'Lifecycle {event.name}: {event.status}')


class BlueGreen:
    name = StageName.blue_green
    poll_seconds = POLL_SECONDS

    def run(self, ctx: StageContext) -> Done | Wait:
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
