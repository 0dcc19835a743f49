"""A CodeBuild build as the sandbox keeps it, and as BatchGetBuilds answers it (botocore's `Build` shape).

moto records projects and builds but runs nothing (its BatchGetBuilds says
SUCCEEDED at once); the sandbox's builds are run by `codebuild_runner` and
move through CodeBuild's documented phases: SUBMITTED, QUEUED, PROVISIONING,
DOWNLOAD_SOURCE, INSTALL, PRE_BUILD, BUILD, POST_BUILD, UPLOAD_ARTIFACTS,
FINALIZING, COMPLETED. A phase that fails carries `contexts` (statusCode,
message) as CodeBuild's do.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

PHASES = ('SUBMITTED', 'QUEUED', 'PROVISIONING', 'DOWNLOAD_SOURCE', 'INSTALL', 'PRE_BUILD', 'BUILD', 'POST_BUILD',
          'UPLOAD_ARTIFACTS', 'FINALIZING', 'COMPLETED')
COMMAND_PHASES = ('install', 'pre_build', 'build', 'post_build')  # the buildspec's names, in order


@dataclasses.dataclass
class Phase:
    phase_type: str
    started: float
    ended: float | None = None
    status: str | None = None  # SUCCEEDED, FAILED, FAULT, TIMED_OUT, IN_PROGRESS, STOPPED, CLIENT_ERROR
    contexts: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def answer(self) -> dict[str, Any]:
        document: dict[str, Any] = {'phaseType': self.phase_type, 'startTime': self.started}
        if self.ended is not None:
            document.update(endTime=self.ended, durationInSeconds=int(self.ended - self.started),
                            phaseStatus=self.status or 'SUCCEEDED')
        if self.contexts:
            document['contexts'] = self.contexts
        return document


@dataclasses.dataclass
class SandboxBuild:
    id: str
    arn: str
    number: int
    project: str
    account: str
    region: str
    source: dict[str, Any]  # type, location, buildspec
    environment: dict[str, Any]  # type, image, computeType, privilegedMode, environmentVariables
    service_role: str
    timeout_minutes: int
    log_group: str
    log_stream: str
    minute_seconds: float = 60.0  # how long one of timeoutInMinutes lasts (the sandbox's Timings)
    started: float = dataclasses.field(default_factory=time.time)
    ended: float | None = None
    status: str = 'IN_PROGRESS'  # SUCCEEDED, FAILED, FAULT, TIMED_OUT, IN_PROGRESS, STOPPED
    phases: list[Phase] = dataclasses.field(default_factory=list)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def current_phase(self) -> str:
        return self.phases[-1].phase_type if self.phases else 'SUBMITTED'

    def enter(self, phase_type: str) -> None:
        """End the current phase (succeeded unless it says otherwise) and begin `phase_type`."""
        now = time.time()
        if self.phases and self.phases[-1].ended is None:
            self.phases[-1].ended = now
        self.phases.append(Phase(phase_type=phase_type, started=now))

    def fail(self, status: str, *, code: str, message: str) -> None:
        """The current phase ends with `status`, saying why; the build's status follows it."""
        phase = self.phases[-1]
        phase.ended, phase.status = time.time(), status
        phase.contexts.append({'statusCode': code, 'message': message})
        if self.status == 'IN_PROGRESS':
            self.status = status if status in ('FAILED', 'FAULT', 'TIMED_OUT', 'STOPPED') else 'FAILED'

    def answer(self) -> dict[str, Any]:
        """The build as BatchGetBuilds and StartBuild answer it."""
        document: dict[str, Any] = {
            'id': self.id, 'arn': self.arn, 'buildNumber': self.number, 'startTime': self.started,
            'currentPhase': self.current_phase, 'buildStatus': self.status, 'projectName': self.project,
            'phases': [phase.answer() for phase in self.phases], 'source': self.source,
            'secondarySources': [], 'secondarySourceVersions': [], 'artifacts': {'location': ''},
            'environment': self.environment, 'serviceRole': self.service_role,
            'logs': {'groupName': self.log_group, 'streamName': self.log_stream,
                     'deepLink': f'https://console.aws.amazon.com/cloudwatch/home?region={self.region}#logEvent:'
                                 f'group={self.log_group};stream={self.log_stream}',
                     'cloudWatchLogsArn': f'arn:aws:logs:{self.region}:{self.account}:log-group:{self.log_group}'
                                          f':log-stream:{self.log_stream}'},
            'timeoutInMinutes': self.timeout_minutes, 'queuedTimeoutInMinutes': 480,
            'buildComplete': self.ended is not None, 'initiator': 'panda-deploy-sandbox',
            'encryptionKey': f'arn:aws:kms:{self.region}:{self.account}:alias/aws/s3'}
        if self.ended is not None:
            document['endTime'] = self.ended
        return document
