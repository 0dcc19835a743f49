"""`ctx.record` from a stage's thread, when the run is cancelled while the write waits for the event loop.

The write is handed to the loop; a loop that is busy stopping the run (a shutdown that waits for the pool, a
supersede) may never get to it. The stage must then give up at once, as abandoned, rather than hold its thread
until the write's limit (seen in CI: a test's pool shutdown and a stage's record waited on each other for 120 s).
"""
from __future__ import annotations

import asyncio
import threading
import time

from controller.models import StageName
from controller.pipeline.stage import StageAbandoned, StageContext
from tests.unit.test_pipeline import make_run, new


async def test_a_stage_cancelled_while_its_write_waits_for_the_loop_is_abandoned_at_once():
    run, sink = make_run()
    new(run)
    ctx = StageContext(run=run, name=StageName.blue_green, loop=asyncio.get_running_loop(), adapters=lambda: None)
    calling, outcome = threading.Event(), {}

    def stage() -> None:
        calling.set()
        try:
            ctx.record(service_deployment_arn='arn:aws:ecs:eu-west-1:123456789012:service-deployment/c/s/x')
            outcome['saved'] = True
        except StageAbandoned as exc:
            outcome['abandoned'] = str(exc)

    worker = threading.Thread(target=stage)
    worker.start()
    assert calling.wait(5)
    time.sleep(0.3)  # the loop is blocked (as by a pool shutdown that waits): the write cannot run
    ctx.cancel.set()
    started = time.monotonic()
    worker.join(timeout=5)  # still the loop's thread: the write has had no chance to run
    waited = time.monotonic() - started

    assert not worker.is_alive(), 'the stage still waits for a write the loop cannot run'
    assert waited < 5
    assert outcome == {'abandoned': 'stage BlueGreen was abandoned while saving; its result is discarded'}
    await asyncio.sleep(0.05)  # the loop runs the handed-over write now: it sees the stage abandoned
    assert run.status.service_deployment_arn is None
    saves = len(sink.saves)
    assert saves == 0 or sink.saves[-1].get('serviceDeploymentArn') is None


async def test_a_write_the_loop_runs_is_saved_before_the_stage_goes_on():
    run, sink = make_run()
    new(run)
    ctx = StageContext(run=run, name=StageName.blue_green, loop=asyncio.get_running_loop(), adapters=lambda: None)
    arn = 'arn:aws:ecs:eu-west-1:123456789012:service-deployment/c/s/y'
    await asyncio.to_thread(ctx.record, service_deployment_arn=arn)
    assert run.status.service_deployment_arn == arn
    assert sink.saves[-1]['serviceDeploymentArn'] == arn
