"""The outside world as the stages see it: one small interface per external system.

Stages (controller/pipeline) call only these interfaces, so they stay free of
git, Docker, boto3 and HTTP details. Real implementations live beside this
file, one module per system; tests hand in fakes through the same interfaces.
Every method here blocks: the engine calls stages in its worker pool.
"""
from __future__ import annotations

import dataclasses
import datetime
import pathlib
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

from controller.credentials import Credentials
from controller.egress import DeniedNetworks, GitHosts
from controller.models import BuildEngine, CodeBuild, PandaDeploySpec

LogLine = Callable[[str], None]

GiB, MiB = 1024 ** 3, 1024 ** 2


@dataclasses.dataclass(frozen=True)
class BuildLimits:
    """What one run's repository may cost the operator (a repository is a stranger's input); set on the
    operator (PANDA_DEPLOY_MAX_*, read by `controller.config`)."""
    checkout_bytes: int = 1 * GiB
    """The files of the commit checked out (from git's tree, before any is written)."""
    context_bytes: int = 512 * MiB
    """The build context as sent to the Docker engine (a tar, after .dockerignore)."""
    build_output_bytes: int = 64 * MiB
    """The build's output; past it the build is stopped."""


DEFAULT_LIMITS = BuildLimits()


@dataclasses.dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one push; never written to disk."""
    registry: str
    username: str = dataclasses.field(repr=False)
    password: str = dataclasses.field(repr=False)


class Git(Protocol):
    # `cancel` set: the engine abandoned the stage; git stops at once, its processes and all.
    def resolve(self, *, url: str, branch: str | None, revision: str | None, token: str | None,
                cancel: threading.Event | None = None) -> str:
        """The commit SHA that `branch` (or `revision`) names on the remote."""

    def checkout(self, *, url: str, revision: str, token: str | None, into: pathlib.Path,
                 cancel: threading.Event | None = None) -> None:
        """A shallow clone of exactly `revision` into the empty directory `into`."""


class Docker(Protocol):
    def build(self, *, context: pathlib.Path, dockerfile: str, tag: str, labels: Mapping[str, str],
              build_args: Mapping[str, str], log: LogLine, cancel: threading.Event) -> str:
        """Build and tag an image; returns its id."""

    def has_image(self, tag: str) -> bool: ...

    def push(self, *, tag: str, target: str, auth: RegistryAuth | None, log: LogLine) -> str:
        """Tag `tag` as `target` and push it; returns the pushed digest (sha256:…)."""


class Registry(Protocol):
    """ECR: the account, the repository and its images, and where and how an image is pushed."""
    def account_id(self) -> str: ...

    def ensure_repository(self, name: str) -> str:
        """The repository URI, creating the repository when missing."""

    def find_image(self, *, repository: str, tag: str) -> str | None:
        """The digest of `repository:tag`, or None."""

    def authorization(self) -> RegistryAuth:
        """Credentials for the push to `push_target`."""

    def push_target(self, *, repository_uri: str, tag: str) -> str:
        """Where `docker push` sends `tag` of the repository at `repository_uri`."""


@dataclasses.dataclass(frozen=True)
class ImageBuild:
    """One image for a remote builder to build from a build context and push: the same labels and build
    arguments as on the Docker engine, `target` as the Registry's `push_target` says."""
    run_id: str
    repository: str  # the ECR repository's name
    tag: str  # `image_tag`: names the image's identity (commit and build inputs)
    target: str  # where the build pushes: repository URI:tag (or the sandbox registry's)
    dockerfile: str = 'Dockerfile'  # relative to the context
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    build_args: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RemoteBuildState:
    """A remote build as one poll saw it (CodeBuild's words kept for messages)."""
    id: str
    status: str  # IN_PROGRESS, SUCCEEDED, FAILED, FAULT, TIMED_OUT, STOPPED
    phase: str | None = None  # the current phase (QUEUED, PROVISIONING, … BUILD, … COMPLETED)
    failed_phase: str | None = None  # the first phase that did not succeed
    failure: str | None = None  # what that phase said

    @property
    def ended(self) -> bool:
        return self.status != 'IN_PROGRESS'

    @property
    def succeeded(self) -> bool:
        return self.status == 'SUCCEEDED'


class RemoteBuilds(Protocol):
    """Builds that run elsewhere (AWS CodeBuild): the source is uploaded, the build pushes with its own role."""

    def find(self, *, build: ImageBuild) -> str | None:
        """The build started for `build.run_id` and its image (a status write lost to a restart), or None."""

    def start(self, *, build: ImageBuild, context: pathlib.Path, cancel: threading.Event | None = None) -> str:
        """Pack `context` (honouring .dockerignore, bounded), upload it, start the build; its id."""

    def get(self, build_id: str) -> RemoteBuildState: ...

    def log_tail(self, build_id: str) -> list[str]:
        """The last lines of the build's log (bounded), oldest first; [] when there is none yet."""

    def stop(self, build_id: str) -> None: ...

    def remove_source(self, build_id: str) -> None:
        """Delete the uploaded source of the build (once it ended)."""


