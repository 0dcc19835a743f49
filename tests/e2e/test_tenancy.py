"""Tenants keep to their own power in AWS: the operator process against the API emulator and the sandbox AWS.

The operator runs with its own AWS identity (the default chain: static keys in
its environment, as IRSA would give it) and the adapters of
`tests.e2e.aws_identity_wiring`: the fakes, but each run first asks the
sandbox's STS who it is, through the session the real adapters get, and
journals the ARN. `tests.stslog.StsLog` shows what STS saw: which access key
signed each AssumeRole, so role chaining is checked from AWS's side too.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from controller.sandbox.aws import AwsSandbox
from controller.tenancy import ALLOW_OPERATOR_IDENTITY, ROLE_ARN
from tests.e2e.conftest import Cluster, Operator, wait_for
from tests.fakes import World
from tests.stslog import StsLog

ACCOUNT = '123456789012'
OPERATOR_KEY = 'AKIAPANDAOPERATOR001'
PIN = f'arn:aws:iam::{ACCOUNT}:role/team-b-deployer'
API_ROLE = f'arn:aws:iam::{ACCOUNT}:role/api-deployer'


@pytest.fixture(scope='module')
def aws() -> Iterator[tuple[AwsSandbox, StsLog]]:
    with AwsSandbox(port=0) as sandbox:
        yield sandbox, StsLog.install(sandbox)


@pytest.fixture
def sts(aws: tuple[AwsSandbox, StsLog]) -> StsLog:
    return aws[1]


@pytest.fixture
def operator_env(aws: tuple[AwsSandbox, StsLog]) -> dict[str, str]:
    return {'PANDA_DEPLOY_ADAPTERS': 'tests.e2e.aws_identity_wiring:make_adapters',
            'AWS_ENDPOINT_URL': aws[0].url, 'AWS_ACCESS_KEY_ID': OPERATOR_KEY,
            'AWS_SECRET_ACCESS_KEY': 'operator-secret-0f3e'}


def spec(name: str, **aws: Any) -> dict[str, Any]:
    return {'source': {'repo': f'your-org/{name}'}, 'aws': {'region': 'us-east-1', **aws},
            'image': {'repository': f'tenancy-{name}'}, 'ecs': {'service': name},
            'healthCheck': {'checks': 1, 'intervalSeconds': 0}}


def namespace(cluster: Cluster, name: str, **annotations: str) -> None:
    cluster.core.create_namespace({'metadata': {'name': name, 'annotations': annotations}})


def condition(cluster: Cluster, name: str, namespace: str, type_: str) -> dict[str, Any] | None:
    found = cluster.status(name, namespace).get('conditions') or []
    return next((c for c in found if c['type'] == type_), None)


def ready(cluster: Cluster, name: str, namespace: str) -> bool:
    return (condition(cluster, name, namespace, 'Ready') or {}).get('status') == 'True'


def stalled(cluster: Cluster, name: str, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: (c := condition(cluster, name, namespace, 'Stalled')) and c['status'] == 'True' and c,
        timeout=30, what=f'{namespace}/{name} Stalled')
    return found


def callers(world: World) -> set[str]:
    """The ARNs the runs' adapters were told they act as."""
    return {entry['arn'] for entry in world.calls('sts.caller')}


def test_without_credentials_a_namespace_must_be_opted_in_by_a_cluster_admin(
        cluster: Cluster, operator: Operator, world: World) -> None:
    namespace(cluster, 'team-a')
    cluster.create('web', spec('web'), namespace='team-a')

    found = stalled(cluster, 'web', 'team-a')
    assert found['reason'] == 'OperatorIdentityNotAllowed'
    assert "Namespace 'team-a' does not allow the operator's own AWS identity" in found['message']
    assert f'{ALLOW_OPERATOR_IDENTITY}="true"' in found['message'] and ROLE_ARN in found['message']
    assert cluster.status('web', 'team-a')['phase'] == 'Pending'
    assert [(e['type'], e['reason']) for e in cluster.events('web', 'team-a')] == \
        [('Warning', 'OperatorIdentityNotAllowed')]
    assert world.calls('adapters.made') == [], 'a stalled resource reaches no adapter, so no AWS'

    # A cluster admin opts the namespace in: the stalled resource is retried and runs as the operator.
    cluster.core.patch_namespace('team-a', {'metadata': {'annotations': {ALLOW_OPERATOR_IDENTITY: 'true'}}})
    wait_for(lambda: ready(cluster, 'web', 'team-a'), timeout=40, what='Ready once the namespace is opted in')
    assert condition(cluster, 'web', 'team-a', 'Stalled') is None
    own = boto3.client('sts', endpoint_url=operator.extra_env['AWS_ENDPOINT_URL'], region_name='us-east-1',
                       aws_access_key_id=OPERATOR_KEY, aws_secret_access_key='x').get_caller_identity()['Arn']
    assert callers(world) == {own} and ':assumed-role/' not in own


def test_a_pinned_namespace_acts_as_its_role_and_chains_spec_role_from_it(
        cluster: Cluster, operator: Operator, world: World, sts: StsLog) -> None:
    namespace(cluster, 'team-b', **{ROLE_ARN: PIN})  # no opt-in needed: the pin is the admin's say
    cluster.create('web', spec('web'), namespace='team-b')
    cluster.create('api', spec('api', roleArn=API_ROLE), namespace='team-b')
    for name in ('web', 'api'):
        wait_for(lambda name=name: ready(cluster, name, 'team-b'), timeout=40, what=f'team-b/{name} Ready')

    assert callers(world) == {f'arn:aws:sts::{ACCOUNT}:assumed-role/team-b-deployer/panda-deploy@team-b.web',
                              f'arn:aws:sts::{ACCOUNT}:assumed-role/api-deployer/panda-deploy@team-b.api'}
    # What STS saw: the pinned role assumed with the operator's key; the spec's role with the pinned session's.
    pinned = {c.session_name: c for c in sts.assumed(PIN)}
    assert {c.signed_by for c in pinned.values()} == {OPERATOR_KEY}
    assert set(pinned) == {'panda-deploy@team-b.web', 'panda-deploy@team-b.api'}
    (chained,) = sts.assumed(API_ROLE)
    assert chained.session_name == 'panda-deploy@team-b.api'
    assert chained.signed_by == pinned['panda-deploy@team-b.api'].issued != OPERATOR_KEY


def test_a_pin_refuses_a_tenants_own_keys_and_a_malformed_pin_stalls(
        cluster: Cluster, operator: Operator, world: World) -> None:
    namespace(cluster, 'team-c', **{ROLE_ARN: PIN})
    cluster.apply_secrets('team-c', **{'aws-creds': {'accessKeyId': 'AKIATENANT0000000001',
                                                     'secretAccessKey': 'tenant-secret-5a1c'}})
    cluster.create('web', spec('web', credentialsSecretRef={'name': 'aws-creds'}), namespace='team-c')
    namespace(cluster, 'team-d', **{ROLE_ARN: 'team-d-deployer'})
    cluster.create('web', spec('web'), namespace='team-d')

    found = stalled(cluster, 'web', 'team-c')
    assert found['reason'] == 'CredentialsSecretNotAllowed'
    assert f"Namespace 'team-c' is pinned to AWS role {PIN}" in found['message']
    assert 'spec.aws.credentialsSecretRef is not allowed here' in found['message']
    found = stalled(cluster, 'web', 'team-d')
    assert found['reason'] == 'NamespaceRoleInvalid'
    assert f"annotation {ROLE_ARN} is 'team-d-deployer', not an IAM role ARN" in found['message']
    assert world.calls('adapters.made') == []
