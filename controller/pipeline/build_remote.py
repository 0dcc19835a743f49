"""Stage 1 on CodeBuild, after StartBuild: follow the build's phases, then take its image or its failure.

The build runs on AWS's machines, so the stage holds no worker while it
waits: each call polls BatchGetBuilds once and returns `Wait`. A new phase is
reported once (kept in the stage's scratch). When the build ends its source
object is deleted; a build that did not succeed fails the run with the phase
that failed, CodeBuild's words on it and the last lines of its CloudWatch log
(the message is capped, and the run's secrets are redacted by the recorder);
one that succeeded has pushed the image, whose digest is read from the
registry, so stage 2 finds the image there and skips. Stopping a build when a
run ends early (timeout, supersede, delete) is build_stop.py's, called by the
engine.
"""
from __future__ import annotations

from controller.adapters import RemoteBuilds
from controller.errors import PandaDeployError, Reason, StageFailed
from controller.models import ImageStatus
from controller.pipeline.stage import Done, StageContext, Wait

POLL_SECONDS = 5.0
LOG_TAIL_IN_MESSAGE = 10  # lines of the build's log in a failure message (the message is capped at 1 KiB)


def follow_build(ctx: StageContext, builds: RemoteBuilds, build_id: str, *, repository: str, tag: str,
                 poll_seconds: float) -> Done | Wait:
    """One poll of the run's build: Wait while it runs, Done with the pushed image, StageFailed otherwise."""
    state = builds.get(build_id)
    if state.phase and ctx.scratch.get('phase') != state.phase:
        ctx.scratch['phase'] = state.phase
        ctx.progress(f'CodeBuild build {build_id}: {state.phase}')
    if not state.ended:
        return Wait(poll_seconds)
    _remove_source(ctx, builds, build_id)
    if not state.succeeded:
        where = f' in phase {state.failed_phase}' if state.failed_phase else ''
        said = f': {state.failure}' if state.failure else ''
        tail = builds.log_tail(build_id)[-LOG_TAIL_IN_MESSAGE:]
        log = ('; log: ' + ' | '.join(line.strip() for line in tail if line.strip())) if tail else ''
        raise StageFailed(f'CodeBuild build {build_id} {state.status}{where}{said}{log}', reason=Reason.BUILD_FAILED)
    registry = ctx.adapters.registry
    digest = registry.find_image(repository=repository, tag=tag)
    if digest is None:
        raise StageFailed(f'CodeBuild build {build_id} SUCCEEDED but {repository}:{tag} is not in the registry; '
                          'does the buildspec of the project push it?', reason=Reason.BUILD_FAILED)
    uri = f'{registry.ensure_repository(repository)}:{tag}'
    ctx.progress(f'Image built and pushed by CodeBuild: {uri}')
    dockerfile = ctx.scratch.get('dockerfile')
    return Done(f'Built and pushed {uri}@{digest} on CodeBuild (build {build_id})',
                record={'image': ImageStatus(uri=uri, digest=digest, dockerfile=dockerfile)})


def _remove_source(ctx: StageContext, builds: RemoteBuilds, build_id: str) -> None:
    """Delete the build's source now it ended; a failure is logged (the bucket's expiry rule removes it)."""
    try:
        builds.remove_source(build_id)
    except PandaDeployError as exc:
        ctx.logger.warning('Source of CodeBuild build %s not deleted: %s', build_id, exc.message)
