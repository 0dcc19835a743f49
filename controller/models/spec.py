"""The PandaDeploy spec: what a platform team asks for (`kubectl explain pd.spec`)."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from controller.models.base import (
    _ARN_LENGTH,
    _AWS_REGION,
    _BRANCH,
    _DNS_NAME,
    _ECR_REPO,
    _ECR_REPO_LENGTH,
    _GIT_URL,
    _GITHUB_REPO,
    _HTTP_PATH,
    _HTTP_URL,
    _ROLE_ARN,
    _SECRET_KEY,
    _SHA,
    _TEXT,
    Model,
)
from controller.models.build import Build
from controller.models.durations import (
    _MAX_DURATION_SECONDS,
    Duration,
    OptionalDuration,
    duration_seconds,
    exact_seconds,
)
from controller.models.rollout import Promotion, Rollout, Strategy

_PATH_GLOB = r'^[^\x00-\x1f\x7f\\]+$'  # no control characters, no backslash (git paths use /)


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
    revision: Annotated[str | None, Field(pattern=_SHA, max_length=40)] = None
    """A commit SHA to deploy instead of a branch head."""
    token_secret_ref: SecretKeyRef | None = None
    """Secret key holding a GitHub token for private repositories."""
    dockerfile: Annotated[str | None, Field(pattern=_TEXT, max_length=1024)] = None
    """Path of the Dockerfile inside the repository. Default: discover it."""
    context: Annotated[str | None, Field(pattern=_TEXT, max_length=1024)] = None
    """Build context inside the repository. Default: the Dockerfile's directory."""
    build_args: Annotated[dict[str, Annotated[str, Field(max_length=4096)]] | None, Field(max_length=64)] = None
    """Docker build arguments."""
    interval: OptionalDuration = None
    """Follow the branch: how often the operator asks the git server for the branch head (seconds, or a
    duration such as 5m; jittered), and deploys it when it moved. Absent: runs only on spec changes. With
    revision set it is ignored: a pinned commit never moves."""
    paths: Annotated[list[Annotated[str, Field(pattern=_PATH_GLOB, min_length=1, max_length=256)]] | None,
                     Field(max_length=32)] = None
    """Glob patterns of repository paths, e.g. services/web/** (** any depth, * and ? within one name): a
    new branch head that changes no file matching them deploys nothing. Absent: every commit deploys."""

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

    @model_validator(mode='after')
    def _follow(self) -> Source:
        if self.interval is not None and not 1 <= exact_seconds(self.interval) <= _MAX_DURATION_SECONDS:
            raise ValueError('spec.source.interval must be between 1 second and 7 days')
        for pattern in self.paths or ():
            if pattern.startswith(('/', ':')) or '..' in pattern.split('/'):
                raise ValueError(f'spec.source.paths: {pattern!r} must be a glob relative to the repository root')
        return self

    @property
    def interval_seconds(self) -> float | None:
        """How often to look at the branch head, or None: not followed (no interval, or a pinned revision)."""
        if self.interval is None or self.revision is not None:
            return None
        return duration_seconds(self.interval)

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
    region: Annotated[str, Field(pattern=_AWS_REGION, max_length=32)]
    """AWS region, e.g. ap-northeast-2."""
    credentials_secret_ref: SecretRef | None = None
    """Secret with accessKeyId, secretAccessKey, optional sessionToken. Absent: the operator's identity, if allowed."""
    role_arn: Annotated[str | None, Field(pattern=_ROLE_ARN, max_length=_ARN_LENGTH)] = None
    """IAM role to assume with the base credentials (in a pinned namespace: from the pinned role)."""


class Image(Model):
    """The ECR repository that receives the image."""
    repository: Annotated[str | None, Field(pattern=_ECR_REPO, min_length=2, max_length=256)] = None
    """ECR repository name. Default: owner-repo of the source, lowercased."""


_SET: dict[str, Any] = {'x-kubernetes-list-type': 'set'}


class Networking(Model):
    """awsvpc networking for the service's tasks."""
    subnets: Annotated[list[Annotated[str, Field(pattern=r'^subnet-[0-9a-f]+$', max_length=32)]],
                       Field(max_length=16, json_schema_extra=_SET)] = []
    """Subnet ids for the tasks."""
    security_groups: Annotated[list[Annotated[str, Field(pattern=r'^sg-[0-9a-f]+$', max_length=32)]],
                               Field(max_length=5, json_schema_extra=_SET)] = []
    """Security group ids for the tasks."""
    assign_public_ip: Annotated[bool, Field(strict=True)] = False
    """Give tasks a public IP."""

    @model_validator(mode='after')
    def _no_duplicates(self) -> Networking:
        """Sets, as the CRD's x-kubernetes-list-type says: a repeated id is a mistake ECS would refuse."""
        for field in ('subnets', 'security_groups'):
            ids = getattr(self, field)
            if len(set(ids)) != len(ids):
                raise ValueError(f'spec.ecs.networking.{to_camel(field)} must not repeat an id')
        return self


