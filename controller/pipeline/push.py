"""Stage 2, Push: account from STS, ECR repository created if missing, push with the ECR token.

The tag is Build's (`image_tag`: the commit and the spec's build inputs). ECR
repositories have immutable tags, so when another run with the same build
inputs pushed that tag first, the push is refused and its image is the one
recorded: it was built from the same commit, Dockerfile, context and
arguments.
"""
from __future__ import annotations

from controller.errors import Reason, StageFailed
from controller.models import ImageStatus, StageName
from controller.pipeline.build import image_tag, local_tag
from controller.pipeline.stage import Done, StageContext


class Push:
    name = StageName.push

    def run(self, ctx: StageContext) -> Done:
        image = ctx.status.image
        if image is not None and image.digest:
            return Done(f'Image already in the registry: {image.uri}@{image.digest}', skipped=True)
        spec, registry, revision = ctx.spec, ctx.adapters.registry, ctx.status.revision
        assert revision, 'Build records the revision before Push runs'
        account = registry.account_id()
        ctx.progress(f'AWS account {account}')
        repository_uri = registry.ensure_repository(spec.repository_name)
        ctx.progress(f'ECR repository ready: {repository_uri}')
        tag = image_tag(spec, revision)
        uri = f'{repository_uri}:{tag}'

        digest = registry.find_image(repository=spec.repository_name, tag=tag)
        if digest is None:  # not pushed before a restart
            local = local_tag(spec, revision)
            if not ctx.adapters.docker.has_image(local):
                raise StageFailed(f'Local image {local} is gone from the Docker engine; '
                                  'was the engine reset between Build and Push?', reason=Reason.PUSH_FAILED)
            target = registry.push_target(repository_uri=repository_uri, tag=tag)
            try:
                digest = ctx.adapters.docker.push(tag=local, target=target, auth=registry.authorization(),
                                                  log=ctx.logger.info)
            except StageFailed:
                digest = registry.find_image(repository=spec.repository_name, tag=tag)
                if digest is None:
                    raise
                ctx.progress(f'{uri} was pushed meanwhile by a run with the same build inputs; using {digest[:19]}')
        dockerfile = image.dockerfile if image is not None else None
        ctx.progress(f'Image pushed: {uri}')
        return Done(f'Image pushed: {uri}@{digest}',
                    record={'image': ImageStatus(uri=uri, digest=digest, dockerfile=dockerfile)})
