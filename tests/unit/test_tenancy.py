"""Which AWS identity a run may act as (controller/tenancy.py): every combination of what the tenant wrote in
the spec and what a cluster admin set on the Namespace, the session names, and the preflight around them."""
from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import yaml

from controller import tenancy
from controller.cli import run_once
from controller.config import Config
from controller.errors import Reason, Stall
from controller.models import Aws, PandaDeploySpec, StageName
from controller.tenancy import ALLOW_OPERATOR_IDENTITY, ROLE_ARN, AssumedRole, NamespaceSettings
from tests import fakes

PIN = 'arn:aws:iam::111122223333:role/team-a-deployer'
SPEC_ROLE = 'arn:aws:iam::444455556666:role/app-deployer'
SESSION = 'panda-deploy@team-a.web'
FROM_PIN = AssumedRole(PIN, f'Namespace team-a annotation {ROLE_ARN}')
FROM_SPEC = AssumedRole(SPEC_ROLE, 'spec.aws.roleArn')


def aws(*, keys: bool, role: bool) -> Aws:
    return Aws.model_validate({'region': 'eu-west-1', **({'credentialsSecretRef': {'name': 'aws'}} if keys else {}),
                               **({'roleArn': SPEC_ROLE} if role else {})})


def settings(*, allow: bool, pin: bool) -> NamespaceSettings:
    return NamespaceSettings(namespace='team-a', allow_operator_identity=allow, role_arn=PIN if pin else None)


# (keys, spec roleArn, namespace opted in, namespace pinned) -> the roles assumed in turn, or the stall's reason.
CASES: list[tuple[bool, bool, bool, bool, tuple[AssumedRole, ...] | str]] = [
    # The operator's own identity: only where a cluster admin allowed it, or to assume the pinned role.
    (False, False, False, False, Reason.OPERATOR_IDENTITY_NOT_ALLOWED),
    (False, True, False, False, Reason.OPERATOR_IDENTITY_NOT_ALLOWED),  # not even to assume a role
    (False, False, True, False, ()),
    (False, True, True, False, (FROM_SPEC,)),
    (False, False, False, True, (FROM_PIN,)),
    (False, True, False, True, (FROM_PIN, FROM_SPEC)),  # spec.aws.roleArn assumed from the pinned role
    (False, False, True, True, (FROM_PIN,)),  # the pin wins over the opt-in: never the bare operator identity
    (False, True, True, True, (FROM_PIN, FROM_SPEC)),
    # The tenant's own keys: allowed anywhere but in a pinned namespace.
    (True, False, False, False, ()),
    (True, True, False, False, (FROM_SPEC,)),
    (True, False, True, False, ()),
    (True, True, True, False, (FROM_SPEC,)),
    (True, False, False, True, Reason.CREDENTIALS_SECRET_NOT_ALLOWED),
    (True, True, False, True, Reason.CREDENTIALS_SECRET_NOT_ALLOWED),
    (True, False, True, True, Reason.CREDENTIALS_SECRET_NOT_ALLOWED),
    (True, True, True, True, Reason.CREDENTIALS_SECRET_NOT_ALLOWED),
]


@pytest.mark.parametrize('keys,role,allow,pin,expected', CASES,
                         ids=[f'keys={k}-role={r}-allow={a}-pin={p}' for k, r, a, p, _ in CASES])
def test_every_combination_of_spec_and_namespace(keys: bool, role: bool, allow: bool, pin: bool,
                                                 expected: tuple[AssumedRole, ...] | str) -> None:
    given = aws(keys=keys, role=role)
    if isinstance(expected, str):
        with pytest.raises(Stall) as info:
            tenancy.aws_identity(given, settings(allow=allow, pin=pin), name='web', namespace='team-a')
        assert info.value.reason == expected
        return
    identity = tenancy.aws_identity(given, settings(allow=allow, pin=pin), name='web', namespace='team-a')
    assert identity.roles == expected
    assert identity.session_name == SESSION


