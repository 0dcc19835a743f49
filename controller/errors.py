"""Why a run stops, as types: each carries its reason and the figures its message needs.

The reason strings are the CamelCase constants that appear in conditions,
events and the `panda_deploy_stage_failures_total{reason}` metric. Error types
decide the outcome (Flux's way): a `Stall` waits for a spec or Secret change,
a `StageFailed` ends the run as Failed, a `Transient` is retried with backoff.

Messages are capped here, where they are made (`cap_message`), because their
text often comes from a stranger (a repository's build output, a server's
error): one message goes to the status several times (stage record,
conditions, history) and to an Event, and a status must stay far from the API
server's object size limit. The status models apply the same cap to whatever
is assigned to their message fields, so nothing bypasses it.
"""
from __future__ import annotations

from controller.models import ABORT_ANNOTATION, cap_message


def format_bytes(size: float) -> str:
    """'512 B', '3.0 MiB', '1.2 GiB': sizes in messages."""
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if size < 1024 or unit == 'GiB':
            return f'{size:.0f} {unit}' if unit == 'B' else f'{size:.1f} {unit}'
        size /= 1024
    raise AssertionError('unreachable')


class Reason:
    """Condition and event reasons (CamelCase, stable: dashboards and alerts use them)."""
    # Run lifecycle.
    QUEUED = 'Queued'
    PROGRESSING = 'Progressing'
    SUCCEEDED = 'Succeeded'
    SUPERSEDED = 'Superseded'
    CANCELLED = 'Cancelled'
    ABORT_IGNORED = 'AbortIgnored'  # an Event: the abort annotation names no run in flight
    BRANCH_MOVED = 'BranchMoved'  # an Event: the followed branch has a new head; a run starts for it
    NO_PATH_CHANGED = 'NoPathChanged'  # an Event: the new head changes no file under spec.source.paths
    REDEPLOY_REQUESTED = 'RedeployRequested'  # an Event: a new deploy.panda.dev/requestedAt value starts a run
    STATUS_NOT_SAVED = 'StatusNotSaved'  # a Warning Event: the run's status could not be written; picked up again
    # Warning Events: an undo or retry annotation value that starts no run (controller/reruns.py).
    REQUEST_MALFORMED = 'RequestMalformed'  # not a deploymentId
    UNDO_TARGET_NOT_FOUND = 'UndoTargetNotFound'  # no such run in status.history
    UNDO_TARGET_UNUSABLE = 'UndoTargetUnusable'  # a run that did not succeed, or recorded no image digest/task def
    RETRY_NOT_APPLICABLE = 'RetryNotApplicable'  # not the newest run, or it did not fail, or a run is in flight
    # Stalls: need a spec or Secret change.
    INVALID_SPEC = 'InvalidSpec'
    SECRET_NOT_FOUND = 'SecretNotFound'
    SECRET_KEY_NOT_FOUND = 'SecretKeyNotFound'
    SECRET_FORBIDDEN = 'SecretForbidden'
    SOURCE_NOT_ALLOWED = 'SourceNotAllowed'
    NOTIFICATION_NOT_ALLOWED = 'NotificationNotAllowed'  # spec.notify asks what the operator does not allow
    # Stage failures.
    STAGE_TIMEOUT = 'StageTimeout'
    SOURCE_NOT_FOUND = 'SourceNotFound'
    SOURCE_UNAVAILABLE = 'SourceUnavailable'
    GIT_NOT_INSTALLED = 'GitNotInstalled'
    REVISION_NOT_FOUND = 'RevisionNotFound'
    SOURCE_AUTH_FAILED = 'SourceAuthFailed'
    DOCKERFILE_NOT_FOUND = 'DockerfileNotFound'
    AMBIGUOUS_DOCKERFILE = 'AmbiguousDockerfile'
    DOCKERFILE_OUTSIDE_CONTEXT = 'DockerfileOutsideContext'
    SYMLINK_NOT_ALLOWED = 'SymlinkNotAllowed'
    REPOSITORY_TOO_LARGE = 'RepositoryTooLarge'
    CONTEXT_TOO_LARGE = 'ContextTooLarge'
    BUILD_OUTPUT_TOO_LARGE = 'BuildOutputTooLarge'
    BUILD_FAILED = 'BuildFailed'
    INVALID_CREDENTIALS = 'InvalidCredentials'
    PUSH_FAILED = 'PushFailed'
    SERVICE_UPDATE_FAILED = 'ServiceUpdateFailed'
    BLUE_GREEN_FAILED = 'BlueGreenFailed'
    HEALTH_CHECK_FAILED = 'HealthCheckFailed'
    HEALTH_CHECK_URL_NOT_ALLOWED = 'HealthCheckURLNotAllowed'
    ABORTED = 'Aborted'
    # ECS's own deployments (spec.rollout BlueGreen, Canary, Linear), and the controller a service is on.
    DEPLOYMENT_CONTROLLER_MISMATCH = 'DeploymentControllerMismatch'
    DEPLOYMENT_ROLLED_BACK = 'DeploymentRolledBack'
    DEPLOYMENT_STOPPED = 'DeploymentStopped'
    DEPLOYMENT_REPLACED = 'DeploymentReplaced'
    NO_HEALTH_CHECK_TARGET = 'NoHealthCheckTarget'
    CALL_TIMEOUT = 'CallTimeout'
    UNEXPECTED_ERROR = 'UnexpectedError'
    # Stalls: the AWS identity a cluster admin allows in the namespace (controller/tenancy.py).
    OPERATOR_IDENTITY_NOT_ALLOWED = 'OperatorIdentityNotAllowed'
    CREDENTIALS_SECRET_NOT_ALLOWED = 'CredentialsSecretNotAllowed'
    NAMESPACE_ROLE_INVALID = 'NamespaceRoleInvalid'
    NAMESPACE_UNREADABLE = 'NamespaceUnreadable'


