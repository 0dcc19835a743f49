"""A run that ends in stage 1 on CodeBuild (failed, timed out, superseded, deleted) stops its build.

Best effort and bounded in time (CodeBuild's own timeoutInMinutes still ends
a build): a StartBuild in flight is given `CALL_WAIT_SECONDS` to answer, then
the build is the one in status, or, when its id never reached status (the
stage was abandoned between StartBuild and the write), the one `find`
recognises by the run's source key. Its source object is removed with it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from controller.adapters import Adapters, ImageBuild
from controller.errors import PandaDeployError
from controller.pipeline.build import image_tag
from controller.pipeline.run import Run

CALL_WAIT_SECONDS = 30.0
STOP_SECONDS = 60.0


def stop_build(run: Run, adapters: Adapters) -> str | None:
    """Stop the run's build when it is still running; its id, or None. Blocking (in the worker pool)."""
    builds, status = adapters.builds, run.status
    if builds is None:
        return None
    build_id = status.code_build_id
    if not build_id and status.revision and status.deployment_id:
        build_id = builds.find(build=ImageBuild(run_id=status.deployment_id, repository=run.spec.repository_name,
                                                tag=image_tag(run.spec, status.revision), target=''))
    if not build_id or builds.get(build_id).ended:
        return None
    builds.stop(build_id)
    try:
        builds.remove_source(build_id)
    except PandaDeployError:
        pass  # the bucket's expiry rule removes it
    return build_id


async def close_build(run: Run, adapters: Adapters | None, pool: concurrent.futures.Executor,
                      in_flight: concurrent.futures.Future[Any] | None) -> None:
    """Stop the run's build, if it builds on CodeBuild (`adapters`: the run's, None when none were made);
    a failure to do so is logged."""
    if adapters is None or adapters.builds is None:
        return
    if in_flight is not None and not in_flight.done():  # e.g. StartBuild: let it answer
        await asyncio.wait({asyncio.wrap_future(in_flight)}, timeout=CALL_WAIT_SECONDS)
    loop = asyncio.get_running_loop()
    try:
        stopped = await asyncio.shield(asyncio.wait_for(
            loop.run_in_executor(pool, stop_build, run, adapters), timeout=STOP_SECONDS))
    except Exception as exc:
        run.logger.warning('Could not stop the CodeBuild build of run %s: %s', run.status.deployment_id,
                           run.redact(f'{type(exc).__name__}: {exc}'))
        return
    if stopped:
        run.recorder.progress(f'[Stage 1] CodeBuild build {stopped} stopped')
