"""The PandaDeploy resource: spec and status as pydantic models.

These models are the one source of truth for the resource's shape: the CRD in
``crds/`` is generated from them (see :mod:`controller.crd`), the operator
validates every spec through them once at the edge, and the status it writes
is serialised from them. Field descriptions become ``kubectl explain`` text.
"""
from __future__ import annotations

import datetime
import enum
import re
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from controller.errors import MESSAGE_LIMIT, cap_message

GROUP = 'deploy.panda.dev'
VERSION = 'v1alpha1'
KIND = 'PandaDeploy'
PLURAL = 'pandadeploys'
SINGULAR = 'pandadeploy'
SHORT_NAMES = ('pd',)
API_VERSION = f'{GROUP}/{VERSION}'

# Kubernetes object names (DNS-1123 subdomain) and Secret keys.
_DNS_NAME = r'^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$'
_SECRET_KEY = r'^[-._a-zA-Z0-9]+$'
_GITHUB_REPO = r'^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$'
# A user name may appear (ssh://git@host/...), a password may not: tokens belong in tokenSecretRef.
_GIT_URL = r'^(https?|file|ssh|git)://(?:[^/:@\s]+@)?[^\s@\x00-\x1f\x7f]+$'
_SHA = r'^[0-9a-f]{7,40}$'
_BRANCH = r'^[^\s~^:?*\[\\\x00-\x1f\x7f]+$'
_ECR_REPO = r'^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$'
_ECR_REPO_LENGTH = (2, 256)
_AWS_REGION = r'^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$'
_ROLE_ARN = r'^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$'
_HTTP_URL = r'^https?://[^\s\x00-\x1f\x7f]+$'
# Free text that reaches files, AWS names, logs and terminals: no control characters.
_TEXT = r'^[^\x00-\x1f\x7f]*$'


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields refused, names in Python."""
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra='forbid',
        use_attribute_docstrings=True,
        validate_assignment=True,
    )

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase keys, no unset or None values."""
        return self.model_dump(mode='json', by_alias=True, exclude_none=True)


# ----------------------------------------------------------------------------
# Spec
# ----------------------------------------------------------------------------

class SecretKeyRef(Model):
    """A key of a Secret in the resource's namespace."""
    name: Annotated[str, Field(pattern=_DNS_NAME, max_length=253)]
    """Name of the Secret, in the same namespace as the PandaDeploy."""
    key: Annotated[str, Field(pattern=_SECRET_KEY, max_length=253)] = 'token'
    """Key within the Secret's data that holds the value."""


class SecretRef(Model):
    """A Secret in the resource's namespace."""
    name: Annotated[str, Field(pattern=_DNS_NAME, max_length=253)]
    """Name of the Secret, in the same namespace as the PandaDeploy."""