class Ecs(Model):
    """The ECS service that runs the image."""
    cluster: Annotated[str, Field(pattern=r'^[A-Za-z0-9_-]{1,255}$', max_length=255)] = 'panda-cluster'
    """ECS cluster name."""
    service: Annotated[str, Field(pattern=r'^[A-Za-z0-9_-]{1,255}$', max_length=255)] = 'panda-service'
    """ECS service name."""
    container_name: Annotated[str, Field(pattern=r'^[A-Za-z0-9_-]{1,255}$', max_length=255)] = 'app'
    """Name of the container in the task definition."""
    container_port: Annotated[int, Field(ge=1, le=65535, strict=True)] = 8080
    """Port the container listens on."""
    cpu: Annotated[str, Field(pattern=r'^[0-9]+$', max_length=8)] = '256'
    """Task CPU units."""
    memory: Annotated[str, Field(pattern=r'^[0-9]+$', max_length=8)] = '512'
    """Task memory in MiB."""
    desired_count: Annotated[int, Field(ge=0, le=1000, strict=True)] = 1
    """Number of tasks."""
    launch_type: Literal['FARGATE', 'EC2'] = 'FARGATE'
    """ECS launch type."""
    execution_role_arn: Annotated[str | None, Field(pattern=_ROLE_ARN, max_length=_ARN_LENGTH)] = None
    """Task execution role (pulls the image, writes logs)."""
    task_role_arn: Annotated[str | None, Field(pattern=_ROLE_ARN, max_length=_ARN_LENGTH)] = None
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
    service_role_arn: Annotated[str | None, Field(pattern=_ROLE_ARN, max_length=_ARN_LENGTH)] = None
    """Role CodeDeploy uses; needed only when the operator creates the deployment group."""


_LISTENER_ARN = r'^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:listener/.+$'
_TARGET_GROUP_ARN = r'^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup/.+$'


class LoadBalancer(Model):
    """The load balancer CodeDeploy switches: needed when the service or deployment group must be created."""
    production_listener_arn: Annotated[str, Field(pattern=_LISTENER_ARN, max_length=_ARN_LENGTH)]
    """Listener that serves production traffic."""
    test_listener_arn: Annotated[str | None, Field(pattern=_LISTENER_ARN, max_length=_ARN_LENGTH)] = None
    """Listener that reaches the replacement task set before traffic shifts (health checks use it)."""
    blue_target_group_arn: Annotated[str, Field(pattern=_TARGET_GROUP_ARN, max_length=_ARN_LENGTH)]
    """First target group of the pair ("blue"); the service starts on it."""
    green_target_group_arn: Annotated[str, Field(pattern=_TARGET_GROUP_ARN, max_length=_ARN_LENGTH)]
    """Second target group of the pair ("green")."""


class BlueGreen(Model):
    """The Blue/Green switch."""
    code_deploy: CodeDeploy = CodeDeploy()
    """CodeDeploy application, deployment group and config."""
    promotion: Promotion = Promotion.auto
    """auto: shift traffic once green passes its checks; manual: also wait for deploy.panda.dev/promote=<the run's deploymentId>."""
    hooks: Hooks | None = None
    """Lifecycle hook functions."""
    load_balancer: LoadBalancer | None = None
    """Listeners and target groups; read from the deployment group when it exists."""


class HealthCheck(Model):
    """Checks that green must pass before it gets production traffic."""
    url: Annotated[str | None, Field(pattern=_HTTP_URL, max_length=2048)] = None
    """Full URL to check. Default: the test listener's URL plus path."""
    path: Annotated[str, Field(pattern=_HTTP_PATH, max_length=1024)] = '/'
    """Path to check on green."""
    checks: Annotated[int, Field(ge=1, le=100, strict=True)] = 5
    """Number of checks that must all pass."""
    interval_seconds: Annotated[int, Field(ge=0, le=300, strict=True)] = 5
    """Seconds between checks."""
    timeout_seconds: Annotated[int, Field(ge=1, le=120, strict=True)] = 5
    """Timeout of one check."""
    expected_status: Annotated[int, Field(ge=100, le=599, strict=True)] = 200
    """HTTP status a check must get."""


class NotifyWebhook(Model):
    """A JSON POST at each run's start and end, signed with a key (X-Panda-Signature-256: sha256=HMAC)."""
    url: Annotated[str, Field(pattern=_HTTP_URL, max_length=2048)]
    """Where to POST; its host must be in the operator's PANDA_DEPLOY_WEBHOOK_HOSTS."""
    secret_ref: SecretKeyRef
    """Secret key holding the HMAC-SHA256 signing key."""


