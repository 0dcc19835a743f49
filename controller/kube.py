"""The one module that talks to the Kubernetes API (besides Kopf's own watching).

It writes PandaDeploy status through the status subresource with JSON merge
patches that carry only what changed (nulls for removed keys), posts Events,
and reads Secrets and Namespaces. It raises the project's own errors with the client's
exception chained as the cause. Calls block; callers run them in threads.

Every request carries a (connect, read) timeout and a call's retries end by a
deadline, so an API server that accepts a connection and never answers costs a
worker thread at most CALL_SECONDS, never for ever. urllib3's own retries are
off in the client built here: this module's loop is the one place that retries.
"""
from __future__ import annotations

import base64
import datetime
import logging
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from controller.models import GROUP, KIND, PLURAL, VERSION, Logger, cap_message

MERGE_PATCH = 'application/merge-patch+json'
COMPONENT = 'panda-deploy'
# Backoff for API calls that fail in passing (connection errors, timeouts, 429, 5xx).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)
# Seconds to connect and to wait for each read of an answer, per request.
REQUEST_TIMEOUT = (5.0, 15.0)
# A call, its retries included, ends within this many seconds: a retry starts
# only if its delay and a whole request still fit.
CALL_SECONDS = 60.0


class KubeError(Exception):
    """A Kubernetes API call failed."""


class ObjectGone(KubeError):
    """The object was deleted while we worked on it."""


class Forbidden(KubeError):
    """HTTP 403: the operator's RBAC does not allow the call (namespace and name: of the object asked for)."""

    def __init__(self, message: str, *, namespace: str = '', name: str = '') -> None:
        super().__init__(message)
        self.namespace, self.name = namespace, name


def merge_diff(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns `old` into `new` ({} when equal)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            if isinstance(old[key], Mapping) and isinstance(value, Mapping):
                patch[key] = merge_diff(old[key], value)
            else:
                patch[key] = value
    return patch


def load_client() -> kubernetes.client.ApiClient:
    """In a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config, as kubectl does."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.retries = False  # Kube._call retries, within its deadline; urllib3 would multiply it
    return kubernetes.client.ApiClient(configuration)


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 429, 500, 502, 503, 504)
    return isinstance(exc, (OSError, ConnectionError)) or type(exc).__module__.startswith('urllib3')


def _describe(exc: Exception, request_timeout: tuple[float, float]) -> str:
    if isinstance(exc, ApiException):
        return f'HTTP {exc.status} {exc.reason}'
    if 'Timeout' in type(exc).__name__ or isinstance(exc, TimeoutError):
        return f'no answer in time ({type(exc).__name__}; connect {request_timeout[0]:g}s, read {request_timeout[1]:g}s)'
    return type(exc).__name__


class Kube:
    """PandaDeploy status, Events and Secrets over the Kubernetes API."""

    def __init__(self, api_client: kubernetes.client.ApiClient | None = None, *,
                 logger: Logger | None = None, request_timeout: tuple[float, float] = REQUEST_TIMEOUT,
                 call_seconds: float = CALL_SECONDS) -> None:
        self.api_client = api_client or load_client()
        self.request_timeout, self.call_seconds = request_timeout, call_seconds
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.logger = logger or logging.getLogger(__name__)
        self.instance = socket.gethostname()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.call_seconds
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                return fn(*args, **kwargs, _request_timeout=self.request_timeout)
            except ApiException as exc:
                if exc.status == 404:
                    raise ObjectGone(f'{what}: not found') from exc
                if exc.status == 403:
                    raise Forbidden(f'{what}: HTTP 403 {exc.reason}') from exc
                error: Exception = exc
            except Exception as exc:
                error = exc
            message = f'{what}: {_describe(error, self.request_timeout)}'
            if delay is None or not _retryable(error):
                raise KubeError(message) from error
            if time.monotonic() + delay + sum(self.request_timeout) > deadline:
                raise KubeError(f'{message} (gave up after {attempt + 1} attempts, '
                                f'{self.call_seconds:g}s for the call)') from error
            self.logger.warning('%s (attempt %d); retrying in %.1fs', message, attempt + 1, delay)
            time.sleep(delay)
        raise AssertionError('unreachable')

    def get(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = self._call(f'get {PLURAL}/{name}', self.custom.get_namespaced_custom_object,
                                              GROUP, VERSION, namespace, PLURAL, name)
            return body
        except ObjectGone:
            return None

    def patch_status(self, *, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = self._call(
            f'patch {PLURAL}/{name}/status', self.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, PLURAL, name, {'status': dict(patch)}, _content_type=MERGE_PATCH)
        return body

    def read_secret(self, *, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's data decoded, or None when it does not exist; `Forbidden` when RBAC denies it."""
        try:
            secret = self._call(f'get secrets/{name}', self.core.read_namespaced_secret, name, namespace)
        except ObjectGone:
            return None
        except Forbidden as exc:
            raise Forbidden(f'get secrets/{name} in namespace {namespace}: forbidden',
                            namespace=namespace, name=name) from exc
        data = {k: base64.b64decode(v).decode('utf-8', 'replace') for k, v in (secret.data or {}).items()}
        data.update(secret.string_data or {})
        return data

    def namespace_annotations(self, name: str) -> dict[str, str]:
        """The Namespace's annotations ({} when it does not exist): where cluster admins set tenancy."""
        try:
            namespace = self._call(f'get namespaces/{name}', self.core.read_namespace, name)
        except ObjectGone:
            return {}
        return dict(namespace.metadata.annotations or {})

    def post_event(self, *, ref: Mapping[str, str], type: str, reason: str, message: str) -> None:
        """A core/v1 Event on the object (what `kubectl describe` and `get events` show)."""
        now = datetime.datetime.now(tz=datetime.timezone.utc)
        message = cap_message(message)  # the status's cap: Kubernetes keeps 1 KiB of an Event's message
        body = {
            'apiVersion': 'v1', 'kind': 'Event',
            'metadata': {'name': f'{ref["name"]}.{uuid.uuid4().hex[:16]}', 'namespace': ref['namespace']},
            'involvedObject': {'apiVersion': f'{GROUP}/{VERSION}', 'kind': KIND, **ref},
            'type': type, 'reason': reason, 'message': message,
            'source': {'component': COMPONENT, 'host': self.instance},
            'reportingComponent': COMPONENT, 'reportingInstance': self.instance,
            'firstTimestamp': now.strftime('%Y-%m-%dT%H:%M:%SZ'),
            'lastTimestamp': now.strftime('%Y-%m-%dT%H:%M:%SZ'),
            'count': 1,
        }
        self._call(f'create event {reason}', self.core.create_namespaced_event, ref['namespace'], body)
