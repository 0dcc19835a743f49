"""The sandbox's errors: those answered to the client (CodeDeploy's, ECS's), and those that end a deployment."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class AwsJsonError(Exception):
    """An error answered in AWS JSON 1.1 shape: ``{"__type": code, "message": message, ...extra}``."""

    def __init__(self, code: str, message: str, *, status: int = 400, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(f'{code}: {message}')
        self.code = code
        self.message = message
        self.status = status
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """The JSON error document."""
        return {'__type': self.code, 'message': self.message, **self.extra}


class CodeDeployError(AwsJsonError):
    """One of CodeDeploy's errors."""


class EcsError(AwsJsonError):
    """One of ECS's errors (``InvalidParameterException``, ``ServiceDeploymentNotFoundException``, ...)."""


def invalid_revision(message: str) -> CodeDeployError:
    """CreateDeployment's answer to a revision or AppSpec it cannot use."""
    return CodeDeployError('InvalidRevisionException', message)


class DeploymentFailed(Exception):
    """A deployment fails: the ``errorInformation`` it ends with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ReadyTimeout(Exception):
    """The READY_WAIT ran out: AWS changes the deployment's status to Stopped."""