class Source(Model):
    """Where the code comes from: a GitHub repository or any git URL."""
    repo: Annotated[str | None, Field(pattern=_GITHUB_REPO, max_length=200)] = None
    """GitHub shorthand owner/name, cloned from https://github.com/owner/name.git. Exactly one of repo and url."""
    url: Annotated[str | None, Field(pattern=_GIT_URL, max_length=2048)] = None
    """Any git URL (https, http, file, ssh). Exactly one of repo and url."""
    branch: Annotated[str | None, Field(pattern=_BRANCH, max_length=255)] = None
    """Branch to deploy; resolved to a commit before cloning. Default: main (when revision is not set)."""
    revision: Annotated[str | None, Field(pattern=_SHA)] = None
    """A commit SHA to deploy instead of a branch head."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a GitHub token for private repositories."""
    dockerfile: Annotated[str | None, Field(pattern=_TEXT, max_length=1024)] = None
    """Path of the Dockerfile inside the repository. Default: discover it."""
    context: Annotated[str | None, Field(pattern=_TEXT, max_length=1024)] = None
    """Build context inside the repository. Default: the Dockerfile's directory."""
    build_args: Annotated[dict[str, Annotated[str, Field(max_length=4096)]] | None, Field(max_length=64)] = None
    """Docker build arguments."""

    @model_validator(mode='after')
    def _one_location(self) -> Source:
        if (self.repo is None) == (self.url is None):
            raise ValueError('exactly one of spec.source.repo and spec.source.url must be set')
        if self.branch is not None and self.revision is not None:
            raise ValueError('at most one of spec.source.branch and spec.source.revision may be set')
        for field in ('dockerfile', 'context'):
            value = getattr(self, field)
            if value is not None and (value.startswith('/') or '..' in value.split('/')):
                raise ValueError(f'spec.source.{field} must be a relative path inside the repository')
        return self

    @property
    def effective_branch(self) -> str | None:
        return None if self.revision else (self.branch or 'main')

    @property
    def clone_url(self) -> str:
        return self.url if self.url else f'https://github.com/{self.repo}.git'

    @property
    def owner_repo(self) -> tuple[str, str]:
        """(owner, name) of the repository, from the shorthand or the URL's last two parts."""
        if self.repo:
            owner, name = self.repo.split('/', 1)
            return owner, name
        assert self.url is not None
        parts = [p for p in re.split(r'[/:]', self.url.rstrip('/')) if p]
        name = parts[-1].removesuffix('.git') if parts else 'repo'
        owner = parts[-2] if len(parts) >= 2 else 'local'
        return owner, name


class Aws(Model):
    """AWS account access for ECR, ECS and CodeDeploy."""
    region: Annotated[str, Field(pattern=_AWS_REGION)]
    """AWS region, e.g. ap-northeast-2."""
    credentials_secret_ref: SecretRef | None = None
    """Secret with accessKeyId, secretAccessKey and optional sessionToken. Absent: the default credential chain (IRSA)."""
    role_arn: Annotated[str | None, Field(pattern=_ROLE_ARN)] = None
    """IAM role to assume with the base credentials."""


class Image(Model):
    """The ECR repository that receives the image."""
    repository: Annotated[str | None, Field(pattern=_ECR_REPO, min_length=2, max_length=256)] = None
    """ECR repository name. Default: owner-repo of the source, lowercased."""


class Networking(Model):
    """awsvpc networking for the service's tasks."""
    subnets: Annotated[list[Annotated[str, Field(pattern=r'^subnet-[0-9a-f]+$')]], Field(max_length=16)] = []
    """Subnet ids for the tasks."""
    security_groups: Annotated[list[Annotated[str, Field(pattern=r'^sg-[0-9a-f]+$')]], Field(max_length=5)] = []
    """Security group ids for the tasks."""
    assign_public_ip: bool = False
    """Give tasks a public IP."""


class Ecs(Model):
    """The ECS service that runs the image."""
    cluster: Annotated[str, Field(pattern=r'^[A-Za-z0-9_-]{1,255}$')] = 'panda-cluster'
    """ECS cluster name."""
    service: Annotated[str, Field(pattern=r'^[A-Za-z0-9_-]{1,255}$')] = 'panda-service'
    """ECS service name."""
    container_name: Annotated[str, Field(pattern=r'^[A-Za-z0-9_-]{1,255}$')] = 'app'
    """Name of the container in the task definition."""
    container_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    """Port the container listens on."""
    cpu: Annotated[str, Field(pattern=r'^[0-9]+$')] = '256'
    """Task CPU units."""
    memory: Annotated[str, Field(pattern=r'^[0-9]+$')] = '512'
    """Task memory in MiB."""
    desired_count: Annotated[int, Field(ge=0, le=1000)] = 1
    """Number of tasks."""
    launch_type: Literal['FARGATE', 'EC2'] = 'FARGATE'
    """ECS launch type."""
    execution_role_arn: Annotated[str | None, Field(pattern=_ROLE_ARN)] = None
    """Task execution role (pulls the image, writes logs)."""
    task_role_arn: Annotated[str | None, Field(pattern=_ROLE_ARN)] = None
    """Role the application's code runs as."""
    networking: Networking | None = None
    """awsvpc networking."""