@pytest.mark.parametrize('keys', [False, True])
@pytest.mark.parametrize('role', [False, True])
def test_without_a_cluster_the_callers_own_identity_is_allowed(keys: bool, role: bool) -> None:
    identity = tenancy.aws_identity(aws(keys=keys, role=role), None, name='web', namespace='team-a')
    assert identity.roles == ((FROM_SPEC,) if role else ())
    assert identity.session_name == SESSION


def test_the_stalls_say_what_to_do() -> None:
    with pytest.raises(Stall) as info:
        tenancy.aws_identity(aws(keys=False, role=False), settings(allow=False, pin=False), name='web',
                             namespace='team-a')
    message = info.value.message
    assert "Namespace 'team-a'" in message and 'spec.aws.credentialsSecretRef' in message
    assert f'{ALLOW_OPERATOR_IDENTITY}="true"' in message and ROLE_ARN in message and 'cluster admin' in message

    with pytest.raises(Stall) as info:
        tenancy.aws_identity(aws(keys=True, role=False), settings(allow=False, pin=True), name='web',
                             namespace='team-a')
    message = info.value.message
    assert PIN in message and ROLE_ARN in message and 'remove it' in message


def test_a_spec_role_equal_to_the_pin_is_assumed_once() -> None:
    given = Aws.model_validate({'region': 'eu-west-1', 'roleArn': PIN})
    identity = tenancy.aws_identity(given, settings(allow=False, pin=True), name='web', namespace='team-a')
    assert identity.roles == (FROM_PIN,)


# ---------------------------------------------------------------- the Namespace's annotations

@pytest.mark.parametrize('value,allowed', [('true', True), ('True', True), (' TRUE ', True), ('false', False),
                                           ('yes', False), ('1', False), ('', False)])
def test_only_true_opts_a_namespace_in(value: str, allowed: bool) -> None:
    found = NamespaceSettings.from_annotations('team-a', {ALLOW_OPERATOR_IDENTITY: value})
    assert found.allow_operator_identity is allowed and found.role_arn is None


def test_no_annotations_allow_nothing() -> None:
    assert NamespaceSettings.from_annotations('team-a', {}) == NamespaceSettings(namespace='team-a')


def test_a_pin_is_read_and_a_bad_one_stalls_for_the_admin() -> None:
    assert NamespaceSettings.from_annotations('team-a', {ROLE_ARN: f' {PIN} '}).role_arn == PIN
    assert NamespaceSettings.from_annotations(
        'x', {ROLE_ARN: 'arn:aws-cn:iam::111122223333:role/path/to/r'}).role_arn is not None
    for bad in ('team-a-deployer', 'arn:aws:iam::1234:role/x', 'arn:aws:iam::111122223333:user/x',
                'arn:aws:iam::111122223333:role/x y'):
        with pytest.raises(Stall) as info:
            NamespaceSettings.from_annotations('team-a', {ROLE_ARN: bad})
        assert info.value.reason == Reason.NAMESPACE_ROLE_INVALID
        assert ROLE_ARN in info.value.message and 'cluster admin' in info.value.message


# ---------------------------------------------------------------- session names

STS_SESSION_NAME = re.compile(r'[\w+=,.@-]{2,64}', re.ASCII)


def test_session_names_carry_namespace_and_name() -> None:
    assert tenancy.session_name('team-a', 'web') == 'panda-deploy@team-a.web'
    assert tenancy.session_name('team-a', 'web.v2') == 'panda-deploy@team-a.web.v2'


def test_long_session_names_are_cut_with_a_hash_and_stay_apart() -> None:
    namespace, name = 'n' * 63, 'a' * 200
    first = tenancy.session_name(namespace, name)
    second = tenancy.session_name(namespace, 'a' * 199 + 'b')
    assert len(first) == len(second) == 64 and first != second
    assert first.startswith('panda-deploy@' + 'n' * 20)
    assert STS_SESSION_NAME.fullmatch(first) and STS_SESSION_NAME.fullmatch(second)
    assert tenancy.session_name(namespace, name) == first  # stable: the same resource, the same name


