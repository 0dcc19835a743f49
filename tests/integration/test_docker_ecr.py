"""The Docker, ECR and AWS adapters against the real things: a Docker engine, Debian's docker-registry, moto.

Images build FROM a busybox base image the fixtures import locally (no pulls).
moto has no registry, so pushes go to docker-registry and are recorded in
moto's ECR the way the sandbox does it (PANDA_DEPLOY_REGISTRY: `PlainRegistry`).
"""
from __future__ import annotations

import datetime
import hashlib
import pathlib
import secrets
import string
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import boto3.session
import botocore.exceptions
import docker
import pytest

from controller.adapters import AdapterSettings, RegistryAuth, wiring
from controller.adapters.aws import aws_error, client, session_for
from controller.adapters.codedeploy import CodeDeployDeployments
from controller.adapters.docker import DockerEngine
from controller.adapters.ecr import EcrRegistry
from controller.adapters.ecs import EcsService
from controller.adapters.elbv2 import ListenerTraffic
from controller.adapters.git import GitRepository
from controller.adapters.http import HttpProbe
from controller.adapters.plain_registry import MANIFEST_MEDIA_TYPES, PlainRegistry, PushRecorder
from controller.credentials import AwsKeys, Credentials
from controller.errors import BuildFailed, Reason, StageFailed, Transient
from controller.models import Aws, PandaDeploySpec
from tests.integration.conftest import free_port

REGION = 'ap-northeast-2'
MOTO_ACCOUNT = '123456789012'


# -- helpers ---------------------------------------------------------------------------

def aws_keys() -> Credentials:
    """Static keys, unique per call (moto accepts any; the token cache is keyed by the key id)."""
    key_id = 'AKIA' + ''.join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    return Credentials(aws=AwsKeys(key_id, secrets.token_urlsafe(30)))