class Hooks(Model):
    """CodeDeploy lifecycle hook Lambda functions."""
    before_allow_traffic: Annotated[str | None, Field(pattern=_TEXT, max_length=256)] = None
    """Lambda function run before production traffic shifts to green."""
    after_allow_traffic: Annotated[str | None, Field(pattern=_TEXT, max_length=256)] = None
    """Lambda function run after production traffic shifted to green."""


class CodeDeploy(Model):
    """The CodeDeploy application and deployment group that switch traffic."""
    application: Annotated[str, Field(pattern=_TEXT, min_length=1, max_length=100)] = 'panda-app'
    """CodeDeploy application name."""
    deployment_group: Annotated[str, Field(pattern=_TEXT, min_length=1, max_length=100)] = 'panda-dg'
    """CodeDeploy deployment group name."""
    deployment_config: Annotated[str, Field(pattern=_TEXT, min_length=1,
                                            max_length=100)] = 'CodeDeployDefault.ECSAllAtOnce'
    """CodeDeploy deployment configuration."""
    service_role_arn: Annotated[str | None, Field(pattern=_ROLE_ARN)] = None
    """Role CodeDeploy uses; needed only when the operator creates the deployment group."""


_LISTENER_ARN = r'^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:listener/.+$'
_TARGET_GROUP_ARN = r'^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup/.+$'


class LoadBalancer(Model):
    """The load balancer CodeDeploy switches: needed when the service or deployment group must be created."""
    production_listener_arn: Annotated[str, Field(pattern=_LISTENER_ARN)]
    """Listener that serves production traffic."""
    test_listener_arn: Annotated[str | None, Field(pattern=_LISTENER_ARN)] = None
    """Listener that reaches the replacement task set before traffic shifts (health checks use it)."""
    blue_target_group_arn: Annotated[str, Field(pattern=_TARGET_GROUP_ARN)]
    """First target group of the pair ("blue"); the service starts on it."""
    green_target_group_arn: Annotated[str, Field(pattern=_TARGET_GROUP_ARN)]
    """Second target group of the pair ("green")."""


class Promotion(str, enum.Enum):
    auto = 'auto'
    manual = 'manual'


class BlueGreen(Model):
    """The Blue/Green switch."""
    code_deploy: CodeDeploy = CodeDeploy()
    """CodeDeploy application, deployment group and config."""
    promotion: Promotion = Promotion.auto
    """auto: shift traffic once green passes its checks; manual: also wait for the deploy.panda.dev/promote annotation."""
    hooks: Hooks | None = None
    """Lifecycle hook functions."""
    load_balancer: LoadBalancer | None = None
    """Listeners and target groups; read from the deployment group when it exists."""


class HealthCheck(Model):
    """Checks that green must pass before it gets production traffic."""
    url: Annotated[str | None, Field(pattern=_HTTP_URL, max_length=2048)] = None
    """Full URL to check. Default: the test listener's URL plus path."""
    path: Annotated[str, Field(pattern=r'^/[^\s\x00-\x1f\x7f]*$', max_length=1024)] = '/'
    """Path to check on green."""
    checks: Annotated[int, Field(ge=1, le=100)] = 5
    """Number of checks that must all pass."""
    interval_seconds: Annotated[int, Field(ge=0, le=300)] = 5
    """Seconds between checks."""
    timeout_seconds: Annotated[int, Field(ge=1, le=120)] = 5
    """Timeout of one check."""
    expected_status: Annotated[int, Field(ge=100, le=599)] = 200
    """HTTP status a check must get."""


_DURATION = r'^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$'
_DURATION_UNITS = {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600}