def test_session_names_keep_to_the_sts_character_set() -> None:
    found = tenancy.session_name('team a', 'wéb/x:y')
    assert STS_SESSION_NAME.fullmatch(found), found


# ---------------------------------------------------------------- the preflight

SPEC: dict[str, Any] = {'source': {'repo': 'o/r'}, 'aws': {'region': 'eu-west-1'}}
KEYS = {'aws': {'accessKeyId': 'AKIDTENANT', 'secretAccessKey': 'tenant-secret-1'}}


def test_resolve_puts_the_identity_beside_the_keys() -> None:
    spec = PandaDeploySpec.model_validate({**SPEC, 'aws': {**SPEC['aws'], 'credentialsSecretRef': {'name': 'aws'}}})
    creds = tenancy.resolve(spec, namespace='team-a', name='web', lookup=KEYS.get, annotations=dict)
    assert creds.aws is not None and creds.aws.access_key_id == 'AKIDTENANT'
    assert creds.aws_identity is not None and creds.aws_identity.session_name == SESSION


def test_resolve_stalls_before_reading_any_secret() -> None:
    spec = PandaDeploySpec.model_validate({**SPEC, 'aws': {**SPEC['aws'], 'credentialsSecretRef': {'name': 'aws'}}})
    read: list[str] = []

    def lookup(name: str) -> dict[str, str] | None:
        read.append(name)
        return KEYS.get(name)

    with pytest.raises(Stall) as info:
        tenancy.resolve(spec, namespace='team-a', name='web', lookup=lookup, annotations=lambda: {ROLE_ARN: PIN})
    assert info.value.reason == Reason.CREDENTIALS_SECRET_NOT_ALLOWED and read == []


def test_an_unreadable_namespace_stalls_closed() -> None:
    def forbidden() -> dict[str, str]:
        raise RuntimeError('get namespaces/team-a: HTTP 403 Forbidden')

    with pytest.raises(Stall) as info:
        tenancy.resolve(PandaDeploySpec.model_validate(SPEC), namespace='team-a', name='web', lookup=KEYS.get,
                        annotations=forbidden)
    assert info.value.reason == Reason.NAMESPACE_UNREADABLE
    assert 'HTTP 403' in info.value.message and 'get on namespaces' in info.value.message


def test_without_a_cluster_nothing_is_read_and_the_callers_identity_is_allowed() -> None:
    creds = tenancy.resolve(PandaDeploySpec.model_validate(SPEC), namespace='default', name='web', lookup=KEYS.get,
                            annotations=None)
    assert creds.aws is None and creds.aws_identity is not None and creds.aws_identity.roles == ()


# ---------------------------------------------------------------- `panda-deploy run`: no cluster

CAPTURED: list[Any] = []


def capturing_wiring(spec: PandaDeploySpec, creds: Any, *, settings: Any = None) -> Any:
    """An `AdapterWiring`: the fakes, after noting the credentials the run hands its adapters."""
    CAPTURED.append(creds)
    return fakes.make_adapters(spec, creds, settings=settings)


def test_the_command_line_acts_as_its_caller_in_a_session_named_for_the_manifest(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = {'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
                'metadata': {'name': 'web', 'namespace': 'team-a'}, 'spec': SPEC}
    (tmp_path / 'app.yaml').write_text(yaml.safe_dump(manifest))
    monkeypatch.setenv('PANDA_FAKE_DIR', str(tmp_path / 'world'))
    CAPTURED.clear()
    code = run_once(manifest=str(tmp_path / 'app.yaml'), secret_files=[], until=StageName.build, status_out=None,
                    config=Config(adapters=f'{__name__}:capturing_wiring'))
    assert code == 0
    (creds,) = CAPTURED
    assert creds.aws is None and creds.aws_identity is not None
    assert creds.aws_identity.roles == () and creds.aws_identity.session_name == SESSION
