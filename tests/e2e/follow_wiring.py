"""The operator's adapters for the follow tests: real git (the run clones what the follower saw), fakes for
Docker and AWS (tests.fakes, their world in PANDA_FAKE_DIR)."""
from __future__ import annotations

from controller.adapters import Adapters, AdapterSettings
from controller.adapters.git import GitRepository
from controller.credentials import Credentials
from controller.models import PandaDeploySpec
from tests import fakes


def make_adapters(spec: PandaDeploySpec, credentials: Credentials, *,
                  settings: AdapterSettings | None = None) -> Adapters:
    adapters = fakes.make_adapters(spec, credentials, settings=settings)
    adapters.git = GitRepository(token_hosts=(settings or AdapterSettings()).git_hosts, fetch_timeout=60)
    return adapters
