"""The operator's default adapters: the real git, Docker engine, AWS and HTTP, for one run.

`make_adapters` is the `AdapterFactory` that `controller.config` names by
default (PANDA_DEPLOY_ADAPTERS overrides it; tests put fakes there). It runs
in a worker thread at a run's first stage and calls nothing remote: each
adapter connects on first use, so a run that finds its image in ECR needs no
Docker engine.
"""
from __future__ import annotations

import pathlib
import threading
from collections.abc import Mapping

from controller.adapters import Adapters, Docker, LogLine, RegistryAuth
from controller.adapters.aws import session_for
from controller.adapters.codedeploy import CodeDeployDeployments
from controller.adapters.docker import DockerEngine
from controller.adapters.ecr import EcrRegistry, sandbox_registry
from controller.adapters.ecs import EcsService
from controller.adapters.elbv2 import ListenerTraffic
from controller.adapters.git import GitRepository
from controller.adapters.http import HttpProbe
from controller.credentials import Credentials
from controller.models import PandaDeploySpec


def make_adapters(spec: PandaDeploySpec, credentials: Credentials) -> Adapters:
    """The real adapters for a run of `spec` with `credentials`."""
    session = session_for(spec.aws, credentials)
    registry = EcrRegistry(session=session, credentials=credentials)
    docker: Docker = DockerEngine()
    if sandbox_registry() is not None:
        docker = SandboxPushRecorder(docker=docker, registry=registry)
    return Adapters(
        git=GitRepository(),
        docker=docker,
        registry=registry,
        ecs=EcsService(session=session, credentials=credentials),
        codedeploy=CodeDeployDeployments(session=session, credentials=credentials),
        loadbalancer=ListenerTraffic(session=session, credentials=credentials),
        http=HttpProbe(),
    )


class SandboxPushRecorder:
    """With PANDA_DEPLOY_REGISTRY: after each push, registers the pushed manifest in ECR.

    moto's ECR never sees a push to the plain registry, so the image is
    recorded through ECR PutImage (`EcrRegistry.record_sandbox_push`); the
    Build stage's `find_image` then finds the tag and a re-run skips the build.
    Everything else goes straight to the Docker adapter.
    """

    def __init__(self, *, docker: Docker, registry: EcrRegistry) -> None:
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
        self._registry.record_sandbox_push(target=target, digest=digest)
        log(f'Recorded {target} ({digest}) in ECR for the sandbox registry')
        return digest
