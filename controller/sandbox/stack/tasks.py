"""Tasks: one container per task definition, where ECS would run the service's tasks.

Why: moto runs no containers, so the health checks would reach nothing.
`TaskRunner` runs each task definition's image (pulled from the local
registry) as a container on the host network, each on its own port (`PORT`),
where on AWS each task would have its own address. Every container carries
`LABEL=1` and `LABEL.pid=<pid of the process that started it>`, so that a
stack that was killed can be cleaned up by the next one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time

import docker
import docker.errors
import docker.models.containers

from controller.sandbox.stack import localdocker
from controller.sandbox.stack.progress import ProgressPrinter

LABEL = 'dev.panda.deploy.demo'  # on every container the demo starts: LABEL=1, LABEL.pid=<demo pid>


@dataclasses.dataclass
class Task:
    container: docker.models.containers.Container
    port: int


class TaskRunner:
    """Runs what ECS would: the image of a task definition, as a local container on the host network.

    Its `start` and `stop` have the signature of `AwsSandbox`'s `on_green_task_set` and
    `on_cleanup` callbacks. The task definition names the ECR image; the container runs the
    same repository and tag from the local registry the operator pushed to.
    """

    def __init__(self, *, client: docker.DockerClient, registry: str, printer: ProgressPrinter) -> None:
        self.client = client
        self.registry = registry
        self.printer = printer
        self.labels = {LABEL: '1', f'{LABEL}.pid': str(os.getpid())}
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()

    def start(self, task_definition_arn: str, image: str, container_port: int) -> int:
        """The host port of the task definition's container, started (and answering) if it was not."""
        with self._lock:
            if (task := self._tasks.get(task_definition_arn)) is not None:
                return task.port
            task = self._run(task_definition_arn, self.local_image(image), container_port)
            self._tasks[task_definition_arn] = task
        self.printer.note(f'[sandbox] Task definition {_short_arn(task_definition_arn)}: container '
                          f'{task.container.name} serves on 127.0.0.1:{task.port} (container port {container_port})')
        return task.port

    def stop(self, task_definition_arn: str, image: str = '', container_port: int = 0) -> None:
        with self._lock:
            task = self._tasks.pop(task_definition_arn, None)
        if task is not None:
            _remove(task.container)
            self.printer.note(f'[sandbox] Task definition {_short_arn(task_definition_arn)}: '
                              f'container {task.container.name} removed')

    def port_of(self, task_definition_arn: str) -> int | None:
        with self._lock:
            task = self._tasks.get(task_definition_arn)
            return task.port if task else None

    def remove_orphans(self) -> int:
        """Remove containers of earlier demos that were killed before they could clean up."""
        orphans = [c for c in self.client.containers.list(all=True, filters={'label': f'{LABEL}=1'})
                   if not _alive(int(c.labels.get(f'{LABEL}.pid') or 0))]
        for container in orphans:
            _remove(container)
        return len(orphans)

    def stop_all(self) -> None:
        """Remove every container this demo started (by label, so none escapes)."""
        with self._lock:
            self._tasks.clear()
        found = self.client.containers.list(all=True, filters={'label': [f'{k}={v}' for k, v in self.labels.items()]})
        for container in found:
            _remove(container)

    def local_image(self, image: str) -> str:
        """`ACCOUNT.dkr.ecr.REGION.amazonaws.com/repo:tag` -> `REGISTRY/repo:tag` (as the operator pushed it)."""
        if '.dkr.ecr.' in image.split('/', 1)[0]:
            return f'{self.registry}/{image.split("/", 1)[1]}'
        return image

    def _run(self, task_definition_arn: str, image: str, container_port: int) -> Task:
        port = localdocker.free_port()
        family_revision = _short_arn(task_definition_arn).replace(':', '-')
        container = self.client.containers.run(
            image, detach=True, network_mode='host', environment={'PORT': str(port)}, labels=self.labels,
            name=f'panda-demo-{os.getpid()}-{family_revision}')
        deadline = time.monotonic() + 20
        while localdocker.answers(f'http://127.0.0.1:{port}/') is None:
            container.reload()
            if container.status == 'exited' or time.monotonic() > deadline:
                logs = container.logs(tail=20).decode(errors='replace')
                _remove(container)
                raise RuntimeError(f'container for {task_definition_arn} did not answer on port {port}: {logs}')
            time.sleep(0.1)
        return Task(container=container, port=port)


def _remove(container: docker.models.containers.Container) -> None:
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        container.remove(force=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _short_arn(arn: str) -> str:
    """`family:revision` of a task definition ARN."""
    return arn.rsplit('/', 1)[-1]
