"""One run of the stages for one generation of one resource.

A `Run` is what the engine drives and what the stages see: the validated
spec, the resolved credentials, the run's recorder (which holds the status
and the generation) and the run's in-memory state. It is made only once the
spec is valid and the Secrets are found; the recorder exists before it, so
that a run which cannot start yet is recorded as stalled by the same writer.

The run is also where secrets are blanked: everything a stage reports passes
through `redact` (or `failure_message`) before it reaches the recorder.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from controller.credentials import Credentials, credentials_used, redact
from controller.errors import PandaDeployError, StageFailed
from controller.models import Logger, PandaDeploySpec, PandaDeployStatus, RunResult
from controller.pipeline.progress import ProgressBudget
from controller.pipeline.recorder import Recorder


@dataclasses.dataclass
class Run:
    """One run of the stages for one generation of one resource."""
    spec: PandaDeploySpec
    credentials: Credentials
    recorder: Recorder
    logger: Logger
    # The promote annotation's value now: the deploymentId it approves (None: absent).
    approval: Callable[[], str | None] = lambda: None
    # In-memory state shared by the run's stages (lost on restart; nothing in it is needed to resume).
    scratch: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Set by whoever cancels the run: Superseded or Cancelled. None (operator shutdown): the run is
    # only interrupted; its status stays as it is so the next operator resumes it.
    cancel_result: RunResult | None = None
    # Set with cancel_result Failed by whoever aborts the run (the abort annotation): its reason and message.
    abort: StageFailed | None = None
    # Which progress points (checks, traffic steps) get a status write of their own (progress.py).
    progress: ProgressBudget | None = None
    # The run's end being recorded (Engine._finish): once it has begun, a cancel changes it no more.
    ending: asyncio.Future[None] | None = None

    @property
    def status(self) -> PandaDeployStatus:
        return self.recorder.status

    @property
    def generation(self) -> int:
        return self.recorder.generation

    def redact(self, text: str) -> str:
        return redact(text, self.credentials.values())

    def failure_message(self, error: PandaDeployError) -> str:
        """The error's message as status shows it: secrets blanked, refused credentials named."""
        message = self.redact(error.message)
        if used := credentials_used(self.spec, error.reason):
            message = message.rstrip('.') + used
        return message
