"""AWS sessions for one run, and what AWS errors mean for the run.

Every AWS adapter (ECR here; ECS, CodeDeploy and ELBv2 later) gets its boto3
session from `session_for`, so credentials are chosen in one place: the keys
from `spec.aws.credentialsSecretRef` when given, else the default chain (IRSA
in a pod), then exchanged through STS AssumeRole for each role the run's
`AwsIdentity` names, each from the one before (controller/tenancy.py decides
which: a namespace's pinned role, then `spec.aws.roleArn`). The keys
are handed to botocore in memory only (never the environment, argv or a
file). botocore's adaptive retry mode absorbs throttling and 5xx; what is
left when it gives up becomes a `Transient` here, so the stage engine retries
the stage with its own backoff. Endpoints: botocore honours
`AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` itself (checked for the
pinned botocore), which is how a moto server stands in for AWS.
"""
from __future__ import annotations

import datetime
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import boto3.session
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.loaders
import botocore.session

from controller.credentials import Credentials, redact
from controller.errors import PandaDeployError, Reason, StageFailed, Transient
from controller.models import Aws

ROLE_SESSION_NAME = 'panda-deploy'
ROLE_SESSION_SECONDS = 3600

# 4 retries within one call (5 requests; throttling waits a jittered 0-1, 0-2, 0-4, 0-8 s, 5xx 1/20 of that),
# then the call's error reaches the stage engine, which retries the stage with its own growing backoff
# (TRANSIENT_BACKOFF) and so reports each retry and fails within the stage timeout naming the AWS error
# code. With 10 attempts one throttled call could retry for ~2 minutes unseen, past any stage timeout.
CLIENT_CONFIG = botocore.config.Config(
    retries={'mode': 'adaptive', 'max_attempts': 4},
    connect_timeout=10,
    read_timeout=60,
    user_agent_extra='panda-deploy',
)

# Error codes that mean "try again later": throttling and server-side trouble.
TRANSIENT_CODES = frozenset({
    'Throttling', 'ThrottlingException', 'ThrottledException', 'RequestThrottledException',
    'TooManyRequestsException', 'RequestLimitExceeded', 'RequestThrottled', 'SlowDown',
    'ProvisionedThroughputExceededException', 'BandwidthLimitExceeded', 'PriorRequestNotComplete',
    'EC2ThrottledException', 'InternalError', 'InternalFailure', 'InternalServerError',
    'InternalServiceError', 'InternalServiceException', 'ServerException', 'ServiceUnavailable',
    'ServiceUnavailableException', 'RequestTimeout', 'RequestTimeoutException', 'IDPCommunicationError',
})

# Error codes that mean the credentials themselves are refused.
CREDENTIAL_CODES = frozenset({
    'UnrecognizedClientException', 'InvalidClientTokenId', 'SignatureDoesNotMatch', 'ExpiredToken',
    'ExpiredTokenException', 'InvalidAccessKeyId', 'InvalidToken', 'AuthFailure', 'IncompleteSignature',
    'MissingAuthenticationToken', 'RequestExpired',
})
ACCESS_DENIED_CODES = frozenset({'AccessDenied', 'AccessDeniedException'})

_CONNECTION_ERRORS = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ProxyConnectionError,
    botocore.exceptions.HTTPClientError,
)
_NO_CREDENTIALS_ERRORS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.PartialCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
)


def session_for(aws: Aws, credentials: Credentials) -> boto3.session.Session:
    """A boto3 session in `aws.region` with the run's credentials (static keys, or the default chain), then
    each role of `credentials.aws_identity` assumed from the one before (without an identity: `aws.role_arn`,
    in a session named `panda-deploy`). Nothing is called until a client makes its first request."""
    keys = credentials.aws
    if keys is not None:
        base = boto3.session.Session(aws_access_key_id=keys.access_key_id,
                                     aws_secret_access_key=keys.secret_access_key,
                                     aws_session_token=keys.session_token, region_name=aws.region)
    else:
        base = boto3.session.Session(region_name=aws.region)
    identity = credentials.aws_identity
    if identity is not None:
        roles, session_name = [(r.arn, f' ({r.source})') for r in identity.roles], identity.session_name
    else:
        roles, session_name = ([(aws.role_arn, '')] if aws.role_arn else []), ROLE_SESSION_NAME
    session = base
    for role_arn, source in roles:
        session = _assume(session, role_arn, session_name=session_name,
                          action=f'STS AssumeRole of {role_arn}{source}', secrets=credentials.values())
    return session


def _assume(base: boto3.session.Session, role_arn: str, *, session_name: str, action: str,
            secrets: list[str]) -> boto3.session.Session:
    """A session acting as `role_arn`, assumed with `base`'s credentials (refreshed before they expire)."""

    def assume() -> dict[str, Any]:
        """Fresh temporary credentials for the role, in botocore's refresh format."""
        sts = base.client('sts', config=CLIENT_CONFIG)
        try:
            answer = sts.assume_role(RoleArn=role_arn, RoleSessionName=session_name,
                                     DurationSeconds=ROLE_SESSION_SECONDS)
        except Exception as exc:
            raise aws_error(exc, action=action, reason=Reason.INVALID_CREDENTIALS,
                            credentials_check=True, secrets=secrets) from exc
        found = answer['Credentials']
        expiration: object = found['Expiration']
        expiry = expiration.isoformat() if isinstance(expiration, datetime.datetime) else str(expiration)
        return {'access_key': found['AccessKeyId'], 'secret_key': found['SecretAccessKey'],
                'token': found['SessionToken'], 'expiry_time': expiry}

    core = botocore.session.Session()
    resolver = core.get_component('credential_provider')
    resolver.insert_before('env', _AssumedRole(assume))
    return boto3.session.Session(botocore_session=core, region_name=base.region_name)