def duration_seconds(value: int | str) -> float:
    """Seconds of an integer or a Go-style duration such as '10m' or '1h30m'."""
    if isinstance(value, int):
        return float(value)
    return sum(float(n) * _DURATION_UNITS[u] for n, u in re.findall(r'([0-9.]+)(ms|s|m|h)', value))


_MAX_DURATION_SECONDS = 7 * 86400
Duration = Annotated[
    Annotated[int, Field(ge=1, le=_MAX_DURATION_SECONDS)] | Annotated[str, Field(pattern=_DURATION, max_length=32)],
    Field(json_schema_extra={'x-kubernetes-int-or-string': True}),
]


class Timeouts(Model):
    """Limits on how long a run may take: seconds, or a duration such as 10m, 1h30m."""
    stage_seconds: Duration = 600
    """Limit for one stage: seconds, or a duration with unit ms, s, m or h."""
    total_seconds: Duration = 1800
    """Limit for the whole run: seconds, or a duration with unit ms, s, m or h."""

    @model_validator(mode='after')
    def _positive(self) -> Timeouts:
        for field in ('stage_seconds', 'total_seconds'):
            seconds = duration_seconds(getattr(self, field))
            if not 1 <= seconds <= _MAX_DURATION_SECONDS:
                raise ValueError(f'spec.timeouts.{to_camel(field)} must be between 1 second and 7 days')
        return self

    @property
    def stage(self) -> float:
        return duration_seconds(self.stage_seconds)

    @property
    def total(self) -> float:
        return duration_seconds(self.total_seconds)


class PandaDeploySpec(Model):
    """What to deploy and where."""
    source: Source
    """The git repository to build."""
    aws: Aws
    """AWS region and credentials."""
    image: Image = Image()
    """Target ECR repository."""
    ecs: Ecs = Ecs()
    """Target ECS service."""
    blue_green: BlueGreen = BlueGreen()
    """CodeDeploy Blue/Green switch."""
    health_check: HealthCheck = HealthCheck()
    """Health checks gating the traffic switch."""
    timeouts: Timeouts = Timeouts()
    """Stage and total time limits."""
    history_limit: Annotated[int, Field(ge=0, le=100)] = 10
    """How many past runs status.history keeps."""
    suspend: bool = False
    """Stop starting new runs (a run in flight finishes)."""

    @model_validator(mode='after')
    def _derived_repository_name(self) -> PandaDeploySpec:
        """A name derived from the source that ECR would refuse is the spec's fault: say so before any AWS call."""
        if self.image.repository is None:
            name = self.repository_name
            low, high = _ECR_REPO_LENGTH
            if not (low <= len(name) <= high and re.match(_ECR_REPO, name)):
                origin = 'spec.source.repo' if self.source.repo else 'spec.source.url'
                raise ValueError(f'spec.image.repository must be set: the name derived from {origin}, {name!r}, '
                                 f'is not a valid ECR repository name ({low}-{high} lowercase letters and digits, '
                                 "separated by single '.', '_', '-' or '/'); set spec.image.repository")
        return self

    @property
    def repository_name(self) -> str:
        if self.image.repository:
            return self.image.repository
        owner, name = self.source.owner_repo
        raw = f'{owner}-{name}'.lower()
        cleaned = re.sub(r'[^a-z0-9._-]+', '-', raw).strip('-._')
        return cleaned or 'panda-app'


# ----------------------------------------------------------------------------
# Status
# ----------------------------------------------------------------------------

HISTORY_MESSAGE_LIMIT = 256
"""Characters of a history entry's message: up to 100 entries, each a summary (the full one is in `message`)."""


def _capped(limit: int) -> BeforeValidator:
    return BeforeValidator(lambda value: cap_message(value, limit) if isinstance(value, str) else value)


# Messages (often a stranger's text: build output, a server's error) capped on assignment too, so that no
# path around `PandaDeployError` can grow the status; the CRD says the same with maxLength.
Message = Annotated[str, _capped(MESSAGE_LIMIT), Field(max_length=MESSAGE_LIMIT)]
HistoryMessage = Annotated[str, _capped(HISTORY_MESSAGE_LIMIT), Field(max_length=HISTORY_MESSAGE_LIMIT)]

