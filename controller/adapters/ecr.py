"""ECR through boto3: the account, the repository, its images, and the push credentials.

`account_id` (STS GetCallerIdentity) is the run's credentials check, so its
failures carry reason InvalidCredentials. The push password comes from ECR's
GetAuthorizationToken and stays in memory: it is cached per instance and in a
module-level cache until five minutes before it expires (ECR tokens last 12
hours), so runs in one operator process share it and never write it anywhere.
That cache is keyed by account, region, endpoint and a keyed digest of the
whole credentials (the same access key id with another secret is another
identity: a resource made again with a new Secret gets its own token) and
holds at most TOKEN_CACHE_SIZE identities, the least recently used dropped
first.

Pushing to a plain OCI registry instead (PANDA_DEPLOY_REGISTRY, for the
sandbox and tests) is `controller.adapters.plain_registry`, a subclass that
answers `authorization` and `push_target` for that registry.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import hashlib
import hmac
import secrets
import threading
import time
import urllib.parse

import boto3.session

from controller.adapters import RegistryAuth
from controller.adapters.aws import AwsAdapter, aws_error, error_code
from controller.credentials import Credentials
from controller.errors import Reason, StageFailed, Transient

TOKEN_MARGIN_SECONDS = 300
TOKEN_CACHE_SIZE = 64  # identities whose tokens the process keeps
_IDENTITY_KEY = secrets.token_bytes(32)  # keys the credentials' digest: it names them, it cannot be checked offline


@dataclasses.dataclass(frozen=True)
class _Token:
    auth: RegistryAuth
    expires_at: float  # epoch seconds

    def fresh(self, now: float) -> bool:
        return now < self.expires_at - TOKEN_MARGIN_SECONDS


TokenKey = tuple[str, str, str, str]  # account, region, endpoint, digest of the credentials


class TokenCache:
    """Push tokens shared by the runs of one process: bounded (least recently used first out), and none
    served within TOKEN_MARGIN_SECONDS of its expiry."""

    def __init__(self) -> None:
        self._tokens: collections.OrderedDict[TokenKey, _Token] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tokens)

    def get(self, key: TokenKey, *, now: float) -> _Token | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is None or not token.fresh(now):
                self._tokens.pop(key, None)
                return None
            self._tokens.move_to_end(key)
            return token

    def put(self, key: TokenKey, token: _Token, *, now: float) -> None:
        with self._lock:
            self._tokens[key] = token
            self._tokens.move_to_end(key)
            for stale in [k for k, found in self._tokens.items() if not found.fresh(now)]:
                del self._tokens[stale]
            while len(self._tokens) > TOKEN_CACHE_SIZE:
                self._tokens.popitem(last=False)


_TOKENS = TokenCache()


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
        """The repository URI, creating the repository (immutable tags) when it is missing; one that exists is
        left as it is."""
        found = self._repository_uri(name)
        if found is not None:
            return found
        try:  # immutable tags: a tag names one image for good (the tag says what was built, see image_tag)
            created = self._client('ecr').create_repository(repositoryName=name, imageTagMutability='IMMUTABLE')
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
        """Push credentials from ECR's authorization token, cached until 5 minutes before it expires."""
        now = time.time()
        with self._lock:
            if self._token is not None and self._token.fresh(now):
                return self._token.auth
        key = self._cache_key()
        shared = _TOKENS.get(key, now=now)
        if shared is None:
            shared = self._new_token()
            _TOKENS.put(key, shared, now=now)
        with self._lock:
            self._token = shared
        return shared.auth

    def push_target(self, *, repository_uri: str, tag: str) -> str:
        """`repository_uri:tag`: ECR receives the push itself."""
        return f'{repository_uri}:{tag}'

    # -- inside ---------------------------------------------------------------------

    def _repository_uri(self, name: str) -> str | None:
        try:
            found = self._client('ecr').describe_repositories(repositoryNames=[name])['repositories']
        except Exception as exc:
            if error_code(exc) == 'RepositoryNotFoundException':
                return None
            raise self._error(exc, f'ECR DescribeRepositories {name}') from exc
        return str(found[0]['repositoryUri']) if found else None

    def _cache_key(self) -> TokenKey:
        ecr = self._client('ecr')
        found = self._session.get_credentials() if self._session is not None else None  # None: stubbed clients
        frozen = found.get_frozen_credentials() if found is not None else None
        identity = '\0'.join(str(part or '') for part in (frozen.access_key, frozen.secret_key, frozen.token)) \
            if frozen is not None else ''
        digest = hmac.new(_IDENTITY_KEY, identity.encode('utf-8'), hashlib.sha256).hexdigest()
        return (self.account_id(), str(ecr.meta.region_name), str(ecr.meta.endpoint_url), digest)

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