def context_dir(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def registry_manifest(registry: str, repository: str, reference: str) -> tuple[str, bytes]:
    """(Docker-Content-Digest header, body) of a manifest, straight from the registry's HTTP API."""
    request = urllib.request.Request(f'http://{registry}/v2/{repository}/manifests/{reference}',
                                     headers={'Accept': ', '.join(MANIFEST_MEDIA_TYPES)})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers['Docker-Content-Digest'], response.read()


class Lines(list[str]):
    """A `log` callback that keeps what it gets."""

    def __call__(self, line: str) -> None:
        assert '\n' not in line, f'one line per call, got {line!r}'
        self.append(line)

    def text(self) -> str:
        return '\n'.join(self)


@pytest.fixture
def name() -> str:
    """A repository name no other test uses."""
    return f'panda-test/app-{uuid.uuid4().hex[:10]}'


@pytest.fixture
def engine(docker_client: docker.DockerClient, base_image: str, name: str) -> Iterator[DockerEngine]:
    """A DockerEngine; images tagged `name` are removed afterwards."""
    yield DockerEngine()
    for image in docker_client.images.list():
        for tag in image.tags:
            if name in tag:
                docker_client.images.remove(tag, force=True)


def build(engine: DockerEngine, context: pathlib.Path, tag: str, *, log: Lines | None = None,
          labels: dict[str, str] | None = None, build_args: dict[str, str] | None = None,
          cancel: threading.Event | None = None) -> str:
    return engine.build(context=context, dockerfile='Dockerfile', tag=tag, labels=labels or {},
                        build_args=build_args or {}, log=log if log is not None else Lines(),
                        cancel=cancel or threading.Event())


# -- build -----------------------------------------------------------------------------

@pytest.mark.docker
def test_build_streams_each_line_and_applies_labels_and_build_args(
        engine: DockerEngine, docker_client: docker.DockerClient, name: str, tmp_path: pathlib.Path) -> None:
    context = context_dir(tmp_path / 'ctx', {'Dockerfile': (
        'FROM panda-test-base:latest\n'
        'ARG GREETING=unset\n'
        'RUN echo "greeting=$GREETING" && echo "second line"\n')})
    log = Lines()
    labels = {'org.opencontainers.image.revision': 'abc123', 'org.opencontainers.image.source': 'file:///x'}

    image_id = build(engine, context, f'{name}:abc123', log=log, labels=labels, build_args={'GREETING': 'hi'})

    inspected = docker_client.api.inspect_image(f'{name}:abc123')
    assert image_id == inspected['Id']
    assert inspected['Config']['Labels'] == labels
    assert 'greeting=hi' in log and 'second line' in log
    assert any(line.startswith('Step 1/') for line in log)
    assert engine.has_image(f'{name}:abc123')
    assert not engine.has_image(f'{name}:never-built')


@pytest.mark.docker
def test_build_failure_carries_exit_code_and_log_tail(engine: DockerEngine, name: str, tmp_path: pathlib.Path) -> None:
    context = context_dir(tmp_path / 'ctx', {'Dockerfile': (
        'FROM panda-test-base:latest\n'
        'RUN echo before-the-failure && exit 3\n')})

    with pytest.raises(BuildFailed) as caught:
        build(engine, context, f'{name}:bad')

    error = caught.value
    assert error.reason == Reason.BUILD_FAILED
    assert error.exit_code == 3
    assert 'before-the-failure' in error.log_tail
    assert "returned a non-zero code: 3" in error.log_tail
    assert len(error.log_tail.splitlines()) <= 10
    assert '(exit code 3)' in error.message


@pytest.mark.docker
def test_dockerignore_keeps_files_out_of_the_context(engine: DockerEngine, name: str, tmp_path: pathlib.Path) -> None:
    dockerfile = ('FROM panda-test-base:latest\n'
                  'COPY . /ctx/\n'
                  'RUN test -e /ctx/kept.txt && test ! -e /ctx/ignored.txt && test ! -e /ctx/private/key\n')
    files = {'Dockerfile': dockerfile, 'kept.txt': 'kept', 'ignored.txt': 'ignored', 'private/key': 'k'}
    ignoring = context_dir(tmp_path / 'with', {**files, '.dockerignore': 'ignored.txt\nprivate\n'})
    build(engine, ignoring, f'{name}:ignoring')

    # The same context without .dockerignore fails the same check: the check is real.
    with pytest.raises(BuildFailed) as caught:
        build(engine, context_dir(tmp_path / 'without', files), f'{name}:not-ignoring')
    assert caught.value.exit_code == 1


@pytest.mark.docker
def test_second_build_reuses_the_layer_cache(engine: DockerEngine, name: str, tmp_path: pathlib.Path) -> None:
    context = context_dir(tmp_path / 'ctx', {'Dockerfile': (
        'FROM panda-test-base:latest\n'
        f'RUN echo {uuid.uuid4().hex} > /stamp && sleep 1\n')})
    first, second = Lines(), Lines()

    image_1 = build(engine, context, f'{name}:one', log=first)
    image_2 = build(engine, context, f'{name}:two', log=second)

    assert 'Using cache' not in first.text()
    assert ' ---> Using cache' in second
    assert image_1 == image_2


@pytest.mark.docker
def test_cancel_stops_a_silent_build_step(engine: DockerEngine, docker_client: docker.DockerClient, name: str,
                                          tmp_path: pathlib.Path) -> None:
    context = context_dir(tmp_path / 'ctx', {'Dockerfile': (
        'FROM panda-test-base:latest\n'
        f'RUN echo sleeping-{name.rsplit("-", 1)[1]} && sleep 120\n')})
    cancel = threading.Event()
    log = Lines()

    def watch(line: str) -> None:
        log(line)
        if line.startswith('sleeping-'):
            threading.Timer(0.3, cancel.set).start()

    started = time.monotonic()
    with pytest.raises(StageFailed) as caught:
        engine.build(context=context, dockerfile='Dockerfile', tag=f'{name}:cancelled', labels={}, build_args={},
                     log=watch, cancel=cancel)

    assert time.monotonic() - started < 30
    assert caught.value.reason == Reason.BUILD_FAILED
    assert 'cancelled' in caught.value.message
    running = [c for c in docker_client.containers.list() if 'sleep 120' in ' '.join(c.attrs['Args'] or [])]
    assert running == []


def test_unreachable_engine_is_transient(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv('DOCKER_HOST', f'unix://{tmp_path}/no-engine.sock')
    engine = DockerEngine()
    with pytest.raises(Transient, match=f'Docker engine unreachable at unix://{tmp_path}/no-engine.sock'):
        build(engine, tmp_path, 'panda-test/unreachable:x')
    with pytest.raises(Transient):
        engine.has_image('panda-test/unreachable:x')


# -- push ------------------------------------------------------------------------------

@pytest.mark.docker
def test_push_returns_the_digest_the_registry_reports(engine: DockerEngine, registry: str, name: str,
                                                     tmp_path: pathlib.Path) -> None:
    context = context_dir(tmp_path / 'ctx', {'Dockerfile': f'FROM panda-test-base:latest\nLABEL run={name}\n'})
    build(engine, context, f'{name}:v1')
    log = Lines()

    digest = engine.push(tag=f'{name}:v1', target=f'{registry}/{name}:v1', auth=None, log=log)

    header, body = registry_manifest(registry, name, 'v1')
    assert digest == header == 'sha256:' + hashlib.sha256(body).hexdigest()
    assert any(digest in line for line in log)
    assert not any('[=' in line for line in log), 'progress bars are not logged'


@pytest.mark.docker
def test_push_to_nothing_listening_is_push_failed(engine: DockerEngine, base_image: str, name: str) -> None:
    target = f'127.0.0.1:{free_port()}/{name}:v1'
    with pytest.raises(StageFailed) as caught:
        engine.push(tag=base_image, target=target, auth=None, log=Lines())
    assert caught.value.reason == Reason.PUSH_FAILED
    assert target in caught.value.message and 'connection refused' in caught.value.message


@pytest.mark.docker
def test_push_credentials_go_to_the_engine_only(engine: DockerEngine, base_image: str, name: str,
                                                auth_registry: tuple[str, str, str], tmp_path: pathlib.Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused without or with wrong credentials (PushFailed, registry's message, no password in it);
    accepted with the right ones; and nothing is written under HOME (no docker login, no config.json)."""
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    monkeypatch.delenv('DOCKER_CONFIG', raising=False)
    address, username, password = auth_registry
    engine = DockerEngine()  # a fresh client that sees the HOME above
    target = f'{address}/{name}:v1'
    wrong = f'wrong-{secrets.token_hex(8)}'

    with pytest.raises(StageFailed, match='no basic auth credentials') as anonymous:
        engine.push(tag=base_image, target=target, auth=None, log=Lines())
    log = Lines()
    with pytest.raises(StageFailed, match='unauthorized') as refused:
        engine.push(tag=base_image, target=target, log=log,
                    auth=RegistryAuth(registry=address, username=username, password=wrong))
    assert anonymous.value.reason == refused.value.reason == Reason.PUSH_FAILED
    assert wrong not in refused.value.message and wrong not in log.text()

    log = Lines()
    digest = engine.push(tag=base_image, target=target, log=log,
                         auth=RegistryAuth(registry=address, username=username, password=password))
    assert digest.startswith('sha256:')
    assert password not in log.text()

    assert list(home.iterdir()) == [], 'nothing may be written under HOME'
    for path in tmp_path.rglob('*'):
        if path.is_file():
            content = path.read_bytes()
            assert password.encode() not in content and wrong.encode() not in content, path


# -- AWS and ECR (moto) ----------------------------------------------------------------

def ecr_registry(credentials: Credentials | None = None, **aws: Any) -> EcrRegistry:
    credentials = credentials or aws_keys()
    return EcrRegistry(session=session_for(Aws(region=REGION, **aws), credentials), credentials=credentials)


def test_account_id_from_sts(aws_endpoint: str) -> None:
    assert ecr_registry().account_id() == MOTO_ACCOUNT


def test_default_chain_when_no_keys_are_given(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', 'AKIAEXAMPLEDEFAULT01')
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', 'default-chain-secret')
    assert ecr_registry(Credentials()).account_id() == MOTO_ACCOUNT


def test_assume_role_uses_session_name_panda_deploy(aws_endpoint: str) -> None:
    role_arn = f'arn:aws:iam::{MOTO_ACCOUNT}:role/panda-deployer'
    session = session_for(Aws(region=REGION, role_arn=role_arn), aws_keys())
    arn = client(session, 'sts').get_caller_identity()['Arn']
    assert arn == f'arn:aws:sts::{MOTO_ACCOUNT}:assumed-role/panda-deployer/panda-deploy'


def test_clients_honour_per_service_endpoint(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('AWS_ENDPOINT_URL_ECR', 'http://127.0.0.1:1')
    session = session_for(Aws(region=REGION), aws_keys())
    assert client(session, 'ecr').meta.endpoint_url == 'http://127.0.0.1:1'
    assert client(session, 'sts').meta.endpoint_url == aws_endpoint


def test_repository_created_when_missing_and_then_reused(aws_endpoint: str, name: str) -> None:
    ecr = ecr_registry()

    uri = ecr.ensure_repository(name)
    again = ecr.ensure_repository(name)

    assert uri == again == f'{MOTO_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{name}'
    found = boto3.session.Session(region_name=REGION, aws_access_key_id='AKIAEXAMPLEEXAMPLE01',
                                  aws_secret_access_key='x').client('ecr').describe_repositories()
    assert [r['repositoryName'] for r in found['repositories']].count(name) == 1
    assert ecr.find_image(repository=name, tag='nope') is None
    assert ecr.find_image(repository=f'{name}-missing', tag='nope') is None
    assert ecr.push_target(repository_uri=uri, tag='abc') == f'{uri}:abc'


@pytest.mark.docker
def test_push_to_sandbox_registry_is_found_in_ecr_with_the_same_digest(
        aws_endpoint: str, registry: str, engine: DockerEngine, name: str, tmp_path: pathlib.Path) -> None:
    """The sandbox path end to end through make_adapters: ECR repository, push to the registry
    (PANDA_DEPLOY_REGISTRY), manifest recorded in ECR, find_image answers the registry's digest."""
    spec = PandaDeploySpec.model_validate({'source': {'url': 'file:///src/app.git'}, 'aws': {'region': REGION},
                                           'image': {'repository': name}})
    adapters = wiring.make_adapters(spec, aws_keys(), settings=AdapterSettings(registry=registry))
    assert isinstance(adapters.docker, PushRecorder)
    assert isinstance(adapters.registry, PlainRegistry)
    context = context_dir(tmp_path / 'ctx', {'Dockerfile': f'FROM panda-test-base:latest\nLABEL run={name}\n'})
    adapters.docker.build(context=context, dockerfile='Dockerfile', tag=f'{name}:rev1', labels={}, build_args={},
                          log=Lines(), cancel=threading.Event())

    uri = adapters.registry.ensure_repository(name)
    assert adapters.registry.find_image(repository=name, tag='rev1') is None
    target = adapters.registry.push_target(repository_uri=uri, tag='rev1')
    assert target == f'{registry}/{name}:rev1'
    auth = adapters.registry.authorization()
    assert (auth.username, auth.password) == ('', '')
    digest = adapters.docker.push(tag=f'{name}:rev1', target=target, auth=auth, log=Lines())

    assert adapters.registry.find_image(repository=name, tag='rev1') == digest
    assert registry_manifest(registry, name, 'rev1')[0] == digest


def _count_token_calls(session: boto3.session.Session, *, expires_in: float | None) -> list[int]:
    """Counts ECR GetAuthorizationToken answers; with `expires_in`, rewrites their expiresAt as real ECR
    would set it (moto answers a fixed date in 2015)."""
    calls: list[int] = []

    def seen(parsed: dict[str, Any], **_: Any) -> None:
        calls.append(1)
        if expires_in is not None:
            for data in parsed.get('authorizationData', []):
                data['expiresAt'] = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                    seconds=expires_in)
    session.events.register('after-call.ecr.GetAuthorizationToken', seen)
    return calls


def test_authorization_cached_until_shortly_before_expiry(aws_endpoint: str) -> None:
    credentials = aws_keys()
    session = session_for(Aws(region=REGION), credentials)
    calls = _count_token_calls(session, expires_in=12 * 3600)
    first = EcrRegistry(session=session, credentials=credentials)
    second = EcrRegistry(session=session, credentials=credentials)  # another run, same account and keys

    auth = first.authorization()
    assert first.authorization() is auth and second.authorization() is auth
    assert calls == [1]
    assert auth.username == 'AWS' and auth.password
    assert auth.registry == f'{MOTO_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com'
    assert auth.password not in repr(auth)


def test_authorization_refetched_when_about_to_expire(aws_endpoint: str) -> None:
    credentials = aws_keys()
    session = session_for(Aws(region=REGION), credentials)
    calls = _count_token_calls(session, expires_in=120)  # inside the 5-minute margin
    ecr = EcrRegistry(session=session, credentials=credentials)
    ecr.authorization()
    ecr.authorization()
    assert calls == [1, 1]


@pytest.fixture
def moto_refuses_unknown_keys(aws_endpoint: str) -> Any:
    """moto checks signatures against its IAM (INITIAL_NO_AUTH_ACTION_COUNT=0) for the test, then stops."""
    def set_count(value: str) -> None:
        request = urllib.request.Request(f'{aws_endpoint}/moto-api/reset-auth', data=value.encode(), method='POST',
                                         headers={'Content-Type': 'text/plain'})  # not a form: moto reads the body
        urllib.request.urlopen(request, timeout=10).close()
    set_count('0')
    try:
        yield
    finally:
        set_count('inf')


def test_refused_credentials_are_invalid_credentials(moto_refuses_unknown_keys: None, name: str) -> None:
    credentials = aws_keys()
    assert credentials.aws is not None
    ecr = ecr_registry(credentials)

    with pytest.raises(StageFailed) as sts:
        ecr.account_id()
    with pytest.raises(StageFailed) as describe:
        ecr.find_image(repository=name, tag='abc')

    for error in (sts.value, describe.value):
        assert error.reason == Reason.INVALID_CREDENTIALS
        assert 'InvalidClientTokenId' in error.message
        assert credentials.aws.access_key_id not in error.message
        assert credentials.aws.secret_access_key not in error.message
        assert isinstance(error.__cause__, botocore.exceptions.ClientError)
    assert 'STS GetCallerIdentity' in sts.value.message


def _client_error(code: str, status: int, operation: str = 'DescribeImages') -> botocore.exceptions.ClientError:
    response: Any = {'Error': {'Code': code, 'Message': f'{code} happened'},
                     'ResponseMetadata': {'HTTPStatusCode': status}}
    return botocore.exceptions.ClientError(response, operation)


@pytest.mark.parametrize(('error', 'kind', 'reason', 'credentials_check'), [
    (_client_error('ThrottlingException', 400), Transient, None, False),
    (_client_error('ServiceUnavailable', 503), Transient, None, False),
    (_client_error('SomethingNew', 500), Transient, None, False),
    (_client_error('UnrecognizedClientException', 400), StageFailed, Reason.INVALID_CREDENTIALS, False),
    (_client_error('SignatureDoesNotMatch', 403), StageFailed, Reason.INVALID_CREDENTIALS, False),
    (_client_error('ExpiredToken', 400), StageFailed, Reason.INVALID_CREDENTIALS, False),
    (_client_error('AccessDenied', 403, 'AssumeRole'), StageFailed, Reason.INVALID_CREDENTIALS, True),
    (_client_error('AccessDeniedException', 400), StageFailed, Reason.PUSH_FAILED, False),
    (_client_error('RepositoryPolicyNotFoundException', 400), StageFailed, Reason.PUSH_FAILED, False),
    (botocore.exceptions.EndpointConnectionError(endpoint_url='https://ecr.example'), Transient, None, False),
    (botocore.exceptions.NoCredentialsError(), StageFailed, Reason.INVALID_CREDENTIALS, False),
])
def test_aws_error_mapping(error: Exception, kind: type, reason: str | None, credentials_check: bool) -> None:
    mapped = aws_error(error, action='ECR Thing', reason=Reason.PUSH_FAILED, credentials_check=credentials_check)
    assert type(mapped) is kind
    if reason is not None:
        assert mapped.reason == reason
    assert mapped.message.startswith('ECR Thing failed: ')
    code = error.response['Error']['Code'] if isinstance(error, botocore.exceptions.ClientError) else None
    if code:
        assert code in mapped.message


# -- wiring ----------------------------------------------------------------------------

def test_make_adapters_wires_the_real_adapters(aws_endpoint: str) -> None:
    spec = PandaDeploySpec.model_validate({'source': {'repo': 'your-org/app'}, 'aws': {'region': REGION}})
    adapters = wiring.make_adapters(spec, aws_keys())
    assert type(adapters.docker) is DockerEngine
    assert type(adapters.registry) is EcrRegistry
    assert type(adapters.git) is GitRepository
    assert type(adapters.ecs) is EcsService
    assert type(adapters.codedeploy) is CodeDeployDeployments
    assert type(adapters.loadbalancer) is ListenerTraffic
    assert type(adapters.http) is HttpProbe
    assert adapters.registry.account_id() == MOTO_ACCOUNT  # the session reaches moto through AWS_ENDPOINT_URL
