"""The ECR push-token cache: shared by the runs of one process, bounded, keyed by who asks.

`EcrRegistry` with botocore Stubbers for STS and ECR (no server): a token is reused by the runs of one
identity (account, region, endpoint and the credentials themselves, so the same access key id with
another secret, as a resource deleted and made again with a new Secret may have, is another identity),
the cache holds at most `TOKEN_CACHE_SIZE` identities (least recently used dropped first), and no token
is served within `TOKEN_MARGIN_SECONDS` of its expiry.
"""
from __future__ import annotations

import base64
import datetime
import itertools

import boto3.session
import pytest
from botocore.stub import Stubber

from controller.adapters import ecr
from controller.adapters.ecr import EcrRegistry

REGION, ACCOUNT = 'ap-northeast-2', '123456789012'
_serial = itertools.count()


class Issued:
    """GetAuthorizationToken answers given so far, per access key id."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def count(self, access_key: str) -> int:
        return self.calls.count(access_key)


@pytest.fixture
def issued() -> Issued:
    return Issued()


def registry_for(issued: Issued, access_key: str, secret: str, *, expires_in: float = 12 * 3600) -> EcrRegistry:
    """An adapter (one run's) with these keys, its STS and ECR clients stubbed."""
    session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret, region_name=REGION)
    sts, client = session.client('sts'), session.client('ecr')
    client.meta.events.register('after-call.ecr.GetAuthorizationToken',
                                lambda **_: issued.calls.append(access_key))
    sts_stub, ecr_stub = Stubber(sts), Stubber(client)
    sts_stub.add_response('get_caller_identity', {'Account': ACCOUNT, 'UserId': 'AIDAEXAMPLE',
                                                  'Arn': f'arn:aws:iam::{ACCOUNT}:user/ci'})
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=expires_in)
    password = f'pw-{next(_serial)}'
    ecr_stub.add_response('get_authorization_token', {'authorizationData': [{
        'authorizationToken': base64.b64encode(f'AWS:{password}'.encode()).decode(), 'expiresAt': expires,
        'proxyEndpoint': f'https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com'}]})
    sts_stub.activate()
    ecr_stub.activate()
    adapter = EcrRegistry(session=session)
    adapter._clients.update(sts=sts, ecr=client)  # the stubbed clients, made from the same session
    return adapter


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ecr, '_TOKENS', type(ecr._TOKENS)())


def test_runs_of_one_identity_share_a_token(issued: Issued) -> None:
    first = registry_for(issued, 'AKIDSHARED', 'secret-1').authorization()
    again = registry_for(issued, 'AKIDSHARED', 'secret-1').authorization()
    assert again is first and issued.count('AKIDSHARED') == 1


def test_the_same_access_key_id_with_another_secret_is_another_identity(issued: Issued) -> None:
    before = registry_for(issued, 'AKIDREUSED', 'the-old-secret').authorization()
    after = registry_for(issued, 'AKIDREUSED', 'the-new-secret').authorization()
    assert after.password != before.password and issued.count('AKIDREUSED') == 2


def test_the_cache_is_bounded_and_drops_the_least_recently_used(issued: Issued,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ecr, 'TOKEN_CACHE_SIZE', 2)
    for key in ('AKIDA', 'AKIDB'):
        registry_for(issued, key, 's').authorization()
    registry_for(issued, 'AKIDA', 's').authorization()  # A used again: B is now the least recently used
    registry_for(issued, 'AKIDC', 's').authorization()  # a third identity: B goes
    assert len(ecr._TOKENS) == 2

    registry_for(issued, 'AKIDA', 's').authorization()
    registry_for(issued, 'AKIDB', 's').authorization()
    assert (issued.count('AKIDA'), issued.count('AKIDB'), issued.count('AKIDC')) == (1, 2, 1)


def test_a_token_is_not_served_close_to_its_expiry(issued: Issued) -> None:
    near = ecr.TOKEN_MARGIN_SECONDS - 60
    registry_for(issued, 'AKIDSOON', 's', expires_in=near).authorization()
    registry_for(issued, 'AKIDSOON', 's', expires_in=near).authorization()
    assert issued.count('AKIDSOON') == 2
