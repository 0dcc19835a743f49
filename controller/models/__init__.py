"""The PandaDeploy resource: spec and status as pydantic models.

These models are the one source of truth for the resource's shape: the CRD in
``crds/`` is generated from them (see :mod:`controller.crd`), the operator
validates every spec through them once at the edge, and the status it writes
is serialised from them. Field descriptions become ``kubectl explain`` text.

`base` holds the resource's names and field patterns, `spec` what a platform
team asks for, `status` what the operator records, `resource` the whole object;
everything is imported from here.
"""
from __future__ import annotations

from controller.models.base import (
    ABORT_ANNOTATION,
    API_VERSION,
    DEPLOYMENT_ID,
    GROUP,
    KIND,
    MESSAGE_LIMIT,
    PLURAL,
    PROMOTE_ANNOTATION,
    REQUESTED_AT_ANNOTATION,
    RETRY_ANNOTATION,
    SHORT_NAMES,
    SINGULAR,
    UNDO_ANNOTATION,
    VERSION,
    Logger,
    Model,
    cap_message,
)
from controller.models.build import Build, BuildEngine, CodeBuild, code_build_for, code_build_problem
from controller.models.durations import Duration, duration_seconds
from controller.models.resource import (
    PandaDeploy,
    describe_validation_error,
)
from controller.models.rollout import CanarySteps, LinearSteps, Promotion, Rollout, RolloutLoadBalancer, Strategy
from controller.models.spec import (
    Aws,
    BlueGreen,
    CodeDeploy,
    Ecs,
    HealthCheck,
    Hooks,
    Image,
    LoadBalancer,
    Networking,
    PandaDeploySpec,
    SecretKeyRef,
    SecretRef,
    Source,
    Timeouts,
)
from controller.models.status import (
    HISTORY_MESSAGE_LIMIT,
    STAGE_COUNT,
    BranchHead,
    Condition,
    HealthCheckStatus,
    HistoryEntry,
    ImageStatus,
    PandaDeployStatus,
    Phase,
    RunResult,
    StageName,
    StageRecord,
    StageResult,
    Trigger,
    TriggerKind,
)

__all__ = [
    'cap_message',
    'HISTORY_MESSAGE_LIMIT',
    'MESSAGE_LIMIT',
    'ABORT_ANNOTATION',
    'API_VERSION',
    'DEPLOYMENT_ID',
    'Aws',
    'BlueGreen',
    'Build',
    'BuildEngine',
    'CodeBuild',
    'code_build_for',
    'code_build_problem',
    'CanarySteps',
    'LinearSteps',
    'Rollout',
    'RolloutLoadBalancer',
    'Strategy',
    'CodeDeploy',
    'Condition',
    'describe_validation_error',
    'Duration',
    'duration_seconds',
    'Ecs',
    'GROUP',
    'HealthCheck',
    'HealthCheckStatus',
    'HistoryEntry',
    'BranchHead',
    'Hooks',
    'Image',
    'ImageStatus',
    'KIND',
    'LoadBalancer',
    'Logger',
    'Model',
    'Networking',
    'PandaDeploy',
    'PandaDeploySpec',
    'PandaDeployStatus',
    'Phase',
    'PLURAL',
    'PROMOTE_ANNOTATION',
    'REQUESTED_AT_ANNOTATION',
    'RETRY_ANNOTATION',
    'UNDO_ANNOTATION',
    'Trigger',
    'TriggerKind',
    'Promotion',
    'RunResult',
    'SecretKeyRef',
    'SecretRef',
    'SHORT_NAMES',
    'SINGULAR',
    'Source',
    'STAGE_COUNT',
    'StageName',
    'StageRecord',
    'StageResult',
    'Timeouts',
    'VERSION',
]
