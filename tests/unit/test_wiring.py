"""Which adapters a run gets: ECR, or with a registry address the plain registry whose pushes land in ECR.

Nothing here reaches a network: the adapters connect on first use. The
push through a real registry into moto's ECR is in
tests/integration/test_docker_ecr.py.
"""
from __future__ import annotations

import pathlib
import threading
from collections.abc import Mapping

import pytest

from controller.adapters import Adapters, AdapterSettings, RegistryAuth
from controller.adapters.aws import session_for
from controller.adapters.codedeploy import CodeDeployDeployments
from controller.adapters.docker import DockerEngine
from controller.adapters.ecr import EcrRegistry
from controller.adapters.ecs import EcsService
from controller.adapters.elbv2 import ListenerTraffic
from controller.adapters.git import GitRepository
from controller.adapters.http import HttpProbe
from controller.adapters.plain_registry import PlainRegistry, PushRecorder
from controller.adapters.wiring import make_adapters
from controller.credentials import AwsKeys, Credentials
from controller.models import Aws, PandaDeploySpec

REGION = 'ap-northeast-2'
URI = f'123456789012.dkr.ecr.{REGION}.amazonaws.com/your-org-app'
CREDENTIALS = Credentials(aws=AwsKeys('AKIAUNITTEST00000000', 'unit-test-secret'))
SPEC = PandaDeploySpec.model_validate({'source': {'repo': 'your-org/app'}, 'aws': {'region': REGION}})


def plain_registry(address: str = '127.0.0.1:5000') -> PlainRegistry:
    return PlainRegistry(address=address, session=session_for(Aws(region=REGION), CREDENTIALS),
                         credentials=CREDENTIALS)


def assert_aws_and_http_adapters(adapters: Adapters) -> None:
    assert type(adapters.git) is GitRepository
    assert type(adapters.ecs) is EcsService
    assert type(adapters.codedeploy) is CodeDeployDeployments
    assert type(adapters.loadbalancer) is ListenerTraffic
    assert type(adapters.http) is HttpProbe


def test_without_a_registry_pushes_go_to_ecr() -> None:
    adapters = make_adapters(SPEC, CREDENTIALS)
    assert type(adapters.registry) is EcrRegistry
    assert type(adapters.docker) is DockerEngine
    assert adapters.registry.push_target(repository_uri=URI, tag='abc') == f'{URI}:abc'
    assert_aws_and_http_adapters(adapters)


def test_with_a_registry_pushes_go_there_and_are_recorded_in_ecr() -> None:
    adapters = make_adapters(SPEC, CREDENTIALS, settings=AdapterSettings(registry='127.0.0.1:5000'))
    assert type(adapters.registry) is PlainRegistry
    assert type(adapters.docker) is PushRecorder
    assert adapters.registry.push_target(repository_uri=URI, tag='abc') == '127.0.0.1:5000/your-org-app:abc'
    assert_aws_and_http_adapters(adapters)


def test_the_environment_does_not_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only `settings.registry` does (Config reads PANDA_DEPLOY_REGISTRY, once)."""
    monkeypatch.setenv('PANDA_DEPLOY_REGISTRY', '127.0.0.1:5000')
    adapters = make_adapters(SPEC, CREDENTIALS)
    assert type(adapters.registry) is EcrRegistry
    assert type(adapters.docker) is DockerEngine


def test_plain_registry_is_anonymous() -> None:
    auth = plain_registry('registry.local:5000').authorization()
    assert (auth.registry, auth.username, auth.password) == ('registry.local:5000', '', '')


def test_plain_registry_keeps_the_repository_path() -> None:
    registry = plain_registry()
    assert registry.push_target(repository_uri=f'{URI}/team/web', tag='r1') == '127.0.0.1:5000/your-org-app/team/web:r1'
    assert registry.push_target(repository_uri='bare', tag='r1') == '127.0.0.1:5000/bare:r1'


def test_plain_registry_records_only_its_own_pushes() -> None:
    with pytest.raises(ValueError, match='is not in the registry 127.0.0.1:5000'):
        plain_registry().record_push(target=f'{URI}:abc', digest='sha256:' + '0' * 64)


class EngineStandIn:
    """A Docker adapter that answers from memory and keeps the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def build(self, *, context: pathlib.Path, dockerfile: str, tag: str, labels: Mapping[str, str],
              build_args: Mapping[str, str], log: object, cancel: threading.Event) -> str:
        self.calls.append(f'build {tag}')
        return 'sha256:image'

    def has_image(self, tag: str) -> bool:
        self.calls.append(f'has_image {tag}')
        return True

    def push(self, *, tag: str, target: str, auth: RegistryAuth | None, log: object) -> str:
        self.calls.append(f'push {tag} {target}')
        return 'sha256:pushed'


def test_push_recorder_records_each_push_after_it_and_passes_the_rest_through(
        monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    registry, engine = plain_registry(), EngineStandIn()
    recorded: list[tuple[str, str]] = []
    monkeypatch.setattr(registry, 'record_push', lambda *, target, digest: recorded.append((target, digest)))
    docker = PushRecorder(docker=engine, registry=registry)
    lines: list[str] = []

    assert docker.build(context=tmp_path, dockerfile='Dockerfile', tag='app:r1', labels={}, build_args={},
                        log=lines.append, cancel=threading.Event()) == 'sha256:image'
    assert docker.has_image('app:r1')
    assert recorded == []
    assert docker.push(tag='app:r1', target='127.0.0.1:5000/app:r1', auth=None, log=lines.append) == 'sha256:pushed'

    assert engine.calls == ['build app:r1', 'has_image app:r1', 'push app:r1 127.0.0.1:5000/app:r1']
    assert recorded == [('127.0.0.1:5000/app:r1', 'sha256:pushed')]
    assert lines == ['Recorded 127.0.0.1:5000/app:r1 (sha256:pushed) in ECR for the sandbox registry']
