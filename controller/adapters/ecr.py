"""ECR through boto3: the account, the repository, its images, and the push credentials.

`account_id` (STS GetCallerIdentity) is the run's credentials check, so its
failures carry reason InvalidCredentials. The push password comes from ECR's
GetAuthorizationToken and stays in memory: it is cached per instance and in a
module-level cache keyed by account, region, endpoint and access key id until
five minutes before it expires (ECR tokens last 12 hours), so runs in one
operator process share it and never write it anywhere.

`PANDA_DEPLOY_REGISTRY=host:port` (DESIGN.md) sends the image to a plain OCI
registry instead, because moto has no registry: the repository is still
created through the ECR API, the push is anonymous, and `record_pushed`
registers the pushed manifest in ECR so that `find_image` (always the ECR
API) sees the tag with the digest the registry reports.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3.session

from controller.adapters import RegistryAuth
from controller.adapters.aws import AwsAdapter, aws_error, error_code
from controller.credentials import Credentials
from controller.errors import Reason, StageFailed, Transient

SANDBOX_REGISTRY_ENV = 'PANDA_DEPLOY_REGISTRY'
TOKEN_MARGIN_SECONDS = 300

# What a registry may answer for an image manifest, most specific first.
MANIFEST_MEDIA_TYPES = (
    'application/vnd.docker.distribution.manifest.v2+json',
    'application/vnd.oci.image.manifest.v1+json',
    'application/vnd.docker.distribution.manifest.list.v2+json',
    'application/vnd.oci.image.index.v1+json',
)


@dataclasses.dataclass(frozen=True)
class _Token:
    auth: RegistryAuth
    expires_at: float  # epoch seconds

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - TOKEN_MARGIN_SECONDS


# (account, region, endpoint, access key id) -> token, shared by the runs of one process.
_TOKENS: dict[tuple[str, str, str, str], _Token] = {}
_TOKENS_LOCK = threading.Lock()


def sandbox_registry() -> str | None:
    """host:port of the plain registry that replaces ECR for pushes, when PANDA_DEPLOY_REGISTRY is set."""
    value = os.environ.get(SANDBOX_REGISTRY_ENV, '').strip().rstrip('/')
    return value or None


def fetch_manifest(*, registry: str, repository: str, reference: str, timeout: float = 30.0) -> tuple[str, str]:
    """(manifest text, media type) of `repository:reference` from a plain registry's HTTP API."""
    url = f'http://{registry}/v2/{repository}/manifests/{urllib.parse.quote(reference, safe=":")}'
    request = urllib.request.Request(url, headers={'Accept': ', '.join(MANIFEST_MEDIA_TYPES)})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (plain sandbox registry)
            body = response.read()
            media_type = response.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        raise StageFailed(f'Registry {registry} has no manifest for {repository}:{reference} (HTTP {exc.code})',
                          reason=Reason.PUSH_FAILED) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise Transient(f'Registry {registry} unreachable: {exc}') from exc
    return body.decode('utf-8'), media_type


