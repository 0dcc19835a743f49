"""The operator's default adapters: the real git, Docker engine and AWS, for one run.

`make_adapters` is the `AdapterFactory` that `controller.config` names by
default (PANDA_DEPLOY_ADAPTERS overrides it; tests put fakes there). It runs
in a worker thread at a run's first stage and calls nothing remote: each
adapter connects on first use, so a run that finds its image in ECR needs no
Docker engine.

The ECS, CodeDeploy, ELBv2 and HTTP adapters arrive with issue 4; `LATER_ADAPTERS`
names the module and class of each (AWS ones are built with
`(session=, credentials=)`, the HTTP one with no arguments). Until a module
or its class exists, `NotAvailable` stands in: every call fails the stage
with a message saying so, rather than pretending to deploy.
"""
from __future__ import annotations

import importlib
import importlib.util
import pathlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import boto3.session

from controller.adapters import Adapters, Docker, LogLine, RegistryAuth
from controller.adapters.aws import session_for
from controller.adapters.docker import DockerEngine
from controller.adapters.ecr import EcrRegistry, sandbox_registry
from controller.adapters.http import HttpProbe
from controller.config import Config
from controller.credentials import Credentials
from controller.errors import Reason, StageFailed
from controller.models import PandaDeploySpec

# Adapters attribute -> (module, class, system name, built with the AWS session?), delivered by issue 4.
LATER_ADAPTERS: dict[str, tuple[str, str, str, bool]] = {
    'ecs': ('controller.adapters.ecs', 'EcsService', 'ECS', True),
    'codedeploy': ('controller.adapters.codedeploy', 'CodeDeployDeployments', 'CodeDeploy', True),
    'loadbalancer': ('controller.adapters.elbv2', 'ListenerTraffic', 'ELBv2', True),
    'http': ('controller.adapters.http', 'HttpProbe', 'HTTP', False),
}


def make_adapters(spec: PandaDeploySpec, credentials: Credentials) -> Adapters:
    """The real adapters for a run of `spec` with `credentials`."""
    from controller.adapters.git import GitRepository  # written alongside; imported when a run needs it

    session = session_for(spec.aws, credentials)
    registry = EcrRegistry(session=session, credentials=credentials)
    docker: Docker = DockerEngine()
    if sandbox_registry() is not None:
        docker = SandboxPushRecorder(docker=docker, registry=registry)
    later = {name: _later_adapter(module, cls, system, session=session if aws else None, credentials=credentials)
             for name, (module, cls, system, aws) in LATER_ADAPTERS.items()}
    egress = Config.from_env()  # issue 12: PANDA_DEPLOY_GIT_HOSTS and PANDA_DEPLOY_HEALTH_CHECK_DENY
    later['http'] = HttpProbe(denied=egress.health_check_deny)
    return Adapters(git=GitRepository(token_hosts=egress.git_hosts), docker=docker, registry=registry, **later)


def _later_adapter(module: str, cls: str, system: str, *, session: boto3.session.Session | None,
                   credentials: Credentials) -> Any:
    """`module.cls(session=, credentials=)` (or `module.cls()` without a session) when it exists,
    else `NotAvailable(system)`."""
    if importlib.util.find_spec(module) is None:
        return NotAvailable(system)
    factory: Callable[..., Any] | None = getattr(importlib.import_module(module), cls, None)
    if factory is None:
        return NotAvailable(system, detail=f'{module} has no {cls}')
    if session is None:
        return factory()
    return factory(session=session, credentials=credentials)


class NotAvailable:
    """Stands in for an adapter not written yet: every method fails the stage, saying which."""

    def __init__(self, system: str, *, detail: str = '') -> None:
        self.system = system
        self.detail = detail

    def __getattr__(self, name: str) -> Callable[..., NoReturn]:
        if name.startswith('__'):
            raise AttributeError(name)

        def unavailable(*args: object, **kwargs: object) -> NoReturn:
            text = f'{self.system} adapter is not implemented yet (issue 4)'
            raise StageFailed(f'{text}: {self.detail}' if self.detail else text, reason=Reason.UNEXPECTED_ERROR)
        return unavailable

    def __repr__(self) -> str:
        return f'NotAvailable({self.system!r})'


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
