"""Stage 1, Build: resolve the branch to a commit, shallow-clone it, find the Dockerfile, build.

When the registry already holds an image under the tag for this commit and
this spec's build inputs (`image_tag`), the stage records its digest and
skips clone and build: re-applying an unchanged resource does no Docker work.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import pathlib
import posixpath
import tempfile
from collections.abc import Iterator
from typing import Any

from controller import tempdirs
from controller.adapters import ImageBuild, RemoteBuilds
from controller.errors import Reason, StageFailed
from controller.models import ImageStatus, PandaDeploySpec, Source, StageName
from controller.pipeline.build_remote import POLL_SECONDS, follow_build
from controller.pipeline.checkout_paths import check_context_links, refuse_symlink_on_path
from controller.pipeline.stage import Done, StageContext, Wait

DOCKERFILE_NAMES = ('Dockerfile',)
BUILD_IDENTITY_LABEL = 'dev.panda.deploy.build-identity'
IDENTITY_HEX = 12  # hex digits of the build inputs' hash in a tag
DEFAULT_BUILD_INPUTS: dict[str, Any] = {'dockerfile': None, 'context': None, 'buildArgs': {}}


def _build_inputs(source: Source) -> dict[str, Any]:
    """What the spec builds from a commit, in one spelling: paths normalised (`./a//b/` is `a/b`), arguments sorted."""
    def path(value: str | None) -> str | None:
        return posixpath.normpath(value) if value is not None else None
    return {'dockerfile': path(source.dockerfile), 'context': path(source.context),
            'buildArgs': dict(sorted((source.build_args or {}).items()))}


def _inputs_sha256(inputs: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the build inputs: keys sorted, no spaces, UTF-8."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(',', ':'), ensure_ascii=False)
    return hashlib.sha256(canonical.encode('utf-8')).hexdigest()


def image_tag(spec: PandaDeploySpec, revision: str) -> str:
    """The tag of the image built from `revision` as `spec` says: `<sha>`, or `<sha>-<12 hex>`.

    Build looks the tag up in ECR before cloning and skips the build when it is
    there, and ECR repositories have immutable tags, so two specs that build
    differently from one commit must never share a tag. Besides the commit,
    what decides the build is the spec's dockerfile, context and buildArgs: the
    suffix is the first 12 hex digits (48 bits) of the sha256 of their
    canonical JSON. With all three at their defaults the tag is the plain SHA:
    Dockerfile discovery is a function of the commit alone, so equal default
    specs build the same image, the common case keeps a readable tag, and
    images pushed before this scheme are still found. At most 64 + 1 + 12
    characters of [0-9a-f-]: inside ECR's 128 and [a-zA-Z0-9_.-].
    """
    inputs = _build_inputs(spec.source)
    if inputs == DEFAULT_BUILD_INPUTS:
        return revision
    return f'{revision}-{_inputs_sha256(inputs)[:IDENTITY_HEX]}'


def local_tag(spec: PandaDeploySpec, revision: str) -> str:
    """The local image the build produces and the push reads: repository:`image_tag`."""
    return f'{spec.repository_name}:{image_tag(spec, revision)}'


def build_identity_label(source: Source) -> str:
    """The image's build-identity label: Dockerfile, context, build argument names, and the sha256 whose
    first digits are the tag's suffix (when it has one). Argument values stay out (they may be tokens)."""
    inputs = _build_inputs(source)
    return json.dumps({'dockerfile': inputs['dockerfile'], 'context': inputs['context'],
                       'buildArgNames': list(inputs['buildArgs']), 'sha256': _inputs_sha256(inputs)},
                      separators=(',', ':'))


