"""`session_for` with a run's `AwsIdentity` against the sandbox AWS (moto): roles assumed in turn, each from the
one before, in sessions named for the namespace and the resource; what STS saw shows who signed each call."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.adapters.aws import client, session_for
from controller.credentials import AwsKeys, Credentials
from controller.errors import Reason, StageFailed
from controller.models import Aws
from controller.sandbox.aws import AwsSandbox
from controller.tenancy import ROLE_ARN, NamespaceSettings, aws_identity
from tests.stslog import StsLog

ACCOUNT = '123456789012'
PIN = f'arn:aws:iam::{ACCOUNT}:role/team-a-deployer'
SPEC_ROLE = f'arn:aws:iam::{ACCOUNT}:role/web-deployer'
OPERATOR_KEY = 'AKIAOPERATOR00000001'


@pytest.fixture(scope='module')
def sandbox() -> Iterator[tuple[AwsSandbox, StsLog]]:
    with AwsSandbox(port=0) as found:
        yield found, StsLog.install(found)


@pytest.fixture
def sts(sandbox: tuple[AwsSandbox, StsLog], monkeypatch: pytest.MonkeyPatch) -> StsLog:
    aws, log = sandbox
    monkeypatch.setenv('AWS_ENDPOINT_URL', aws.url)
    monkeypatch.setenv('AWS_ACCESS_KEY_ID', OPERATOR_KEY)  # the operator's own identity: the default chain
    monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', 'operator-secret')
    monkeypatch.delenv('AWS_PROFILE', raising=False)
    return log


def pinned_run(*, role: str | None, namespace: str = 'team-a', name: str = 'web') -> tuple[Aws, Credentials]:
    aws = Aws.model_validate({'region': 'us-east-1', **({'roleArn': role} if role else {})})
    identity = aws_identity(aws, NamespaceSettings(namespace=namespace, role_arn=PIN), name=name, namespace=namespace)
    return aws, Credentials(aws_identity=identity)


def test_a_pinned_namespace_acts_as_its_role_named_for_the_resource(sts: StsLog) -> None:
    aws, credentials = pinned_run(role=None)
    arn = client(session_for(aws, credentials), 'sts').get_caller_identity()['Arn']
    assert arn == f'arn:aws:sts::{ACCOUNT}:assumed-role/team-a-deployer/panda-deploy@team-a.web'
    (assumed,) = sts.assumed(PIN)
    assert assumed.signed_by == OPERATOR_KEY and assumed.session_name == 'panda-deploy@team-a.web'


def test_spec_role_is_assumed_from_the_pinned_role_never_from_the_operator(sts: StsLog) -> None:
    aws, credentials = pinned_run(role=SPEC_ROLE, name='api')
    arn = client(session_for(aws, credentials), 'sts').get_caller_identity()['Arn']
    assert arn == f'arn:aws:sts::{ACCOUNT}:assumed-role/web-deployer/panda-deploy@team-a.api'
    pinned = [c for c in sts.assumed(PIN) if c.session_name == 'panda-deploy@team-a.api']
    chained = [c for c in sts.assumed(SPEC_ROLE) if c.session_name == 'panda-deploy@team-a.api']
    assert len(pinned) == len(chained) == 1
    assert pinned[0].signed_by == OPERATOR_KEY
    assert chained[0].signed_by == pinned[0].issued != OPERATOR_KEY


def test_long_session_names_are_accepted_by_sts(sts: StsLog) -> None:
    aws, credentials = pinned_run(role=None, namespace='n' * 63, name='a' * 200)
    arn = client(session_for(aws, credentials), 'sts').get_caller_identity()['Arn']
    session = arn.rsplit('/', 1)[1]
    assert len(session) == 64 and session.startswith('panda-deploy@nnn')


def test_a_refused_pin_names_the_role_and_the_annotation(sandbox: tuple[AwsSandbox, StsLog], sts: StsLog) -> None:
    aws_sandbox, _ = sandbox
    aws, credentials = pinned_run(role=SPEC_ROLE)
    aws_sandbox.refuse_unknown_keys(set())
    try:
        with pytest.raises(StageFailed) as info:
            client(session_for(aws, credentials), 'sts').get_caller_identity()
    finally:
        aws_sandbox.refuse_unknown_keys(None)
    assert info.value.reason == Reason.INVALID_CREDENTIALS
    assert f'STS AssumeRole of {PIN} (Namespace team-a annotation {ROLE_ARN}) failed: InvalidClientTokenId' \
        in info.value.message


def test_without_an_identity_spec_role_keeps_its_plain_session_name(sts: StsLog) -> None:
    aws = Aws.model_validate({'region': 'us-east-1', 'roleArn': SPEC_ROLE})
    keys = Credentials(aws=AwsKeys('AKIATENANT0000000001', 'tenant-secret'))
    arn = client(session_for(aws, keys), 'sts').get_caller_identity()['Arn']
    assert arn == f'arn:aws:sts::{ACCOUNT}:assumed-role/web-deployer/panda-deploy'