class Phase(str, enum.Enum):
    pending = 'Pending'
    progressing = 'Progressing'
    succeeded = 'Succeeded'
    failed = 'Failed'


class StageName(str, enum.Enum):
    build = 'Build'
    push = 'Push'
    service = 'Service'
    blue_green = 'BlueGreen'
    verify = 'Verify'
    complete = 'Complete'

    @property
    def number(self) -> int:
        return list(StageName).index(self) + 1


STAGE_COUNT = len(StageName)


class StageResult(str, enum.Enum):
    running = 'Running'
    succeeded = 'Succeeded'
    skipped = 'Skipped'
    failed = 'Failed'
    cancelled = 'Cancelled'


class RunResult(str, enum.Enum):
    succeeded = 'Succeeded'
    failed = 'Failed'
    superseded = 'Superseded'
    cancelled = 'Cancelled'


class Condition(Model):
    """A kstatus condition."""
    type: str
    """Condition type: Ready, Reconciling, Stalled, or one per stage outcome."""
    status: Literal['True', 'False', 'Unknown']
    """True, False or Unknown."""
    reason: str
    """CamelCase reason for the last transition, e.g. BuildFailed."""
    message: Message = ''
    """Details of the last transition."""
    observed_generation: int | None = None
    """The generation the condition was set for."""
    last_transition_time: datetime.datetime
    """When the status last changed."""


class StageRecord(Model):
    """What one stage of the current run did."""
    number: int
    """Stage number, 1-6."""
    name: StageName
    """Stage name: Build, Push, Service, BlueGreen, Verify or Complete."""
    result: StageResult
    """Running, Succeeded, Skipped, Failed or Cancelled."""
    started_at: datetime.datetime | None = None
    """When the stage started."""
    completed_at: datetime.datetime | None = None
    """When the stage ended."""
    message: Message = ''
    """What the stage did, or why it failed."""
    reason: str | None = None
    """CamelCase reason when the stage failed, was skipped or was cancelled."""


class ImageStatus(Model):
    """The image the run built and pushed."""
    uri: str | None = None
    """Image URI: registry/repository:tag."""
    digest: str | None = None
    """Digest of the pushed image manifest (sha256:...)."""
    dockerfile: str | None = None
    """Dockerfile the image was built from, relative to the repository root."""


class HealthCheckStatus(Model):
    """What the health checks of green saw."""
    url: str
    """URL the checks hit."""
    passed: int = 0
    """Checks that got the expected status."""
    failed: int = 0
    """Checks that did not (wrong status, error or timeout)."""
    total: int = 0
    """Checks that must pass (spec.healthCheck.checks)."""
    latency_median_ms: float | None = None
    """Median response time of the checks made, in milliseconds."""
    latency_max_ms: float | None = None
    """Slowest response time of the checks made, in milliseconds."""
    error_rate: float | None = None
    """Failed checks over checks made."""


class HistoryEntry(Model):
    """One finished run."""
    deployment_id: str
    """Id of the run: dep_ and 10 characters."""
    generation: int
    """The generation the run was for."""
    revision: str | None = None
    """Commit SHA the run deployed."""
    result: RunResult
    """Succeeded, Failed, Superseded or Cancelled."""
    reason: str | None = None
    """CamelCase reason when the run did not succeed."""
    message: HistoryMessage = ''
    """Last message of the run."""
    started_at: datetime.datetime
    """When the run started."""
    completed_at: datetime.datetime
    """When the run ended."""
    duration_seconds: float
    """How long the run took, in seconds."""
    image_uri: str | None = None
    """Image URI the run deployed."""
    active_color: Literal['blue', 'green'] | None = None
    """Colour that served production traffic when the run ended."""