def find_dockerfile(root: pathlib.Path, *, path: str | None, context: str | None) -> tuple[str, str]:
    """(Dockerfile, build context), both relative to `root`.

    The spec's path when given; else the root's Dockerfile; else the
    shallowest one, where two at the same depth are an error naming both.
    Neither may be read through a symlink, and the Dockerfile must be inside
    the context (Docker reads it from there).
    """
    if path is not None:
        refuse_symlink_on_path(root, path, what='spec.source.dockerfile')
        if not (root / path).is_file():
            raise StageFailed(f'Dockerfile not found in repository at spec.source.dockerfile {path!r}',
                              reason=Reason.DOCKERFILE_NOT_FOUND)
        found = pathlib.PurePosixPath(path)
    else:
        found = _discover(root)
        refuse_symlink_on_path(root, str(found), what='Dockerfile')
    build_context = context if context is not None else (str(found.parent) if str(found.parent) != '.' else '.')
    refuse_symlink_on_path(root, build_context, what='Build context spec.source.context')
    if not (root / build_context).is_dir():
        raise StageFailed(f'Build context spec.source.context {build_context!r} is not a directory in the repository',
                          reason=Reason.DOCKERFILE_NOT_FOUND)
    if pathlib.PurePosixPath(build_context) not in (pathlib.PurePosixPath('.'), *found.parents):
        raise StageFailed(f'Dockerfile {str(found)!r} is outside the build context {build_context!r} '
                          '(spec.source.context); Docker reads the Dockerfile from the context: move it into '
                          'the context, or set spec.source.context to a directory that holds it',
                          reason=Reason.DOCKERFILE_OUTSIDE_CONTEXT)
    return str(found), build_context


def _discover(root: pathlib.Path) -> pathlib.PurePosixPath:
    """The shallowest Dockerfile of the checkout (rglob enters no linked directory; a linked file is found,
    to be refused by name)."""
    candidates = sorted(
        p.relative_to(root) for p in root.rglob('*')
        if p.name in DOCKERFILE_NAMES and (p.is_file() or p.is_symlink())
        and '.git' not in p.relative_to(root).parts)
    if not candidates:
        raise StageFailed('Dockerfile not found in repository', reason=Reason.DOCKERFILE_NOT_FOUND)
    depth = min(len(c.parts) for c in candidates)
    shallowest = [c for c in candidates if len(c.parts) == depth]
    if len(shallowest) > 1:
        names = ', '.join(str(c) for c in shallowest)
        raise StageFailed(f'{len(shallowest)} Dockerfiles at the same depth ({names}); '
                          'set spec.source.dockerfile to choose one', reason=Reason.AMBIGUOUS_DOCKERFILE)
    return pathlib.PurePosixPath(*shallowest[0].parts)


@dataclasses.dataclass(frozen=True)
class CheckedOut:
    """The commit checked out, its Dockerfile found: what a build gets, on either engine."""
    root: pathlib.Path
    dockerfile: str  # relative to the checkout
    context: str  # relative to the checkout
    labels: dict[str, str]

    @property
    def context_dockerfile(self) -> str:
        """The Dockerfile relative to the context (as the builder reads it)."""
        return str(pathlib.PurePosixPath(self.dockerfile).relative_to(self.context)) \
            if self.context != '.' else self.dockerfile


def resolve_revision(ctx: StageContext) -> tuple[str, bool]:
    """(the commit to build, whether it was resolved now rather than read from status)."""
    source, revision = ctx.spec.source, ctx.status.revision
    resolved = not revision
    if not revision:
        revision = ctx.adapters.git.resolve(url=source.clone_url, branch=source.effective_branch,
                                            revision=source.revision, token=ctx.credentials.github_token,
                                            cancel=ctx.cancel)
    ctx.progress(f'Revision {revision[:7]} of {source.repo or source.url}'
                 + (f' branch {source.effective_branch}' if source.effective_branch else ''))
    return revision, resolved


def image_in_registry(ctx: StageContext, revision: str, *, resolved: bool) -> Done | None:
    """Done(skipped) when the registry already holds the image of this commit and build inputs."""
    spec, registry = ctx.spec, ctx.adapters.registry
    tag = image_tag(spec, revision)
    existing = registry.find_image(repository=spec.repository_name, tag=tag)
    if existing is None:
        return None
    uri = f'{registry.ensure_repository(spec.repository_name)}:{tag}'
    found = {'image': ImageStatus(uri=uri, digest=existing)} | ({'revision': revision} if resolved else {})
    return Done(f'Image {uri} already in the registry ({existing[:19]}); clone and build skipped',
                skipped=True, record=found)