class Notify(Model):
    """Status sent back to the git host and to a chat tool; a notification never fails or slows a run."""
    commit_status: Annotated[bool, Field(strict=True)] = False
    """Post a GitHub commit status (context panda-deploy/NAMESPACE/NAME) on the deployed commit, with the token of spec.source.tokenSecretRef: pending at the start, success, failure or error at the end."""
    webhook: NotifyWebhook | None = None
    """A signed JSON notification at each run's start and end (chat tools)."""


class Timeouts(Model):
    """Limits on how long a run may take: seconds, or a duration such as 10m, 1h30m."""
    stage_seconds: Duration = 600
    """Limit for one stage: seconds, or a duration with unit ms, s, m or h."""
    total_seconds: Duration = 1800
    """Limit for the whole run: seconds, or a duration with unit ms, s, m or h."""

    @field_validator('stage_seconds', 'total_seconds')
    @classmethod
    def _bounded(cls, value: int | str, info: ValidationInfo) -> int | str:
        """The CRD's CEL rule says the same with duration(): 1 second to 7 days."""
        if not 1 <= exact_seconds(value) <= _MAX_DURATION_SECONDS:
            raise ValueError(f'spec.timeouts.{to_camel(str(info.field_name))} must be between 1 second and 7 days')
        return value

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
    build: Build = Build()
    """Where the image is built: the Docker engine beside the operator (default) or AWS CodeBuild."""
    rollout: Rollout | None = None
    """How a new revision reaches production: ECS's own BlueGreen (default), Canary or Linear, or CodeDeploy. Absent: CodeDeploy through spec.blueGreen, as before spec.rollout existed."""
    blue_green: BlueGreen = BlueGreen()
    """CodeDeploy Blue/Green switch (the CodeDeploy strategy); not allowed with an ECS strategy."""
    health_check: HealthCheck = HealthCheck()
    """Health checks gating the traffic switch."""
    timeouts: Timeouts = Timeouts()
    """Stage and total time limits."""
    history_limit: Annotated[int, Field(ge=0, le=100, strict=True)] = 10
    """How many past runs status.history keeps."""
    suspend: Annotated[bool, Field(strict=True)] = False
    """Stop starting new runs (a run in flight finishes)."""
    notify: Notify = Notify()
    """Notifications of each run's start and end: a GitHub commit status, a signed webhook."""

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

    @model_validator(mode='after')
    def _one_rollout(self) -> PandaDeploySpec:
        """The sub-objects that fit the strategy, and promotion said in one place."""
        rollout = self.rollout
        if rollout is None:
            return self
        strategy = rollout.strategy
        if strategy.ecs_native:
            if 'blue_green' in self.model_fields_set:
                raise ValueError(f'spec.blueGreen configures the CodeDeploy strategy; with spec.rollout.strategy '
                                 f'{strategy.value} remove it (or set spec.rollout.strategy: CodeDeploy)')
            if rollout.load_balancer is None:
                raise ValueError(f'spec.rollout.loadBalancer is required for strategy {strategy.value}: the target '
                                 'groups, listener rules and role ECS moves traffic with')
        elif rollout.load_balancer is not None:
            raise ValueError('spec.rollout.loadBalancer is for the ECS strategies; CodeDeploy reads its load '
                             'balancer from spec.blueGreen.loadBalancer or the deployment group')
        for field, owner in (('canary', Strategy.canary), ('linear', Strategy.linear)):
            if getattr(rollout, field) is not None and strategy != owner:
                raise ValueError(f'spec.rollout.{field} is only for strategy {owner.value}, not {strategy.value}')
        if rollout.promotion is not None and 'blue_green' in self.model_fields_set:
            raise ValueError('set promotion in one place: spec.blueGreen.promotion with spec.blueGreen '
                             '(remove spec.rollout.promotion)')
        return self

    @property
    def strategy(self) -> Strategy:
        """The rollout strategy: spec.rollout.strategy, or CodeDeploy for a manifest without spec.rollout."""
        return self.rollout.strategy if self.rollout is not None else Strategy.code_deploy

    @property
    def ecs_native(self) -> bool:
        """ECS deploys (BlueGreen, Canary, Linear), not CodeDeploy."""
        return self.strategy.ecs_native

    @property
    def promotion(self) -> Promotion:
        """auto or manual: spec.rollout.promotion, else spec.blueGreen.promotion."""
        if self.rollout is not None and self.rollout.promotion is not None:
            return self.rollout.promotion
        return self.blue_green.promotion

    @property
    def repository_name(self) -> str:
        if self.image.repository:
            return self.image.repository
        owner, name = self.source.owner_repo
        raw = f'{owner}-{name}'.lower()
        cleaned = re.sub(r'[^a-z0-9._-]+', '-', raw).strip('-._')
        return cleaned or 'panda-app'