@dataclasses.dataclass(frozen=True)
class ServiceState:
    cluster: str
    service: str
    created: bool
    blue_url: str | None = None
    green_url: str | None = None


class Ecs(Protocol):
    def register_task_definition(self, definition: Mapping[str, object]) -> tuple[str, bool]:
        """(ARN, registered): registers a new revision only when it differs from the latest active one."""

    def ensure_service(self, *, spec: PandaDeploySpec, task_definition_arn: str) -> ServiceState:
        """Create the service (CODE_DEPLOY controller) when missing; never update its task definition."""

    def running_task_definition(self, *, spec: PandaDeploySpec) -> str | None:
        """The task definition the service runs now, or None when there is no service."""


@dataclasses.dataclass(frozen=True)
class LifecycleEvent:
    name: str
    status: str  # Pending, InProgress, Succeeded, Failed, Skipped, Unknown

    @property
    def started(self) -> bool:
        """CodeDeploy has begun (or finished) this event: worth reporting."""
        return self.status != 'Pending'


@dataclasses.dataclass(frozen=True)
class DeploymentState:
    """A CodeDeploy deployment as one poll saw it.

    Stages ask the properties (`failed`, `replacement_ready`, …) rather than
    compare CodeDeploy's status words, which stay the adapter's business.
    """
    id: str
    status: str  # Created, Queued, InProgress, Ready, Succeeded, Failed, Stopped; shown in messages
    ready_for_traffic: bool = False
    events: tuple[LifecycleEvent, ...] = ()
    error: str | None = None
    # Production traffic already moved to the replacement (CodeDeploy waits to end the original, or is done).
    traffic_shifted: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status == 'Succeeded'

    @property
    def failed(self) -> bool:
        """Ended without success: CodeDeploy failed it, or it was stopped (by a rollback or by hand)."""
        return self.status in ('Failed', 'Stopped')

    @property
    def replacement_ready(self) -> bool:
        """The replacement task set can take traffic: CodeDeploy waits for us, or already finished."""
        return self.ready_for_traffic or self.succeeded

    @property
    def traffic_moved(self) -> bool:
        """Production traffic is on the replacement (or the deployment finished)."""
        return self.succeeded or self.traffic_shifted


class CodeDeploy(Protocol):
    def create_deployment(self, *, spec: PandaDeploySpec, task_definition_arn: str, run_id: str) -> str: ...

    def find_deployment(self, *, spec: PandaDeploySpec, run_id: str) -> str | None:
        """An open or finished deployment started for `run_id`, so no run starts a second."""

    def get_deployment(self, deployment_id: str) -> DeploymentState: ...

    def continue_deployment(self, deployment_id: str) -> None: ...

    def stop_deployment(self, deployment_id: str, *, rollback: bool) -> None: ...


@dataclasses.dataclass(frozen=True)
class ServiceRollout:
    """What stage 3 did to a service deployed by ECS itself (spec.rollout BlueGreen, Canary, Linear)."""
    cluster: str
    service: str
    created: bool  # the service was created now (which starts its first service deployment)
    started: bool  # a service deployment was started now (created, or updated to the task definition)
    deployment_arn: str | None = None  # the service deployment of the task definition: started now, or found


# ServiceDeploymentStatus values after which nothing more happens to a service deployment.
SERVICE_DEPLOYMENT_ENDED = frozenset({'SUCCESSFUL', 'STOPPED', 'ROLLBACK_SUCCESSFUL', 'ROLLBACK_FAILED'})
# Lifecycle stages after the operator's PAUSE hook (POST_TEST_TRAFFIC_SHIFT) was passed: production moves.
PAST_THE_GATE = frozenset({'PRODUCTION_TRAFFIC_SHIFT', 'POST_PRODUCTION_TRAFFIC_SHIFT', 'BAKE_TIME', 'CLEAN_UP'})


@dataclasses.dataclass(frozen=True)
class ServiceDeploymentState:
    """An ECS service deployment as one DescribeServiceDeployments saw it (ECS's words kept for messages)."""
    arn: str
    status: str  # PENDING, IN_PROGRESS, SUCCESSFUL, STOPPED, ROLLBACK_REQUESTED … ROLLBACK_FAILED
    lifecycle_stage: str | None = None
    status_reason: str | None = None
    paused_hook: str | None = None  # the hookId of a PAUSE hook AWAITING_ACTION
    hook_passed: bool = False  # a PAUSE hook of the current stage SUCCEEDED (continued)
    production_percent: float | None = None  # the new revision's share of production traffic
    replaced_by: str | None = None  # ended STOPPED because this (another) deployment replaced it

    @property
    def ended(self) -> bool:
        return self.status in SERVICE_DEPLOYMENT_ENDED

    @property
    def succeeded(self) -> bool:
        return self.status == 'SUCCESSFUL'

    @property
    def open(self) -> bool:
        """Started and not ending: a stop or rollback can still be asked for."""
        return self.status in ('PENDING', 'IN_PROGRESS')

    @property
    def past_gate(self) -> bool:
        """Production traffic is moving (or moved): the PAUSE hook was continued."""
        return self.succeeded or (self.status == 'IN_PROGRESS' and (
            self.lifecycle_stage in PAST_THE_GATE or (self.hook_passed and self.paused_hook is None)))


