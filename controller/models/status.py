"""The PandaDeploy status: what the operator records of each run (the one writer is the run's recorder)."""
from __future__ import annotations

import datetime
import enum
from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict, Field

from controller.models.base import MESSAGE_LIMIT, Model, cap_message

HISTORY_MESSAGE_LIMIT = 256
"""Characters of a history entry's message: up to 100 entries, each a summary (the full one is in `message`)."""


def _capped(limit: int) -> BeforeValidator:
    return BeforeValidator(lambda value: cap_message(value, limit) if isinstance(value, str) else value)


# Messages (often a stranger's text: build output, a server's error) capped on assignment too, so that no
# path around `PandaDeployError` can grow the status; the CRD says the same with maxLength.
Message = Annotated[str, _capped(MESSAGE_LIMIT), Field(max_length=MESSAGE_LIMIT)]
HistoryMessage = Annotated[str, _capped(HISTORY_MESSAGE_LIMIT), Field(max_length=HISTORY_MESSAGE_LIMIT)]
DEPLOYMENT_ID_LIMIT = 64
"""Characters of a service deployment id in a history entry (ECS's are 22; a longer one is cut, and then matches
nothing)."""
DeploymentIdPart = Annotated[str, _capped(DEPLOYMENT_ID_LIMIT), Field(max_length=DEPLOYMENT_ID_LIMIT)]


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


class TriggerKind(str, enum.Enum):
    build = 'Build'
    undo = 'Undo'
    retry = 'Retry'


RequestValue = Annotated[str, Field(max_length=71, pattern=r'^[^\x00-\x1f\x7f]*$')]
"""An annotation value as status keeps it: the value, or `sha256:` and its hash when it is long (see reruns.py)."""


class Trigger(Model):
    """What started a run."""
    kind: TriggerKind
    """Build (a new generation: the spec's source, built), Undo (deploy.panda.dev/undo: an earlier run's image
    and task definition, no build) or Retry (deploy.panda.dev/retry: a failed run again at its revision)."""
    of: str | None = Field(default=None, max_length=14)
    """The run undone to (Undo) or retried (Retry): its deploymentId."""


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
    image_digest: str | None = None
    """Digest of the image the run deployed (what an undo to this run deploys again)."""
    task_definition_arn: str | None = None
    """ECS task definition the run deployed (what an undo to this run deploys again)."""
    trigger: Trigger | None = None
    """What started the run: Build, Undo of a run, Retry of a run."""
    service_deployment_id: DeploymentIdPart | None = None
    """Id (the ARN's last part) of the run's ECS service deployment; no later run takes it for its own."""


class BranchHead(Model):
    """The branch head the operator last saw when following the branch (spec.source.interval, a webhook)."""
    revision: str
    """Commit SHA at the head of the branch."""
    seen_at: datetime.datetime
    """When the operator first saw the branch at this commit."""
    decision: Literal['Deploy', 'NoPathChanged']
    """Deploy: a run started for it; NoPathChanged: it changes no file under spec.source.paths, so nothing
    was deployed."""
    message: Message = ''
    """What was decided, and why."""


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
    code_build_id: str | None = None
    """CodeBuild build of this run's image (spec.build.engine codeBuild)."""
    code_deploy_deployment_id: str | None = None
    """CodeDeploy deployment of this run."""
    service_deployment_arn: str | None = None
    """ECS service deployment of this run (strategies BlueGreen, Canary, Linear)."""
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
    branch_head: BranchHead | None = None
    """The branch head last seen while following the branch (spec.source.interval or a webhook)."""
    last_handled_requested_at: Annotated[str, Field(max_length=256)] | None = None
    """The last value of the deploy.panda.dev/requestedAt annotation that started a run."""
    trigger: Trigger | None = None
    """What started the current or last run: Build, Undo of a run, Retry of a run."""
    last_handled_undo: RequestValue | None = None
    """The deploy.panda.dev/undo value last handled (acted on or refused): a value is handled once."""
    last_handled_retry: RequestValue | None = None
    """The deploy.panda.dev/retry value last handled (acted on or refused): a value is handled once."""

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