class PandaDeployError(Exception):
    """Base: a reason and a short, specific message (capped: see `cap_message`)."""
    reason: str = Reason.UNEXPECTED_ERROR

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        message = cap_message(message)
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class Stall(PandaDeployError):
    """The run cannot start until the spec or a Secret changes (kstatus Stalled)."""


class NotificationNotAllowed(Stall):
    """spec.notify asks for a notification the operator's settings refuse (a webhook host not allowed, a
    commit status without a token or on a host that is not a known GitHub)."""
    reason = Reason.NOTIFICATION_NOT_ALLOWED


class SecretForbidden(Stall):
    """The API server answered 403 to reading a Secret: the operator's RBAC, not the spec, needs changing."""
    reason = Reason.SECRET_FORBIDDEN

    def __init__(self, *, namespace: str, name: str) -> None:
        self.namespace, self.name = namespace, name
        super().__init__(f'the operator may not read Secret {name!r} in namespace {namespace!r} (HTTP 403); '
                         'bind the panda-deploy-secrets Role in this namespace, see README (Install)')


class StageFailed(PandaDeployError):
    """The run ends Failed at the current stage."""


class Transient(PandaDeployError):
    """A call failed in a way that may pass (throttling, 5xx, a dropped connection): retry with backoff."""


class StatusNotSaved(PandaDeployError):
    """The run's status could not be written after retries: the run stops where it is, without writing
    more, and is picked up again from the status last written (as after an operator restart)."""
    reason = Reason.STATUS_NOT_SAVED


class StageTimeout(StageFailed):
    reason = Reason.STAGE_TIMEOUT

    def __init__(self, *, stage: str, number: int, seconds: float, limit: float, total: bool) -> None:
        self.stage, self.number, self.seconds, self.limit, self.total = stage, number, seconds, limit, total
        if total:
            text = (f'Deployment timed out at stage {number} ({stage}) after {seconds:.0f} seconds '
                    f'(timeout: {limit:.0f} seconds)')
        else:
            text = f'Stage {number} ({stage}) timed out after {seconds:.0f} seconds (timeout: {limit:.0f} seconds)'
        super().__init__(text)


class BuildFailed(StageFailed):
    reason = Reason.BUILD_FAILED

    def __init__(self, *, image_name: str, exit_code: int | None, log_tail: str = '') -> None:
        self.image_name, self.exit_code, self.log_tail = image_name, exit_code, log_tail
        text = f'docker build of {image_name} failed (exit code {exit_code})'
        if log_tail:
            text += f': {log_tail}'
        super().__init__(text)


class BuildOutputTooLarge(StageFailed):
    reason = Reason.BUILD_OUTPUT_TOO_LARGE

    def __init__(self, *, image_name: str, limit: int, log_tail: str = '') -> None:
        self.image_name, self.limit, self.log_tail = image_name, limit, log_tail
        text = (f'docker build of {image_name} stopped: its output passed the operator\'s limit of '
                f'{format_bytes(limit)} (PANDA_DEPLOY_MAX_BUILD_OUTPUT_BYTES)')
        if log_tail:
            text += f': {log_tail}'
        super().__init__(text)


class ServiceUpdateFailed(StageFailed):
    reason = Reason.SERVICE_UPDATE_FAILED

    def __init__(self, *, cluster: str, service: str, detail: str) -> None:
        self.cluster, self.service = cluster, service
        super().__init__(f'ECS service {service} in cluster {cluster}: {detail}')


class DeploymentControllerMismatch(ServiceUpdateFailed):
    """The service runs on the other deployment controller than the strategy needs (ECS vs CODE_DEPLOY): refused
    before anything changes, since ECS cannot change a service's controller in place for either path."""
    reason = Reason.DEPLOYMENT_CONTROLLER_MISMATCH

    def __init__(self, *, cluster: str, service: str, controller: str, strategy: str) -> None:
        self.controller, self.strategy = controller, strategy
        if controller == 'CODE_DEPLOY':
            todo = ('keep deploying it through CodeDeploy (spec.rollout.strategy: CodeDeploy, or remove '
                    'spec.rollout), or move it to an ECS strategy as AWS documents (a new service, or '
                    'UpdateService to the ECS controller after its last CodeDeploy deployment) and run again')
        else:
            todo = ('deploy it with an ECS strategy (spec.rollout.strategy BlueGreen, Canary or Linear with '
                    'spec.rollout.loadBalancer), or use another service name for CodeDeploy')
        super().__init__(cluster=cluster, service=service,
                         detail=f'uses the {controller} deployment controller; strategy {strategy} needs '
                                f'{"ECS" if strategy != "CodeDeploy" else "CODE_DEPLOY"}. Nothing was changed: {todo}')


class HealthCheckFailed(StageFailed):
    reason = Reason.HEALTH_CHECK_FAILED

    def __init__(self, *, url: str, failed: int, total: int, detail: str = '', outcome: str = '') -> None:
        self.url, self.failed, self.total = url, failed, total
        text = f'Health check of {url} failed {failed}/{total} checks'
        if detail:
            text += f' ({detail})'
        if outcome:  # what became of the deployment, e.g. rolled back
            text += f'; {outcome}'
        super().__init__(text)


class Aborted(StageFailed):
    """The abort annotation named the run in flight: it ends Failed (stable keeps serving) until retried."""
    reason = Reason.ABORTED

    def __init__(self, *, run_id: str, where: str) -> None:
        self.run_id, self.where = run_id, where
        super().__init__(f'Run {run_id} aborted {where} by {ABORT_ANNOTATION}={run_id}; '
                         'production stays where it was')
