"""The image deployed is the image built from this spec (issue 12, item 3).

`panda-deploy run --until Push|Service` as a subprocess with the real
adapters: git (file://), the Docker engine, a registry
(PANDA_DEPLOY_REGISTRY, each push recorded in ECR) and the sandbox AWS
(moto with the CodeDeploy simulator). One commit holds two services,
`svc-a/Dockerfile` and `svc-b/Dockerfile`, pushed into one ECR repository.

What would go wrong without the fix: the tag was the commit SHA alone, so
the second spec found "its" image in ECR, skipped clone and build, and
deployed the first service's image; a `buildArgs` change at the same commit
built nothing; the task definition named a tag, which can be moved after
the rollout; and the ECR repository let a tag be overwritten.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import threading
import uuid
from typing import Any

import boto3.session
import pytest
import yaml

from controller.adapters import AdapterSettings, wiring
from controller.adapters.ecr import EcrRegistry
from controller.credentials import AwsKeys, Credentials
from controller.errors import Reason, StageFailed
from controller.models import PandaDeploySpec
from tests.integration.awsworld import (  # noqa: F401 (aws_url and session are fixtures)
    REGION,
    World,
    aws_url,
    layout_document,
    session,
    world,
)
from tests.integration.test_run_until_push import registry_digest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECRET_KEY = 'identity-secret-4d2b6f'
DOCKERFILE = '''ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG GREETING=hello
RUN echo "%s ${GREETING}" > /service.txt
'''
ECR_TAG = re.compile(r'[A-Za-z0-9_.-]{1,128}')


def _git(work: pathlib.Path, *args: str) -> str:
    return subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@example.test', '-C', str(work), *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def two_service_repository(root: pathlib.Path) -> tuple[pathlib.Path, str]:
    """A bare repository whose one commit holds svc-a/Dockerfile and svc-b/Dockerfile; (bare, commit SHA)."""
    work = root / 'work'
    for service in ('svc-a', 'svc-b'):
        (work / service).mkdir(parents=True)
        (work / service / 'Dockerfile').write_text(DOCKERFILE % service)
    subprocess.run(['git', 'init', '-q', '-b', 'main', str(work)], check=True)
    _git(work, 'add', '.')
    _git(work, 'commit', '-qm', 'two services')
    bare = root / 'two-services.git'
    subprocess.run(['git', 'clone', '-q', '--bare', str(work), str(bare)], check=True)
    return bare, _git(work, 'rev-parse', 'HEAD')


def run(tmp_path: pathlib.Path, spec: dict[str, Any], *, aws_url: str, registry: str, until: str,
        out: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`panda-deploy run --until UNTIL` for `spec`; (the process, the status it wrote)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    manifest = {'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
                'metadata': {'name': 'identity', 'namespace': 'default'}, 'spec': spec}
    secrets = [{'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'aws-creds'},
                'stringData': {'accessKeyId': 'AKIDIDENTITY', 'secretAccessKey': SECRET_KEY}}]
    (tmp_path / 'app.yaml').write_text(yaml.safe_dump(manifest))
    (tmp_path / 'secrets.yaml').write_text(yaml.safe_dump_all(secrets))
    env = {k: v for k, v in os.environ.items() if not k.startswith(('AWS_', 'PANDA_DEPLOY_'))}
    env.update(AWS_ENDPOINT_URL=aws_url, AWS_EC2_METADATA_DISABLED='true', AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, PANDA_DEPLOY_REGISTRY=registry,
               HOME=str(tmp_path / 'home'), PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, '-m', 'controller', 'run', '-f', 'app.yaml', '-s', 'secrets.yaml',
                             '--until', until, '--status-out', out],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, yaml.safe_load((tmp_path / out).read_text())


def source(bare: pathlib.Path, base_image: str, **fields: Any) -> dict[str, Any]:
    build_args = {'BASE_IMAGE': base_image, **fields.pop('buildArgs', {})}
    return {'url': bare.as_uri(), 'branch': 'main', 'buildArgs': build_args, **fields}


def results(status: dict[str, Any]) -> dict[str, str]:
    return {s['name']: s['result'] for s in status['stages']}


def tag_of(status: dict[str, Any]) -> str:
    return str(status['image']['uri'].rsplit(':', 1)[1])


def content(docker_client: Any, registry: str, repository: str, digest: str) -> str:
    """/service.txt of the image `repository@digest` as the registry holds it: which service it is."""
    output: bytes = docker_client.containers.run(f'{registry}/{repository}@{digest}', ['cat', '/service.txt'],
                                                 remove=True)
    return output.decode().strip()


def ecr(session: boto3.session.Session) -> Any:
    return session.client('ecr')


@pytest.fixture
def two_services(tmp_path: pathlib.Path) -> tuple[pathlib.Path, str, str]:
    """(bare repository, its commit, an ECR repository name of this test's own)."""
    bare, revision = two_service_repository(tmp_path / 'git')
    return bare, revision, f'identity-{uuid.uuid4().hex[:8]}'


def service_spec(found: World, *, source: dict[str, Any], repository: str) -> dict[str, Any]:
    """The world's ECS service (created by stage 3 from its load balancer layout), building `source`."""
    return {**found.spec.dump(), 'blueGreen': layout_document(found), 'image': {'repository': repository},
            'source': source, 'aws': {'region': REGION, 'credentialsSecretRef': {'name': 'aws-creds'}}}


@pytest.mark.docker
def test_two_dockerfiles_of_one_commit_get_their_own_tag_image_and_task_definition(
        tmp_path: pathlib.Path, two_services: tuple[pathlib.Path, str, str], session: boto3.session.Session,
        aws_url: str, docker_client: Any, base_image: str, registry: str) -> None:
    bare, revision, repository = two_services
    worlds, statuses = {}, {}
    for service in ('svc-a', 'svc-b'):
        found = worlds[service] = world(session, group=False)  # its own ECS service, one ECR repository
        spec = service_spec(found, source=source(bare, base_image, dockerfile=f'{service}/Dockerfile'),
                            repository=repository)
        result, statuses[service] = run(tmp_path / service, spec, aws_url=aws_url, registry=registry,
                                        until='Service', out='status.yaml')
        assert results(statuses[service]) == {'Build': 'Succeeded', 'Push': 'Succeeded', 'Service': 'Succeeded'}, \
            result.stdout
        assert f'Dockerfile found: {service}/Dockerfile' in result.stdout

    a, b = statuses['svc-a'], statuses['svc-b']
    assert a['revision'] == b['revision'] == revision
    assert tag_of(a) != tag_of(b)
    for status in (a, b):
        assert tag_of(status).startswith(revision) and ECR_TAG.fullmatch(tag_of(status)), status['image']
    assert a['image']['digest'] != b['image']['digest']
    for service, status in statuses.items():
        digest = status['image']['digest']
        # The registry holds that digest under that tag, and the image is that service's.
        assert registry_digest(registry, repository, tag_of(status)) == digest
        assert content(docker_client, registry, repository, digest) == f'{service} hello'
        # The task definition names the image by digest, not by a tag that could move.
        definition = session.client('ecs').describe_task_definition(
            taskDefinition=status['taskDefinitionArn'])['taskDefinition']
        repository_uri = status['image']['uri'].rsplit(':', 1)[0]
        assert definition['containerDefinitions'][0]['image'] == f'{repository_uri}@{digest}', definition
        labels = docker_client.images.get(f'{repository}:{tag_of(status)}').labels
        assert f'"dockerfile":"{service}/Dockerfile"' in labels['dev.panda.deploy.build-identity']
    images = ecr(session).describe_images(repositoryName=repository)['imageDetails']
    assert sorted((i['imageTags'][0], i['imageDigest']) for i in images) == sorted(
        (tag_of(s), s['image']['digest']) for s in (a, b))

    # The same spec again: found in ECR, nothing built or pushed, no new task definition revision.
    found = worlds['svc-a']
    spec = service_spec(found, source=source(bare, base_image, dockerfile='svc-a/Dockerfile'), repository=repository)
    result, again = run(tmp_path / 'svc-a', spec, aws_url=aws_url, registry=registry, until='Service',
                        out='again.yaml')
    assert results(again) == {'Build': 'Skipped', 'Push': 'Skipped', 'Service': 'Skipped'}, result.stdout
    assert again['image']['uri'] == a['image']['uri'] and again['image']['digest'] == a['image']['digest']
    assert again['taskDefinitionArn'] == a['taskDefinitionArn']
    assert 'Task definition unchanged' in result.stdout
    assert len(session.client('ecs').list_task_definitions(familyPrefix=found.spec.ecs.service)[
        'taskDefinitionArns']) == 1


@pytest.mark.docker
def test_a_build_args_change_at_the_same_commit_builds_again(
        tmp_path: pathlib.Path, two_services: tuple[pathlib.Path, str, str], aws_url: str, docker_client: Any,
        base_image: str, registry: str) -> None:
    bare, revision, repository = two_services

    def push(greeting: str, out: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        spec = {'source': source(bare, base_image, dockerfile='svc-a/Dockerfile', buildArgs={'GREETING': greeting}),
                'aws': {'region': REGION, 'credentialsSecretRef': {'name': 'aws-creds'}},
                'image': {'repository': repository}}
        return run(tmp_path / 'run', spec, aws_url=aws_url, registry=registry, until='Push', out=out)

    _, one = push('one', 'one.yaml')
    result, two = push('two', 'two.yaml')

    assert results(two) == {'Build': 'Succeeded', 'Push': 'Succeeded'}, result.stdout
    assert 'Docker image built' in result.stdout and 'already in the registry' not in result.stdout
    assert one['revision'] == two['revision'] == revision
    assert tag_of(one) != tag_of(two) and tag_of(one).startswith(revision) and tag_of(two).startswith(revision)
    assert one['image']['digest'] != two['image']['digest']
    assert content(docker_client, registry, repository, one['image']['digest']) == 'svc-a one'
    assert content(docker_client, registry, repository, two['image']['digest']) == 'svc-a two'

    # Back to the first value: its image is found again (the tag is a function of the spec), nothing built.
    result, back = push('one', 'back.yaml')
    assert results(back) == {'Build': 'Skipped', 'Push': 'Skipped'}, result.stdout
    assert back['image'] == {k: v for k, v in one['image'].items() if k != 'dockerfile'}


def test_the_ecr_repository_the_operator_creates_has_immutable_tags(
        tmp_path: pathlib.Path, session: boto3.session.Session) -> None:
    name = f'identity-{uuid.uuid4().hex[:8]}'
    EcrRegistry(session=session).ensure_repository(name)  # the adapter itself: no build needed for this

    found = ecr(session).describe_repositories(repositoryNames=[name])['repositories'][0]
    assert found['imageTagMutability'] == 'IMMUTABLE'


@pytest.mark.docker
def test_a_re_push_of_a_recorded_tag_is_accepted_and_another_image_under_it_is_refused(
        tmp_path: pathlib.Path, session: boto3.session.Session, docker_client: Any, base_image: str,
        registry: str) -> None:
    """The sandbox path (push to the registry, recorded in ECR with PutImage) under immutable tags."""
    name = f'identity-{uuid.uuid4().hex[:8]}'
    spec = PandaDeploySpec.model_validate({'source': {'url': 'file:///src/app.git'}, 'aws': {'region': REGION},
                                           'image': {'repository': name}})
    adapters = wiring.make_adapters(spec, Credentials(aws=AwsKeys(access_key_id='AKIDIDENTITY',
                                                                  secret_access_key=SECRET_KEY)),
                                    settings=AdapterSettings(registry=registry))
    for version in ('1', '2'):
        (tmp_path / version).mkdir()
        (tmp_path / version / 'Dockerfile').write_text(f'FROM {base_image}\nLABEL version={version}\n')
        adapters.docker.build(context=tmp_path / version, dockerfile='Dockerfile', tag=f'{name}:v{version}',
                              labels={}, build_args={}, log=lambda line: None, cancel=threading.Event())
    uri = adapters.registry.ensure_repository(name)
    target = adapters.registry.push_target(repository_uri=uri, tag='rev')
    auth = adapters.registry.authorization()

    first = adapters.docker.push(tag=f'{name}:v1', target=target, auth=auth, log=lambda line: None)
    again = adapters.docker.push(tag=f'{name}:v1', target=target, auth=auth, log=lambda line: None)

    assert again == first
    assert adapters.registry.find_image(repository=name, tag='rev') == first
    with pytest.raises(StageFailed) as refused:
        adapters.docker.push(tag=f'{name}:v2', target=target, auth=auth, log=lambda line: None)
    assert refused.value.reason == Reason.PUSH_FAILED
    assert 'immutable' in refused.value.message and first in refused.value.message, refused.value.message
    assert adapters.registry.find_image(repository=name, tag='rev') == first
