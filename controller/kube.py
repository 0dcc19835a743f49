"""The one module that talks to the Kubernetes API (besides Kopf's own watching).

It writes PandaDeploy status through the status subresource with JSON merge
patches that carry only what changed (nulls for removed keys), posts Events,
and reads Secrets. It raises the project's own errors with the client's
exception chained as the cause. Calls block; callers run them in threads.
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

from controller.errors import cap_message
from controller.models import GROUP, KIND, PLURAL, VERSION

MERGE_PATCH = 'application/merge-patch+json'
COMPONENT = 'panda-deploy'
# Backoff for API calls that fail in passing (connection errors, 429, 5xx).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


class KubeError(Exception):
    """A Kubernetes API call failed."""


class ObjectGone(KubeError):
    """The object was deleted while we worked on it."""


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
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in (0, 429, 500, 502, 503, 504)
    return isinstance(exc, (OSError, ConnectionError)) or type(exc).__module__.startswith('urllib3')


class Kube:
    """PandaDeploy status, Events and Secrets over the Kubernetes API."""

    def __init__(self, api_client: kubernetes.client.ApiClient | None = None, *,
                 logger: logging.Logger | None = None) -> None:
        self.api_client = api_client or load_client()
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.logger = logger or logging.getLogger(__name__)
        self.instance = socket.gethostname()

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        for attempt, delay in enumerate((*RETRY_DELAYS, None)):
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status == 404:
                    raise ObjectGone(f'{what}: not found') from exc
                if delay is None or not _retryable(exc):
                    raise KubeError(f'{what}: HTTP {exc.status} {exc.reason}') from exc
            except Exception as exc:
                if delay is None or not _retryable(exc):
                    raise KubeError(f'{what}: {type(exc).__name__}') from exc
            self.logger.warning('%s failed (attempt %d); retrying in %.1fs', what, attempt + 1, delay)
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
        """The Secret's data decoded, or None when it does not exist."""
        try:
            secret = self._call(f'get secrets/{name}', self.core.read_namespaced_secret, name, namespace)
        except ObjectGone:
            return None
        data = {k: base64.b64decode(v).decode('utf-8', 'replace') for k, v in (secret.data or {}).items()}
        data.update(secret.string_data or {})
        return data

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
