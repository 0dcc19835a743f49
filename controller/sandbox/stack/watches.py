"""The sample resource and its Events, watched through the Kubernetes API into the progress printer."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import kubernetes

from controller.models import GROUP, PLURAL, VERSION
from controller.sandbox.stack.manifests import NAME, NAMESPACE
from controller.sandbox.stack.progress import ProgressPrinter


class Watches:
    """The resource and its Events, watched through the Kubernetes API into the printer."""

    def __init__(self, api: kubernetes.client.ApiClient, printer: ProgressPrinter) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.printer = printer
        self._watches: list[kubernetes.watch.Watch] = []
        self._stopping = False

    def start(self) -> None:
        objects = self.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        self._spawn(self.printer.watched_object, self.custom.list_namespaced_custom_object,
                    GROUP, VERSION, NAMESPACE, PLURAL, field_selector=f'metadata.name={NAME}',
                    resource_version=objects['metadata']['resourceVersion'])
        events = self.core.list_namespaced_event(NAMESPACE)
        self._spawn(self.printer.watched_event, self.core.list_namespaced_event, NAMESPACE,
                    field_selector=f'involvedObject.name={NAME}', resource_version=events.metadata.resource_version)

    def stop(self) -> None:
        self._stopping = True
        for watch in self._watches:
            watch.stop()

    def _spawn(self, deliver: Callable[[dict[str, Any]], None], list_fn: Callable[..., Any], *args: Any,
               **kwargs: Any) -> None:
        watch = kubernetes.watch.Watch()
        self._watches.append(watch)

        def follow() -> None:
            try:
                for item in watch.stream(list_fn, *args, **kwargs):
                    if item['type'] in ('ADDED', 'MODIFIED'):
                        deliver(item.get('raw_object') or item['object'])
            except Exception as exc:  # noqa: BLE001 -- at the end, the server going away ends the stream
                if not self._stopping:
                    self.printer.note(f'[demo] The watch of {list_fn.__name__} ended: {type(exc).__name__}: {exc}')

        threading.Thread(target=follow, name='demo-watch', daemon=True).start()
