"""`spec.build`: where the image is built (`kubectl explain pd.spec.build`).

`docker` (the default) builds on the Docker engine beside the operator.
`codeBuild` uploads the packed build context to S3 and builds in AWS
CodeBuild, each build on its own machine, pushing to ECR with the project's
own service role: no Docker engine in the cluster, and no operator or GitHub
credential in the build. The operator either starts builds in a project a
platform team manages (`project`) or creates and updates one per ECR
repository itself (needs `serviceRoleArn`). An operator may force one engine
for every resource (PANDA_DEPLOY_BUILD_ENGINE, read by `controller.config`).
"""
from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from controller.models.base import _ARN_LENGTH, _ROLE_ARN, Model

# CodeBuild's own patterns: a project name, and an S3 bucket name (DNS-compatible, 3-63 characters).
_PROJECT = r'^[A-Za-z0-9][A-Za-z0-9_-]{1,254}$'
_BUCKET = r'^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$'
_BUILD_IMAGE = r'^[A-Za-z0-9][A-Za-z0-9./:@_-]{0,254}$'
MIN_TIMEOUT_MINUTES, MAX_TIMEOUT_MINUTES = 5, 2160  # CodeBuild's bounds for timeoutInMinutes


class BuildEngine(str, enum.Enum):
    docker = 'docker'
    code_build = 'codeBuild'


# The Linux compute types that run a privileged (Docker) build; Lambda compute cannot run Docker.
ComputeType = Literal['BUILD_GENERAL1_SMALL', 'BUILD_GENERAL1_MEDIUM', 'BUILD_GENERAL1_LARGE',
                      'BUILD_GENERAL1_XLARGE', 'BUILD_GENERAL1_2XLARGE']


class CodeBuild(Model):
    """The CodeBuild project a build runs in, and where its source is uploaded."""
    project: Annotated[str | None, Field(pattern=_PROJECT, max_length=255)] = None
    """An existing project (managed by the platform team) to start builds in; the operator overrides source, buildspec and environment per build and never changes the project. Absent: the operator creates and updates its own project, panda-deploy-<ECR repository>, which needs serviceRoleArn."""
    service_role_arn: Annotated[str | None, Field(pattern=_ROLE_ARN, max_length=_ARN_LENGTH)] = None
    """The role the build runs as (trusts codebuild.amazonaws.com; pushes to the ECR repository, reads the source object, writes its logs). Required when the operator manages the project."""
    compute_type: ComputeType = 'BUILD_GENERAL1_SMALL'
    """CodeBuild compute type of a build (Linux, privileged for Docker)."""
    image: Annotated[str, Field(pattern=_BUILD_IMAGE, max_length=255)] = 'aws/codebuild/standard:7.0'
    """The build environment's image (it must hold the docker CLI and the AWS CLI)."""
    source_bucket: Annotated[str | None, Field(pattern=_BUCKET, max_length=63)] = None
    """S3 bucket that receives the packed build context (deleted after the build). Absent: panda-deploy-builds-<account>-<region>, which the operator creates when missing with a rule that expires sources after a day."""
    timeout_minutes: Annotated[int, Field(ge=MIN_TIMEOUT_MINUTES, le=MAX_TIMEOUT_MINUTES, strict=True)] = 60
    """CodeBuild's own limit on one build; the stage timeout (spec.timeouts) also stops it."""


class Build(Model):
    """Where the image is built: the Docker engine beside the operator, or AWS CodeBuild."""
    engine: BuildEngine = BuildEngine.docker
    """docker (default) or codeBuild. An operator may force one for every resource."""
    code_build: CodeBuild | None = None
    """CodeBuild settings; required with engine codeBuild."""

    @model_validator(mode='after')
    def _code_build_settings(self) -> Build:
        if self.engine == BuildEngine.code_build:
            problem = code_build_problem(self.code_build)
            if problem:
                raise ValueError(problem)
        elif self.code_build is not None:
            raise ValueError('spec.build.codeBuild configures engine codeBuild; set spec.build.engine: codeBuild '
                             'or remove it')
        return self


def code_build_problem(settings: CodeBuild | None) -> str | None:
    """Why `settings` cannot build on CodeBuild (a spec the operator forces onto CodeBuild too), or None."""
    if settings is None:
        return ('spec.build.codeBuild is required with engine codeBuild: name a project (project) or the role of '
                'a project the operator manages (serviceRoleArn)')
    if settings.project is None and settings.service_role_arn is None:
        return ('spec.build.codeBuild.serviceRoleArn is required when the operator manages the CodeBuild project '
                '(spec.build.codeBuild.project not set)')
    return None


def code_build_for(build: Build, *, engine: BuildEngine | None, default: CodeBuild | None) -> CodeBuild | None:
    """The CodeBuild settings a resource builds with, or None for the Docker engine.

    `engine`: the operator's (PANDA_DEPLOY_BUILD_ENGINE), which wins over the spec's; `default`: the operator's
    CodeBuild settings, for a resource without spec.build.codeBuild. ValueError when it must build on CodeBuild
    and neither says how."""
    if (engine or build.engine) != BuildEngine.code_build:
        return None
    settings = build.code_build or default
    problem = code_build_problem(settings)
    if problem:
        raise ValueError(f'this operator builds every image on CodeBuild (PANDA_DEPLOY_BUILD_ENGINE): {problem}')
    return settings