class _AssumedRole(botocore.credentials.CredentialProvider):  # type: ignore[misc]  # botocore is untyped
    """First in the chain: the role's credentials, fetched on first use and refreshed before they expire."""
    METHOD = 'panda-deploy-assume-role'
    CANONICAL_NAME = 'custom-panda-deploy-assume-role'

    def __init__(self, fetch: Any) -> None:
        super().__init__()
        self._fetch = fetch

    def load(self) -> botocore.credentials.DeferredRefreshableCredentials:
        return botocore.credentials.DeferredRefreshableCredentials(refresh_using=self._fetch, method=self.METHOD)


# Service models are read from disk once per process, not once per run: each run has a session of its own (its
# own credentials), and a new session re-reads the JSON model of every client it makes (~0.1 s a run for five).
# The loader holds only botocore's data files, never credentials.
_DATA_LOADER = botocore.loaders.create_loader()


def client(session: boto3.session.Session, service: str) -> Any:
    """A client of `service` with the project's retry and timeout settings."""
    session._session.register_component('data_loader', _DATA_LOADER)
    return session.client(service, config=CLIENT_CONFIG)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return _code_and_message(exc)[0]
    return None


def _code_and_message(exc: botocore.exceptions.ClientError) -> tuple[str, str]:
    """The error code and message; an XML error body under a JSON-protocol call (some proxies, moto's
    IAM checks) leaves a bare HTTP status as the code, so the body's <Code> and <Message> are used then."""
    error = exc.response.get('Error', {})
    code, message = str(error.get('Code') or 'Unknown'), str(error.get('Message') or exc)
    if code.isdigit() and '<Code>' in message:
        found_code = re.search(r'<Code>([^<]+)</Code>', message)
        found_message = re.search(r'<Message>([^<]*)</Message>', message)
        if found_code:
            code = found_code.group(1)
            message = found_message.group(1) if found_message else ''
    return code, message


def aws_error(exc: BaseException, *, action: str, reason: str = Reason.UNEXPECTED_ERROR,
              credentials_check: bool = False, secrets: Iterable[str] = ()) -> PandaDeployError:
    """The project error for a failed AWS call (raise it `from exc`).

    Throttling, 5xx and connection trouble: `Transient`. Refused credentials
    (and, when the call checks the credentials, as STS calls do, AccessDenied):
    `StageFailed(InvalidCredentials)`. Anything else: `StageFailed(reason)`.
    Messages name the action and the AWS error code and are redacted.
    """
    secrets = list(secrets)
    if isinstance(exc, PandaDeployError):
        return exc
    if isinstance(exc, botocore.exceptions.ClientError):
        code, detail = _code_and_message(exc)
        detail = redact(detail, secrets)
        status = int(exc.response.get('ResponseMetadata', {}).get('HTTPStatusCode') or 0)
        text = f'{action} failed: {code}: {detail}'
        if code in TRANSIENT_CODES or status >= 500:  # retried; when the engine gives up, fails with `reason`
            return Transient(text, reason=_transient_reason(reason))
        if code in CREDENTIAL_CODES or (credentials_check and code in ACCESS_DENIED_CODES):
            return StageFailed(text, reason=Reason.INVALID_CREDENTIALS)
        return StageFailed(text, reason=reason)
    if isinstance(exc, _NO_CREDENTIALS_ERRORS):
        return StageFailed(f'{action} failed: no usable AWS credentials '
                           f'(set spec.aws.credentialsSecretRef, or give the operator IRSA): '
                           f'{redact(str(exc), secrets)}', reason=Reason.INVALID_CREDENTIALS)
    if isinstance(exc, _CONNECTION_ERRORS):
        return Transient(f'{action} failed: {type(exc).__name__}: {redact(str(exc), secrets)}',
                         reason=_transient_reason(reason))
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return StageFailed(f'{action} failed: {type(exc).__name__}: {redact(str(exc), secrets)}', reason=reason)
    return StageFailed(f'{action} failed: {type(exc).__name__}: {redact(str(exc), secrets)}', reason=reason)


def _transient_reason(reason: str) -> str:
    """The reason a run fails with when AWS keeps refusing: the adapter's own, but never InvalidCredentials
    (throttling or a 5xx says nothing about the keys)."""
    return Reason.UNEXPECTED_ERROR if reason == Reason.INVALID_CREDENTIALS else reason


class AwsAdapter:
    """What every AWS adapter shares: lazily built clients (or ready-made ones, e.g. a botocore
    Stubber's, by service name) and errors mapped with the adapter's own failure reason."""
    failure_reason: str = Reason.UNEXPECTED_ERROR

    def __init__(self, *, session: boto3.session.Session | None = None, credentials: Credentials | None = None,
                 clients: Mapping[str, Any] | None = None) -> None:
        if session is None and not clients:
            raise ValueError('a boto3 session or clients are required')
        self._session = session
        self._secrets = credentials.values() if credentials is not None else []
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = dict(clients or {})

    def _client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                assert self._session is not None, f'no {service} client given'
                try:
                    self._clients[service] = client(self._session, service)
                except Exception as exc:
                    raise aws_error(exc, action=f'{service} client', secrets=self._secrets) from exc
            return self._clients[service]

    def _error(self, exc: BaseException, action: str) -> PandaDeployError:
        return aws_error(exc, action=action, reason=self.failure_reason, secrets=self._secrets)