class EcsDeployments(Protocol):
    """ECS's own deployments: the service with its strategy and PAUSE hook, and its service deployments."""

    def deploy(self, *, spec: PandaDeploySpec, task_definition_arn: str, since: datetime.datetime | None,
               earlier: Collection[str] = ()) -> ServiceRollout:
        """Create the service with the strategy (its first deployment) or update it to the task definition (a
        new one); a deployment of that task definition created since `since` is found, never started again.
        `DeploymentControllerMismatch` for a service on another controller, before anything changes."""

    def find_deployment(self, *, spec: PandaDeploySpec, task_definition_arn: str, since: datetime.datetime | None,
                        earlier: Collection[str] = ()) -> str | None:
        """The newest service deployment of `task_definition_arn` created since `since` (the run's start, less
        a margin for clocks that differ), but none whose id (the ARN's last part) is in `earlier` (earlier runs'), or None."""

    def get(self, arn: str) -> ServiceDeploymentState: ...

    def continue_deployment(self, arn: str, *, hook_id: str, rollback: bool = False) -> None:
        """ContinueServiceDeployment at the PAUSE hook: CONTINUE, or ROLLBACK."""

    def stop(self, arn: str) -> None:
        """StopServiceDeployment with stopType ROLLBACK."""

    def explain(self, *, spec: PandaDeploySpec, state: ServiceDeploymentState) -> str:
        """ECS's own words on how a deployment ended: its statusReason, the service's newest events and the
        stopped tasks' stoppedReason."""


@dataclasses.dataclass(frozen=True)
class Traffic:
    active_color: str  # blue or green
    blue_url: str | None
    green_url: str | None

    @property
    def active_url(self) -> str | None:
        """The URL of the colour serving production."""
        return self.blue_url if self.active_color == 'blue' else self.green_url

    @property
    def standby_url(self) -> str | None:
        """The URL of the colour not serving production (the test listener's): where a deployment's
        replacement task set is reached before traffic shifts. Colours alternate between rollouts, so
        this is green only when blue is active."""
        return self.green_url if self.active_color == 'blue' else self.blue_url


class LoadBalancer(Protocol):
    """ELBv2: which target group serves production, and the URLs of both colours."""
    def traffic(self, *, spec: PandaDeploySpec) -> Traffic: ...


@dataclasses.dataclass(frozen=True)
class Probe:
    status: int | None
    seconds: float
    error: str | None = None
    denied: bool = False  # the URL's address is one the operator never connects to (PANDA_DEPLOY_HEALTH_CHECK_DENY)


class Http(Protocol):
    def get(self, url: str, *, timeout: float) -> Probe: ...


@dataclasses.dataclass
class Adapters:
    git: Git
    docker: Docker
    registry: Registry
    ecs: Ecs
    codedeploy: CodeDeploy
    loadbalancer: LoadBalancer
    http: Http
    ecs_deployments: EcsDeployments
    builds: RemoteBuilds | None = None  # set when this run builds on CodeBuild (spec.build, the operator's engine)


# Builds the adapters for one run from its spec and credentials (in a worker thread): what the engine calls.
AdapterFactory = Callable[[PandaDeploySpec, Credentials], Adapters]


@dataclasses.dataclass(frozen=True)
class AdapterSettings:
    """The operator's settings the adapters need, read once by `controller.config` and bound at start-up."""
    registry: str | None = None
    """PANDA_DEPLOY_REGISTRY: `host:port` of a plain OCI registry that receives pushes instead of ECR."""
    git_hosts: GitHosts = dataclasses.field(default_factory=GitHosts.default)
    """PANDA_DEPLOY_GIT_HOSTS: where a token may be sent."""
    health_check_deny: DeniedNetworks = dataclasses.field(default_factory=DeniedNetworks.default)
    """PANDA_DEPLOY_HEALTH_CHECK_DENY: networks a health check never connects to."""
    limits: BuildLimits = DEFAULT_LIMITS
    """PANDA_DEPLOY_MAX_*: what a repository may cost."""
    build_engine: BuildEngine | None = None
    """PANDA_DEPLOY_BUILD_ENGINE: the engine of every resource, or None (each spec's spec.build.engine)."""
    code_build: CodeBuild | None = None
    """PANDA_DEPLOY_CODEBUILD_*: CodeBuild settings for a resource without spec.build.codeBuild."""


class AdapterWiring(Protocol):
    """What PANDA_DEPLOY_ADAPTERS names (`module:function`): an `AdapterFactory` that also takes the
    operator's `AdapterSettings`, which `Config.adapter_factory` binds once at start-up. Fakes may ignore them.
    """
    def __call__(self, spec: PandaDeploySpec, credentials: Credentials, *,
                 settings: AdapterSettings | None = None) -> Adapters: ...
