"""The operator's default adapters: the real git, Docker engine, AWS and HTTP, for one run.

`make_adapters` is the `AdapterWiring` that `controller.config` names by
default (PANDA_DEPLOY_ADAPTERS overrides it; tests put fakes there). It runs
in a worker thread at a run's first stage and calls nothing remote: each
adapter connects on first use, so a run that finds its image in ECR needs no
Docker engine.

Here, and only here, the registry is chosen: ECR, or with `settings.registry`
(PANDA_DEPLOY_REGISTRY) the plain registry of
`controller.adapters.plain_registry`, whose pushes are recorded in ECR.
"""
from __future__ import annotations

from controller.adapters import Adapters, AdapterSettings, Docker, Registry
from controller.adapters.aws import session_for
from controller.adapters.codebuild import CodeBuildBuilds
from controller.adapters.codedeploy import CodeDeployDeployments
from controller.adapters.docker import DockerEngine
from controller.adapters.ecr import EcrRegistry
from controller.adapters.ecs import EcsService
from controller.adapters.ecs_deployments import EcsServiceDeployments
from controller.adapters.elbv2 import ListenerTraffic
from controller.adapters.git import GitRepository
from controller.adapters.http import HttpProbe
from controller.adapters.plain_registry import PlainRegistry, PushRecorder
from controller.credentials import Credentials
from controller.errors import Reason, StageFailed
from controller.models import PandaDeploySpec, code_build_for


def make_adapters(spec: PandaDeploySpec, credentials: Credentials, *,
                  settings: AdapterSettings | None = None) -> Adapters:
    """The real adapters for a run of `spec` with `credentials`; pushes go to `settings.registry` when set, else ECR."""
    settings = settings or AdapterSettings()
    session = session_for(spec.aws, credentials)
    limits = settings.limits
    engine = DockerEngine(max_context_bytes=limits.context_bytes, max_output_bytes=limits.build_output_bytes)
    images: Registry
    docker: Docker
    if settings.registry is None:
        images, docker = EcrRegistry(session=session, credentials=credentials), engine
    else:
        plain = PlainRegistry(address=settings.registry, session=session, credentials=credentials)
        images, docker = plain, PushRecorder(docker=engine, registry=plain)
    try:  # the engine is chosen here: the operator's (PANDA_DEPLOY_BUILD_ENGINE), else the spec's
        code_build = code_build_for(spec.build, engine=settings.build_engine, default=settings.code_build)
    except ValueError as exc:
        raise StageFailed(str(exc), reason=Reason.INVALID_SPEC) from None
    builds = None if code_build is None else CodeBuildBuilds(
        settings=code_build, region=spec.aws.region, max_context_bytes=limits.context_bytes, session=session,
        credentials=credentials)
    return Adapters(
        git=GitRepository(token_hosts=settings.git_hosts, max_checkout_bytes=limits.checkout_bytes),
        docker=docker,
        registry=images,
        ecs=EcsService(session=session, credentials=credentials),
        codedeploy=CodeDeployDeployments(session=session, credentials=credentials),
        loadbalancer=ListenerTraffic(session=session, credentials=credentials),
        http=HttpProbe(denied=settings.health_check_deny),
        ecs_deployments=EcsServiceDeployments(session=session, credentials=credentials),
        builds=builds,
    )
