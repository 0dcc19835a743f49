"""The operator's reach, as configuration: PANDA_DEPLOY_GIT_HOSTS and PANDA_DEPLOY_HEALTH_CHECK_DENY.

Each case is a URL a tenant could write to get a token, or a health check,
somewhere the operator does not allow; the spellings are the ones URL
parsers disagree on, or that name the same address twice.
"""
from __future__ import annotations

import pytest

from controller.config import Config
from controller.egress import DeniedNetworks, GitHosts, SourceNotAllowed
from controller.models import PandaDeploySpec

DEFAULT = GitHosts.default()
LISTED = GitHosts.parse('github.com, https://GHE.example.com:8443, http://127.0.0.1:8080, http://[::1]:*, file://')


@pytest.mark.parametrize('url', [
    'https://github.com/o/r.git', 'https://GitHub.com/o/r.git', 'https://github.com:443/o/r.git',
    'https://git@github.com/o/r.git',
])
def test_the_default_sends_a_token_to_github_over_https_only(url: str) -> None:
    assert DEFAULT.allows(url)


@pytest.mark.parametrize('url', [
    'http://github.com/o/r.git',  # plain http: the token would cross the network readable
    'https://github.com:8443/o/r.git',  # another port is another server
    'ssh://git@github.com/o/r.git', 'git://github.com/o/r.git',  # no token travels there; none is wanted
    'https://github.com.evil.example/o/r.git', 'https://evil.example/github.com/o/r.git',
    'https://github.com@evil.example/o/r.git',  # user-info: the host is evil.example
    'https://evil.example\\@github.com/o/r.git', 'https://github.com\\.evil.example/o/r.git',
    'https://github.com./o/r.git', 'https://github%2ecom/o/r.git', 'https://user:pw@github.com/o/r.git',
    'file:///srv/repos/r.git', '/srv/repos/r.git',  # local repositories: only when file:// is listed
    'http://127.0.0.1:8080/r.git', '', '-uhelper',
])
def test_the_default_refuses_every_other_destination(url: str) -> None:
    assert not DEFAULT.allows(url)
    with pytest.raises(SourceNotAllowed) as refused:
        DEFAULT.check(url)
    assert refused.value.reason == 'SourceNotAllowed'
    assert 'PANDA_DEPLOY_GIT_HOSTS (github.com)' in refused.value.message
    assert ':pw@' not in refused.value.message


@pytest.mark.parametrize(('url', 'allowed'), [
    ('https://ghe.example.com:8443/o/r.git', True), ('https://ghe.example.com/o/r.git', False),
    ('http://ghe.example.com:8443/o/r.git', False),
    ('http://127.0.0.1:8080/r.git', True), ('http://127.0.0.1:8081/r.git', False),
    ('https://127.0.0.1:8080/r.git', False),  # listed for http: https is another entry
    ('http://127.1:8080/r.git', False), ('http://2130706433:8080/r.git', False),  # the same address, spelt otherwise
    ('http://[::1]:9/r.git', True), ('http://[0:0::1]:9/r.git', True), ('https://[::1]:9/r.git', False),
    ('file:///srv/r.git', True), ('/srv/r.git', True),
])
def test_listed_hosts_match_scheme_host_and_port_exactly(url: str, allowed: bool) -> None:
    assert LISTED.allows(url) is allowed


def test_the_list_reads_back_as_written() -> None:
    assert str(LISTED) == 'github.com,https://ghe.example.com:8443,http://127.0.0.1:8080,http://[::1]:*,file://'
    assert str(GitHosts.parse('')) == 'empty' and not GitHosts.parse('').allows('https://github.com/o/r.git')


@pytest.mark.parametrize('entry', ['ftp://host', 'ssh://github.com', 'https://host/path', 'user@host',
                                   'https://host:port', 'http://host:99999999', 'http://host:65536', 'https://ho st',
                                   '*.github.com'])
def test_a_mistyped_entry_stops_the_operator_at_startup(entry: str) -> None:
    with pytest.raises(ValueError, match='PANDA_DEPLOY_GIT_HOSTS'):
        Config.from_env({'PANDA_DEPLOY_GIT_HOSTS': f'github.com,{entry}'})


