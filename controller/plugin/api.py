"""The plugin's one way to the cluster: the Kubernetes API, configured as kubectl is (KUBECONFIG or
~/.kube/config, `--kubeconfig`, `--context`, the context's namespace). Nothing here reaches AWS or git.

Errors become `ApiError` with what was asked and the API server's answer, so the commands print one line and
exit 1; a missing resource says so as kubectl does.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from controller.models import GROUP, PLURAL, VERSION

REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read (a watch chunk ends sooner: WATCH_SECONDS)
WATCH_SECONDS = 10


class ApiError(Exception):
    """A call to the Kubernetes API failed; the message says which and why."""


@dataclasses.dataclass
class Cluster:
    """PandaDeploys and their Events in one cluster, as the kubeconfig's user sees them."""
    custom: Any
    core: Any
    namespace: str

    @classmethod
    def connect(cls, *, kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_kube_config(config_file=kubeconfig, context=context,
                                               client_configuration=configuration)
            _, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise ApiError(f'no usable kubeconfig: {exc}') from exc
        if context:
            contexts, _ = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)
            active = next((c for c in contexts if c.get('name') == context), active)
        default = ((active or {}).get('context') or {}).get('namespace') or 'default'
        client = kubernetes.client.ApiClient(configuration)
        return cls(custom=kubernetes.client.CustomObjectsApi(client), core=kubernetes.client.CoreV1Api(client),
                   namespace=namespace or default)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                raise ApiError(f'{what}: not found') from exc
            raise ApiError(f'{what}: HTTP {exc.status} {exc.reason}') from exc
        except Exception as exc:  # connection refused, timeouts: urllib3's own types
            raise ApiError(f'{what}: {type(exc).__name__}: {exc}') from exc

    def get(self, name: str) -> dict[str, Any]:
        what = f'pandadeploys.{GROUP} "{name}" in namespace {self.namespace}'
        found: dict[str, Any] = self._call(what, self.custom.get_namespaced_custom_object,
                                           GROUP, VERSION, self.namespace, PLURAL, name)
        return found

    def list_all(self, *, all_namespaces: bool) -> list[dict[str, Any]]:
        if all_namespaces:
            listed = self._call(f'list pandadeploys.{GROUP}', self.custom.list_cluster_custom_object,
                                GROUP, VERSION, PLURAL)
        else:
            listed = self._call(f'list pandadeploys.{GROUP} in namespace {self.namespace}',
                                self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL)
        items: list[dict[str, Any]] = listed.get('items') or []
        return items

    def annotate(self, name: str, annotations: Mapping[str, str]) -> dict[str, Any]:
        """A merge patch of metadata.annotations (what `kubectl annotate --overwrite` does)."""
        patched: dict[str, Any] = self._call(
            f'annotate pandadeploys.{GROUP} "{name}"', self.custom.patch_namespaced_custom_object,
            GROUP, VERSION, self.namespace, PLURAL, name, {'metadata': {'annotations': dict(annotations)}})
        return patched

    def events(self, name: str, uid: str) -> list[dict[str, Any]]:
        """The resource's Events, oldest first."""
        listed = self._call(f'list events of "{name}"', self.core.list_namespaced_event, self.namespace,
                            field_selector=f'involvedObject.name={name}')
        items = [self.core.api_client.sanitize_for_serialization(e) for e in listed.items]
        mine = [e for e in items if not uid or (e.get('involvedObject') or {}).get('uid') in (uid, None)]
        return sorted(mine, key=lambda e: int((e.get('metadata') or {}).get('resourceVersion') or 0))

    def changes(self, name: str, resource_version: str) -> Iterator[dict[str, Any]]:
        """The resource each time it changes after `resource_version`, for up to WATCH_SECONDS."""
        watch = kubernetes.watch.Watch()
        try:
            for event in watch.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                                      PLURAL, field_selector=f'metadata.name={name}',
                                      resource_version=resource_version, timeout_seconds=WATCH_SECONDS):
                if event.get('type') == 'DELETED':
                    raise ApiError(f'pandadeploys.{GROUP} "{name}" was deleted')
                if event.get('type') in ('ADDED', 'MODIFIED') and isinstance(event.get('object'), dict):
                    yield event['object']
        except ApiException as exc:
            if exc.status != 410:  # an expired resourceVersion: the caller reads the resource again
                raise ApiError(f'watch pandadeploys.{GROUP} "{name}": HTTP {exc.status} {exc.reason}') from exc
        finally:
            watch.stop()