@contextlib.contextmanager
def checked_out(ctx: StageContext, revision: str) -> Iterator[CheckedOut]:
    """A shallow clone of `revision` with its Dockerfile found, removed when the block ends."""
    source = ctx.spec.source
    with tempfile.TemporaryDirectory(prefix=tempdirs.prefix('src')) as tmp:
        checkout = pathlib.Path(tmp) / 'src'
        checkout.mkdir(mode=0o700)
        ctx.adapters.git.checkout(url=source.clone_url, revision=revision, token=ctx.credentials.github_token,
                                  into=checkout, cancel=ctx.cancel)
        ctx.progress('Repository cloned')
        try:
            dockerfile, context = find_dockerfile(checkout, path=source.dockerfile, context=source.context)
            check_context_links(checkout, context)
        except StageFailed as exc:  # say which repository and commit were searched
            raise StageFailed(f'{exc.message} ({source.repo or source.url} at {revision[:7]})',
                              reason=exc.reason) from None
        ctx.progress(f'Dockerfile found: {dockerfile}')
        labels = {
            'org.opencontainers.image.source': source.repo and f'https://github.com/{source.repo}' or source.url or '',
            'org.opencontainers.image.revision': revision,
            'dev.panda.deploy.deployment-id': ctx.status.deployment_id or '',
            BUILD_IDENTITY_LABEL: build_identity_label(source),
        }
        yield CheckedOut(root=checkout, dockerfile=dockerfile, context=context, labels=labels)


class Build:
    name = StageName.build
    poll_seconds = POLL_SECONDS  # how often a CodeBuild build is polled

    def run(self, ctx: StageContext) -> Done | Wait:
        builds = ctx.adapters.builds
        if builds is not None:  # spec.build.engine codeBuild, or the operator's engine
            return self._remote(ctx, builds)
        revision, resolved = resolve_revision(ctx)
        found = image_in_registry(ctx, revision, resolved=resolved)
        if found is not None:
            return found
        if resolved:  # the commit being built, shown while it builds
            ctx.record(revision=revision)
        spec, source = ctx.spec, ctx.spec.source
        local = local_tag(spec, revision)
        with checked_out(ctx, revision) as checkout:
            ctx.adapters.docker.build(context=checkout.root / checkout.context, dockerfile=checkout.context_dockerfile,
                                      tag=local, labels=checkout.labels, build_args=source.build_args or {},
                                      log=ctx.logger.info, cancel=ctx.cancel)
        ctx.progress(f'Docker image built: {local}')
        return Done(f'Built {local} from {checkout.dockerfile}',
                    record={'image': ImageStatus(dockerfile=checkout.dockerfile)})

    def _remote(self, ctx: StageContext, builds: RemoteBuilds) -> Done | Wait:
        """On CodeBuild: the same commit, Dockerfile and limits; the build started once and its id recorded at
        once (or found again after a restart), then followed without a thread (build_remote.py)."""
        build_id = ctx.status.code_build_id
        revision = ctx.status.revision
        if build_id is None or revision is None:
            revision, resolved = resolve_revision(ctx)
            found = image_in_registry(ctx, revision, resolved=resolved)
            if found is not None:
                return found
            if resolved:  # the commit being built, and what finds its build if the id is never written
                ctx.record(revision=revision)
            image = image_build(ctx, revision)
            build_id = builds.find(build=image)
            if build_id is None:
                with checked_out(ctx, revision) as checkout:
                    build_id = builds.start(build=dataclasses.replace(image, dockerfile=checkout.context_dockerfile,
                                                                      labels=checkout.labels),
                                            context=checkout.root / checkout.context, cancel=ctx.cancel)
                ctx.scratch['dockerfile'] = checkout.dockerfile
            ctx.record(code_build_id=build_id)
            ctx.progress(f'CodeBuild build {build_id} started for {image.target}')
            return Wait(self.poll_seconds)
        return follow_build(ctx, builds, build_id, repository=ctx.spec.repository_name,
                            tag=image_tag(ctx.spec, revision), poll_seconds=self.poll_seconds)


def image_build(ctx: StageContext, revision: str) -> ImageBuild:
    """What CodeBuild builds for this run: the image's tag and where it is pushed (labels come with the checkout)."""
    spec, registry = ctx.spec, ctx.adapters.registry
    tag = image_tag(spec, revision)
    repository_uri = registry.ensure_repository(spec.repository_name)
    return ImageBuild(run_id=ctx.status.deployment_id or '', repository=spec.repository_name, tag=tag,
                      target=registry.push_target(repository_uri=repository_uri, tag=tag),
                      build_args=dict(spec.source.build_args or {}))