def test_the_preflight_names_the_field_the_host_and_the_setting() -> None:
    spec = PandaDeploySpec.model_validate({
        'source': {'url': 'http://git.tenant.example:3000/o/r.git', 'tokenSecretRef': {'name': 'gh'}},
        'aws': {'region': 'ap-northeast-2'}})
    with pytest.raises(SourceNotAllowed) as refused:
        DEFAULT.check_source(spec.source)
    assert refused.value.message == (
        'spec.source.url http://git.tenant.example:3000/o/r.git may not be sent the token of '
        'spec.source.tokenSecretRef: the operator sends tokens only to the git hosts in PANDA_DEPLOY_GIT_HOSTS '
        '(github.com), and http://git.tenant.example:3000 is not one of them; a cluster admin can add it there, '
        'or remove tokenSecretRef for a public repository')
    spec.source.token_secret_ref = None
    DEFAULT.check_source(spec.source)  # no token: nothing of the operator's goes there
    shorthand = PandaDeploySpec.model_validate({'source': {'repo': 'o/r', 'tokenSecretRef': {'name': 'gh'}},
                                                'aws': {'region': 'ap-northeast-2'}})
    DEFAULT.check_source(shorthand.source)
    with pytest.raises(SourceNotAllowed, match='^spec.source.repo https://github.com/o/r.git '):
        GitHosts.parse('ghe.example.com').check_source(shorthand.source)


# Health checks.

@pytest.mark.parametrize(('address', 'network'), [
    ('169.254.169.254', '169.254.0.0/16'), ('169.254.170.2', '169.254.0.0/16'), ('169.254.0.1', '169.254.0.0/16'),
    ('fd00:ec2::254', 'fd00:ec2::254/128'), ('FD00:EC2:0::254', 'fd00:ec2::254/128'),
    ('::ffff:169.254.169.254', '169.254.0.0/16'), ('64:ff9b::a9fe:a9fe', '169.254.0.0/16'),
    ('fe80::1%eth0', None), ('127.0.0.1', None), ('10.0.0.1', None), ('fd00:ec2::253', None),
])
def test_the_default_deny_list_covers_the_metadata_addresses_in_every_form(address: str, network: str | None) -> None:
    found = DeniedNetworks.default().match(address)
    assert (str(found) if found else None) == network


def test_a_refusal_names_the_host_its_address_the_network_and_the_setting() -> None:
    denied = DeniedNetworks.default()
    assert denied.refusal('169.254.169.254', ['169.254.169.254']) == (
        '169.254.169.254 is in 169.254.0.0/16: not allowed (PANDA_DEPLOY_HEALTH_CHECK_DENY)')
    assert denied.refusal('meta.example', ['10.0.0.1', '169.254.169.254']) == (
        'meta.example resolves to 169.254.169.254, which is in 169.254.0.0/16: not allowed '
        '(PANDA_DEPLOY_HEALTH_CHECK_DENY)')
    assert denied.refusal('app.example', ['10.0.0.1']) is None


def test_the_deny_list_is_the_operators_setting() -> None:
    assert str(Config.from_env({}).health_check_deny) == '169.254.0.0/16,fd00:ec2::254/128'
    narrowed = Config.from_env({'PANDA_DEPLOY_HEALTH_CHECK_DENY': '169.254.0.0/16, 10.0.0.0/8'}).health_check_deny
    assert narrowed.match('10.1.2.3') is not None
    assert Config.from_env({'PANDA_DEPLOY_HEALTH_CHECK_DENY': ''}).health_check_deny.match('169.254.169.254') is None
    with pytest.raises(ValueError, match="PANDA_DEPLOY_HEALTH_CHECK_DENY: '169.254.1.1/16' is not a network"):
        Config.from_env({'PANDA_DEPLOY_HEALTH_CHECK_DENY': '169.254.1.1/16'})
    assert str(Config.from_env({}).git_hosts) == 'github.com'
