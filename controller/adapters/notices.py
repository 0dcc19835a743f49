"""How a run's start and end are announced, as the recorder and the reconciler see it.

The real notifier (GitHub commit statuses, signed webhooks) is `controller.adapters.notify`; `Silent` is
what a run or an operator without notifications gets.
"""
from __future__ import annotations

from typing import Protocol

from controller.credentials import Credentials
from controller.models import PandaDeploySpec, PandaDeployStatus, RunResult


class RunNotices(Protocol):
    """Where one run's start and end are announced (a GitHub commit status, a signed webhook). Each call only
    queues the notice and returns at once; delivery is retried elsewhere and never fails or slows the run."""
    def started(self, status: PandaDeployStatus) -> None:
        """The run is deploying `status.revision` (called once the revision is known, again on resume)."""

    def ended(self, status: PandaDeployStatus, *, result: RunResult, reason: str) -> None: ...


class Notifier(Protocol):
    """Binds a run's notices to the channels its spec turns on (`spec.notify`) and the operator allows."""
    def check(self, spec: PandaDeploySpec) -> None:
        """A `Stall` (reason NotificationNotAllowed) when the spec asks for what the operator does not allow."""

    def for_run(self, *, namespace: str, name: str, spec: PandaDeploySpec,
                credentials: Credentials) -> RunNotices: ...


class Silent:
    """Notices that go nowhere: the `RunNotices` and `Notifier` of a run or operator without notifications."""
    def started(self, status: PandaDeployStatus) -> None:
        return None

    def ended(self, status: PandaDeployStatus, *, result: RunResult, reason: str) -> None:
        return None

    def check(self, spec: PandaDeploySpec) -> None:
        return None

    def for_run(self, *, namespace: str, name: str, spec: PandaDeploySpec, credentials: Credentials) -> Silent:
        return self
