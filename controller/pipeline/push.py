"""Stage 2, Push: account from STS, ECR repository created if missing, push with the ECR token."""
from __future__ import annotations

from controller.errors import Reason, StageFailed
from controller.models import ImageStatus, StageName
from controller.pipeline.build import local_tag
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
        uri = f'{repository_uri}:{revision}'

        digest = registry.find_image(repository=spec.repository_name, tag=revision)
        if digest is None:  # not pushed before a restart
            tag = local_tag(spec, revision)
            if not ctx.adapters.docker.has_image(tag):
                raise StageFailed(f'Local image {tag} is gone from the Docker engine; '
                                  'was the engine reset between Build and Push?', reason=Reason.PUSH_FAILED)
            target = registry.push_target(repository_uri=repository_uri, tag=revision)
            digest = ctx.adapters.docker.push(tag=tag, target=target, auth=registry.authorization(),
                                              log=ctx.logger.info)
        dockerfile = image.dockerfile if image is not None else None
        ctx.progress(f'Image pushed: {uri}')
        return Done(f'Image pushed: {uri}@{digest}',
                    record={'image': ImageStatus(uri=uri, digest=digest, dockerfile=dockerfile)})
