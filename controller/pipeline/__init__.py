"""The six stages and the engine that drives them; free of Kopf, boto3 and Kubernetes imports."""
from __future__ import annotations

from controller.pipeline.bluegreen import BlueGreen
from controller.pipeline.build import Build
from controller.pipeline.complete import Complete
from controller.pipeline.engine import Engine
from controller.pipeline.push import Push
from controller.pipeline.recorder import Recorder, Sink
from controller.pipeline.run import Run
from controller.pipeline.service import Service
from controller.pipeline.stage import Done, Stage, StageContext, Wait
from controller.pipeline.verify import Verify


def default_stages(*, poll_seconds: float | None = None) -> tuple[Stage, ...]:
    """The six stages in order; `poll_seconds` sets how often CodeDeploy (and CodeBuild) is polled."""
    build, blue_green, verify = Build(), BlueGreen(), Verify()
    if poll_seconds is not None:
        build.poll_seconds = blue_green.poll_seconds = verify.poll_seconds = poll_seconds
    return (build, Push(), Service(), blue_green, verify, Complete())


__all__ = ['Done', 'Engine', 'Recorder', 'Run', 'Sink', 'Stage', 'StageContext', 'Wait', 'default_stages']
