"""Stage 6, Complete: read which colour serves production and record the result.

With an ECS strategy the outcome is ECS's: the run's service deployment must
have ended SUCCESSFUL (Verify waited for it; looked at once more here, so a
rollback after Verify cannot be reported as a success), and the message says
the strategy and the bake time it went through.
"""
from __future__ import annotations

from controller.models import StageName
from controller.pipeline.rollouts import ecs_state, outcome_failure, short
from controller.pipeline.stage import Done, StageContext


class Complete:
    name = StageName.complete

    def run(self, ctx: StageContext) -> Done:
        traffic = ctx.adapters.loadbalancer.traffic(spec=ctx.spec)
        message = f'{traffic.active_color} is active'
        arn = ctx.status.service_deployment_arn
        if ctx.spec.ecs_native and arn:
            state = ecs_state(ctx, arn)
            if not state.succeeded:
                raise outcome_failure(ctx, state)
            rollout = ctx.spec.rollout
            bake = rollout.bake_time_minutes if rollout is not None else 0
            message += (f'; {ctx.spec.strategy.value} service deployment {short(arn)} SUCCESSFUL '
                        f'after a {bake} minute bake')
        return Done(message, record={
            'active_color': traffic.active_color, 'blue_url': traffic.blue_url, 'green_url': traffic.green_url})
