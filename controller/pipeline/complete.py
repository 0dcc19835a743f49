"""Stage 6, Complete: read which colour serves production and record the result."""
from __future__ import annotations

from controller.models import StageName
from controller.pipeline.stage import Done, StageContext


class Complete:
    name = StageName.complete

    def run(self, ctx: StageContext) -> Done:
        traffic = ctx.adapters.loadbalancer.traffic(spec=ctx.spec)
        return Done(f'{traffic.active_color} is active', record={
            'active_color': traffic.active_color, 'blue_url': traffic.blue_url, 'green_url': traffic.green_url})