class EcrRegistry(AwsAdapter):
    """The `Registry` adapter: ECR in one account and region, through one boto3 session."""

    failure_reason = Reason.PUSH_FAILED

    def __init__(self, *, session: boto3.session.Session, credentials: Credentials | None = None) -> None:
        super().__init__(session=session, credentials=credentials)
        self._account: str | None = None
        self._token: _Token | None = None

    # -- Registry protocol ----------------------------------------------------------

    def account_id(self) -> str:
        """The account the credentials belong to (STS GetCallerIdentity): the run's credentials check."""
        if self._account is None:
            try:
                identity = self._client('sts').get_caller_identity()
            except Exception as exc:
                raise aws_error(exc, action='STS GetCallerIdentity', reason=Reason.INVALID_CREDENTIALS,
                                credentials_check=True, secrets=self._secrets) from exc
            self._account = str(identity['Account'])
        return self._account

    def ensure_repository(self, name: str) -> str:
        """The repository URI, creating the repository when it is missing."""
        found = self._repository_uri(name)
        if found is not None:
            return found
        try:
            created = self._client('ecr').create_repository(repositoryName=name, imageTagMutability='MUTABLE')
            return str(created['repository']['repositoryUri'])
        except Exception as exc:
            if error_code(exc) != 'RepositoryAlreadyExistsException':
                raise self._error(exc, f'ECR CreateRepository {name}') from exc
        found = self._repository_uri(name)  # created meanwhile by another run
        if found is None:
            raise Transient(f'ECR repository {name} exists but cannot be described yet')
        return found

    def find_image(self, *, repository: str, tag: str) -> str | None:
        """The digest of `repository:tag` in ECR, or None when the tag or the repository is missing."""
        try:
            answer = self._client('ecr').describe_images(repositoryName=repository, imageIds=[{'imageTag': tag}])
        except Exception as exc:
            if error_code(exc) in ('ImageNotFoundException', 'RepositoryNotFoundException'):
                return None
            raise self._error(exc, f'ECR DescribeImages {repository}:{tag}') from exc
        details = answer.get('imageDetails') or []
        return str(details[0]['imageDigest']) if details else None

    def authorization(self) -> RegistryAuth:
        """Push credentials from ECR's authorization token, cached until 5 minutes before it expires.

        With PANDA_DEPLOY_REGISTRY the plain registry is anonymous: the answer
        has empty username and password, which the Docker adapter sends as no
        credentials at all.
        """
        sandbox = sandbox_registry()
        if sandbox is not None:
            return RegistryAuth(registry=sandbox, username='', password='')
        now = time.time()
        with self._lock:
            if self._token is not None and self._token.fresh(now):
                return self._token.auth
        key = self._cache_key()
        with _TOKENS_LOCK:
            shared = _TOKENS.get(key)
        if shared is None or not shared.fresh(now):
            shared = self._new_token()
            with _TOKENS_LOCK:
                _TOKENS[key] = shared
        with self._lock:
            self._token = shared
        return shared.auth

    def push_target(self, *, repository_uri: str, tag: str) -> str:
        """`repository_uri:tag`, or `host:port/<repository name>:tag` with PANDA_DEPLOY_REGISTRY."""
        sandbox = sandbox_registry()
        if sandbox is None:
            return f'{repository_uri}:{tag}'
        name = repository_uri.split('/', 1)[1] if '/' in repository_uri else repository_uri
        return f'{sandbox}/{name}:{tag}'

    # -- the sandbox registry ------------------------------------------------------

    def record_pushed(self, *, repository: str, tag: str, manifest: str, media_type: str) -> str:
        """Register a manifest pushed to the PANDA_DEPLOY_REGISTRY registry as `repository:tag` in ECR.

        Only for the sandbox: a real ECR push creates the image itself. moto
        has no registry, so without this the ECR API would never see the tag
        and `find_image` (the idempotency check) would miss it. ECR PutImage
        takes the manifest as pushed, with its digest (the sha256 of the
        manifest bytes, as the registry computes it); returns that digest.
        """
        digest = 'sha256:' + hashlib.sha256(manifest.encode('utf-8')).hexdigest()
        try:
            self._client('ecr').put_image(repositoryName=repository, imageTag=tag, imageManifest=manifest,
                                          imageManifestMediaType=media_type, imageDigest=digest)
        except Exception as exc:
            if error_code(exc) != 'ImageAlreadyExistsException':
                raise self._error(exc, f'ECR PutImage {repository}:{tag}') from exc
        return digest

    def record_sandbox_push(self, *, target: str, digest: str) -> None:
        """After a push to PANDA_DEPLOY_REGISTRY: fetch the manifest `digest` from it and `record_pushed` it."""
        sandbox = sandbox_registry()
        if sandbox is None or not target.startswith(f'{sandbox}/'):
            raise ValueError(f'{target!r} is not in the registry {SANDBOX_REGISTRY_ENV} names')
        name, _, tag = target[len(sandbox) + 1:].rpartition(':')
        manifest, media_type = fetch_manifest(registry=sandbox, repository=name, reference=digest)
        recorded = self.record_pushed(repository=name, tag=tag, manifest=manifest, media_type=media_type)
        if recorded != digest:
            raise StageFailed(f'Registry {sandbox} served {name}@{digest} with a different digest ({recorded})',
                              reason=Reason.PUSH_FAILED)

    # -- inside ---------------------------------------------------------------------

    def _repository_uri(self, name: str) -> str | None:
        try:
            found = self._client('ecr').describe_repositories(repositoryNames=[name])['repositories']
        except Exception as exc:
            if error_code(exc) == 'RepositoryNotFoundException':
                return None
            raise self._error(exc, f'ECR DescribeRepositories {name}') from exc
        return str(found[0]['repositoryUri']) if found else None

    def _cache_key(self) -> tuple[str, str, str, str]:
        ecr = self._client('ecr')
        found = self._session.get_credentials()
        access_key = found.get_frozen_credentials().access_key if found is not None else ''
        return (self.account_id(), str(ecr.meta.region_name), str(ecr.meta.endpoint_url), str(access_key or ''))

    def _new_token(self) -> _Token:
        try:
            answer = self._client('ecr').get_authorization_token()
        except Exception as exc:
            raise self._error(exc, 'ECR GetAuthorizationToken') from exc
        data = answer['authorizationData'][0]
        try:
            username, password = base64.b64decode(data['authorizationToken']).decode('utf-8').split(':', 1)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StageFailed('ECR GetAuthorizationToken returned a token that is not base64 user:password',
                              reason=Reason.PUSH_FAILED) from exc
        endpoint = str(data.get('proxyEndpoint') or '')
        registry = urllib.parse.urlsplit(endpoint).netloc or endpoint
        expires = data.get('expiresAt')
        if isinstance(expires, datetime.datetime):
            expires_at = expires.timestamp()
        else:
            expires_at = time.time() + 12 * 3600
        self._secrets.append(password)
        return _Token(RegistryAuth(registry=registry, username=username, password=password), expires_at)

