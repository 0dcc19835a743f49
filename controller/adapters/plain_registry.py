"""Image bytes to a plain OCI registry (`host:port`), the books kept in ECR: the sandbox's `Registry`.

moto has no registry, so the sandbox and the tests push images to a local
docker-registry instead (PANDA_DEPLOY_REGISTRY, read in `controller.config`).
Everything but the bytes stays ECR, so the stages cannot tell the
difference: the account (STS), the repository (created through the ECR
API), the image URI in status, and the idempotency check (`find_image`, ECR
DescribeImages). For that check to find a pushed tag, `PushRecorder`
records each push in ECR with PutImage: the manifest as the registry serves
it, under the digest the push reported. A re-run then skips the build.

`controller.adapters.wiring.make_adapters` picks this variant once, when it
builds a run's adapters; `EcrRegistry` knows nothing of it.
"""
from __future__ import annotations

import hashlib
import pathlib
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping

import boto3.session

from controller.adapters import Docker, LogLine, RegistryAuth
from controller.adapters.aws import error_code
from controller.adapters.ecr import EcrRegistry
from controller.credentials import Credentials
from controller.errors import Reason, StageFailed, Transient

# What a registry may answer for an image manifest, most specific first.
MANIFEST_MEDIA_TYPES = (
    'application/vnd.docker.distribution.manifest.v2+json',
    'application/vnd.oci.image.manifest.v1+json',
    'application/vnd.docker.distribution.manifest.list.v2+json',
    'application/vnd.oci.image.index.v1+json',
)


def fetch_manifest(*, registry: str, repository: str, reference: str, timeout: float = 30.0) -> tuple[str, str]:
    """(manifest text, media type) of `repository:reference` from a plain registry's HTTP API."""
    url = f'http://{registry}/v2/{repository}/manifests/{urllib.parse.quote(reference, safe=":")}'
    request = urllib.request.Request(url, headers={'Accept': ', '.join(MANIFEST_MEDIA_TYPES)})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (plain sandbox registry)
            body: bytes = response.read()
            media_type: str = response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        raise StageFailed(f'Registry {registry} has no manifest for {repository}:{reference} (HTTP {exc.code})',
                          reason=Reason.PUSH_FAILED) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise Transient(f'Registry {registry} unreachable: {exc}') from exc
    return body.decode('utf-8'), media_type


class PlainRegistry(EcrRegistry):
    """The `Registry` adapter for pushes to the anonymous registry at `address`, ECR for the rest."""

    def __init__(self, *, address: str, session: boto3.session.Session,
                 credentials: Credentials | None = None) -> None:
        super().__init__(session=session, credentials=credentials)
        self.address = address

    # -- Registry protocol: where and how the image is pushed -------------------------

    def authorization(self) -> RegistryAuth:
        """No credentials: the plain registry is anonymous (the Docker adapter then sends none at all)."""
        return RegistryAuth(registry=self.address, username='', password='')

    def push_target(self, *, repository_uri: str, tag: str) -> str:
        """`address/<repository name>:tag`: the ECR repository's name in the plain registry."""
        name = repository_uri.split('/', 1)[1] if '/' in repository_uri else repository_uri
        return f'{self.address}/{name}:{tag}'

    # -- after the push -------------------------------------------------------------

    def record_push(self, *, target: str, digest: str) -> None:
        """Fetch the manifest `digest` that was pushed to `target` and register it in ECR under its tag."""
        if not target.startswith(f'{self.address}/'):
            raise ValueError(f'{target!r} is not in the registry {self.address}')
        name, _, tag = target[len(self.address) + 1:].rpartition(':')
        manifest, media_type = fetch_manifest(registry=self.address, repository=name, reference=digest)
        recorded = self._put_image(repository=name, tag=tag, manifest=manifest, media_type=media_type)
        if recorded != digest:
            raise StageFailed(f'Registry {self.address} served {name}@{digest} with a different digest ({recorded})',
                              reason=Reason.PUSH_FAILED)

    def _put_image(self, *, repository: str, tag: str, manifest: str, media_type: str) -> str:
        """ECR PutImage of `manifest` as `repository:tag`; returns its digest.

        A real ECR push creates the image itself; moto never sees the push,
        so without this `find_image` would miss the tag. The digest is the
        sha256 of the manifest bytes, as the registry computes it. Tags are
        immutable: the same image under its tag again is accepted, another
        image under a recorded tag is refused, as ECR refuses that push.
        """
        digest = 'sha256:' + hashlib.sha256(manifest.encode('utf-8')).hexdigest()
        try:
            self._client('ecr').put_image(repositoryName=repository, imageTag=tag, imageManifest=manifest,
                                          imageManifestMediaType=media_type, imageDigest=digest)
        except Exception as exc:
            if error_code(exc) not in ('ImageAlreadyExistsException', 'ImageTagAlreadyExistsException'):
                raise self._error(exc, f'ECR PutImage {repository}:{tag}') from exc
            held = self.find_image(repository=repository, tag=tag)
            if held is not None and held != digest:
                raise StageFailed(f'ECR repository {repository} has immutable tags and {tag} already names {held}; '
                                  f'not recorded: {digest}', reason=Reason.PUSH_FAILED) from exc
        return digest


class PushRecorder:
    """The `Docker` adapter beside a `PlainRegistry`: each push is then recorded in ECR.

    Build and look-up go straight to the Docker adapter it wraps.
    """

    def __init__(self, *, docker: Docker, registry: PlainRegistry) -> None:
        self._docker = docker
        self._registry = registry

    def build(self, *, context: pathlib.Path, dockerfile: str, tag: str, labels: Mapping[str, str],
              build_args: Mapping[str, str], log: LogLine, cancel: threading.Event) -> str:
        return self._docker.build(context=context, dockerfile=dockerfile, tag=tag, labels=labels,
                                  build_args=build_args, log=log, cancel=cancel)

    def has_image(self, tag: str) -> bool:
        return self._docker.has_image(tag)

    def push(self, *, tag: str, target: str, auth: RegistryAuth | None, log: LogLine) -> str:
        digest = self._docker.push(tag=tag, target=target, auth=auth, log=log)
        self._registry.record_push(target=target, digest=digest)
        log(f'Recorded {target} ({digest}) in ECR for the sandbox registry')
        return digest
