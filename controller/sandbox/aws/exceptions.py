"""The sandbox's errors: one answered to the client, two that end a deployment."""
from __future__ import annotations


class CodeDeployError(Exception):
    """An error answered in AWS JSON 1.1 shape: ``{"__type": code, "message": message}``."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(f'{code}: {message}')
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> dict[str, str]:
        """The JSON error document."""
        return {'__type': self.code, 'message': self.message}


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