class PandaDeployStatus(Model):
    """What the operator observed and did."""
    model_config = ConfigDict(extra='ignore')

    observed_generation: int | None = None
    """The generation the current or last run is for."""
    phase: Phase | None = None
    """Pending, Progressing, Succeeded or Failed."""
    stage: str | None = None
    """Current stage as 'k/6 Name', for display."""
    stage_number: int | None = None
    """Current stage number (1-6)."""
    stage_name: StageName | None = None
    """Current stage name."""
    deployment_id: str | None = None
    """Id of the current run: dep_ and 10 characters."""
    revision: str | None = None
    """Commit SHA being deployed."""
    revision_short: str | None = None
    """First 7 characters of the revision, for display."""
    image: ImageStatus | None = None
    """Image URI and digest."""
    task_definition_arn: str | None = None
    """Registered ECS task definition."""
    code_deploy_deployment_id: str | None = None
    """CodeDeploy deployment of this run."""
    health_check: HealthCheckStatus | None = None
    """Results of the health checks of green."""
    promotion: str | None = None
    """Waiting for promotion: how to promote (manual promotion only)."""
    active_color: Literal['blue', 'green'] | None = None
    """Colour that serves production traffic."""
    blue_url: str | None = None
    """URL that reaches the blue side."""
    green_url: str | None = None
    """URL that reaches the green side."""
    started_at: datetime.datetime | None = None
    """When the current or last run started."""
    completed_at: datetime.datetime | None = None
    """When the last run ended."""
    duration_seconds: float | None = None
    """How long the last run took, in seconds."""
    message: Message | None = None
    """Last progress or error message."""
    stages: list[StageRecord] = []
    """Per-stage records of the current or last run."""
    conditions: list[Condition] = []
    """kstatus conditions: Ready, Reconciling, Stalled and one per stage."""
    history: list[HistoryEntry] = []
    """Past runs, newest first."""

    def set_stage(self, name: StageName | None) -> None:
        if name is None:
            self.stage = self.stage_number = self.stage_name = None
        else:
            self.stage_name = name
            self.stage_number = name.number
            self.stage = f'{name.number}/{STAGE_COUNT} {name.value}'

    def set_revision(self, revision: str | None) -> None:
        self.revision = revision
        self.revision_short = revision[:7] if revision else None

    def stage_record(self, name: StageName) -> StageRecord | None:
        for record in self.stages:
            if record.name == name:
                return record
        return None


class PandaDeploy(Model):
    """Builds a git repository's Dockerfile, pushes to ECR and rolls it out on ECS with a CodeDeploy Blue/Green switch."""
    model_config = ConfigDict(extra='ignore')
    api_version: Literal['deploy.panda.dev/v1alpha1'] = API_VERSION  # type: ignore[assignment]
    kind: Literal['PandaDeploy'] = KIND  # type: ignore[assignment]
    metadata: dict[str, Any] = {}
    spec: PandaDeploySpec
    status: PandaDeployStatus | None = None


_UNION_TAG = re.compile(r'^(int|str|float|bool|constrained-\w+|function-\w+.*|.*\[.*\])$')


def describe_validation_error(exc: pydantic.ValidationError, *, root: str = 'spec') -> str:
    """'spec.timeouts.stageSeconds: ...; spec.source: ...' from a pydantic error, one entry per field."""
    by_path: dict[str, list[str]] = {}
    for error in exc.errors():
        location = [str(p) for p in error['loc'] if not _UNION_TAG.match(str(p))]
        path = '.'.join([root, *location]) if location else root
        message = error['msg'].removeprefix('Value error, ')
        if message.startswith(f'{root}.') and ' ' in message:  # a model-level check that names its own field
            path, message = message.split(' ', 1)
        if message not in by_path.setdefault(path, []):
            by_path[path].append(message)
    return '; '.join(f'{path}: {" or ".join(messages)}' for path, messages in by_path.items())
