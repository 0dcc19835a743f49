"""An `AdapterWiring` for the tenancy tests: the fakes of `tests.fakes`, but the registry first asks the sandbox
AWS who the run is (STS GetCallerIdentity through the session `session_for` gives the real adapters) and writes
the answer into the fake world's journal (`sts.caller`, with the ARN), so a test sees which identity a run of
the operator process acted as."""
from __future__ import annotations

import os
import pathlib
from typing import Any

from controller.adapters import Adapters, AdapterSettings
from controller.adapters.aws import aws_error, client, session_for
from controller.credentials import Credentials
from controller.errors import Reason
from controller.models import PandaDeploySpec
from tests import fakes


class CallerRecordingRegistry:
    def __init__(self, registry: Any, session: Any, world: fakes.World) -> None:
        self.registry, self.session, self.world = registry, session, world

    def find_image(self, *, repository: str, tag: str) -> str | None:
        try:
            arn = client(self.session, 'sts').get_caller_identity()['Arn']
        except Exception as exc:
            raise aws_error(exc, action='STS GetCallerIdentity', reason=Reason.INVALID_CREDENTIALS,
                            credentials_check=True) from exc
        self.world.log('sts.caller', arn=arn, repository=repository)
        found: str | None = self.registry.find_image(repository=repository, tag=tag)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)


def make_adapters(spec: PandaDeploySpec, credentials: Credentials, *, settings: AdapterSettings | None = None) -> Adapters:
    adapters = fakes.make_adapters(spec, credentials, settings=settings)
    world = fakes.World(pathlib.Path(os.environ['PANDA_FAKE_DIR']))
    adapters.registry = CallerRecordingRegistry(adapters.registry, session_for(spec.aws, credentials), world)
    return adapters
