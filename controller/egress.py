"""What the operator reaches on a tenant's behalf: where a git token may go, what a health check may not reach.

Tenants edit their own PandaDeploys and Secrets; only a cluster admin edits
the operator's Deployment. So both lists are operator configuration, read by
`controller.config` from the environment, and never spec fields:

- PANDA_DEPLOY_GIT_HOSTS (default `github.com`): the git hosts that may be
  sent a token from `spec.source.tokenSecretRef`. The operator may read
  Secrets a tenant cannot (the per-namespace RoleBinding mode), and a token
  sent to a server the tenant runs, or over plain http, is a token given
  away; so a resource whose URL names another host *and* a token stalls
  (`SourceNotAllowed`) before anything connects, and the git adapter refuses
  such a token as well, whoever calls it. A URL without a token sends
  nothing of the operator's and is not restricted.
  Entries, comma-separated: `host` or `https://host` (https on 443),
  `https://host:8443`, `http://host:8080` (plain http only when written with
  `http://`), a port of `*` for any port (tests, the sandbox), and `file://`
  for repositories on the operator's own disk. Hosts match exactly, as
  written (no wildcards, no DNS): `127.1` is not `127.0.0.1`, and a URL
  whose host cannot be told for certain (odd characters, user-info other
  than a plain user name) matches nothing.
- PANDA_DEPLOY_HEALTH_CHECK_DENY (default `169.254.0.0/16,fd00:ec2::254/128`):
  networks a health check never connects to: link-local, where the EC2
  instance metadata (169.254.169.254) and the ECS task credentials
  (169.254.170.2) answer, and EC2's IPv6 metadata address. An IPv6 address
  that carries an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`, NAT64
  `64:ff9b::a.b.c.d`) is checked as that IPv4 address too. An empty value
  denies nothing.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse

from controller.errors import Reason, Stall
from controller.models import Source

GIT_HOSTS_VARIABLE = 'PANDA_DEPLOY_GIT_HOSTS'
DEFAULT_GIT_HOSTS = 'github.com'
HEALTH_CHECK_DENY_VARIABLE = 'PANDA_DEPLOY_HEALTH_CHECK_DENY'
DEFAULT_HEALTH_CHECK_DENY = '169.254.0.0/16,fd00:ec2::254/128'

_DEFAULT_PORTS = {'https': 443, 'http': 80}
_LABEL = r'[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?'
_DNS_NAME = re.compile(rf'^{_LABEL}(?:\.{_LABEL})*$')
_HOST_PORT = re.compile(r'^(?P<host>\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(?P<port>[0-9]{1,5}|\*))?$')
_USER = re.compile(r'^[A-Za-z0-9._~-]+$')
_NAT64 = ipaddress.IPv6Network('64:ff9b::/96')

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SourceNotAllowed(Stall):
    """A token would go to a git host the operator does not allow: nothing connects until the spec or the
    operator's PANDA_DEPLOY_GIT_HOSTS changes."""
    reason = Reason.SOURCE_NOT_ALLOWED


@dataclasses.dataclass(frozen=True)
class Origin:
    """Scheme, host and port a URL connects to (`file` for local repositories: no host, no port)."""
    scheme: str
    host: str = ''
    port: int | None = None

    def __str__(self) -> str:
        if self.scheme == 'file':
            return 'file://'
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'{self.scheme}://{host}:{self.port}' if self.port is not None else f'{self.scheme}://{host}'


def _host(text: str) -> str | None:
    """A host name or address in one canonical spelling, or None when it is neither."""
    if text.startswith('['):
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            return None
    return text if _DNS_NAME.match(text) else None


def origin_of(url: str) -> Origin | None:
    """Where a git URL connects to, or None when that cannot be told for certain."""
    if '://' not in url:  # a path on the operator's disk
        return Origin('file') if url and not url.startswith('-') else None
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == 'file':
        return Origin('file')
    user, _, host_port = parts.netloc.rpartition('@')
    found = _HOST_PORT.match(host_port.lower())
    if (user and not _USER.match(user)) or found is None or found['port'] == '*':
        return None
    host = _host(found['host'])
    port = int(found['port']) if found['port'] else _DEFAULT_PORTS.get(scheme)
    return Origin(scheme, host, port) if host else None


@dataclasses.dataclass(frozen=True)
class GitHost:
    """One entry of PANDA_DEPLOY_GIT_HOSTS; `port` None: any port."""
    scheme: str
    host: str = ''
    port: int | None = None

    @classmethod
    def parse(cls, entry: str) -> GitHost:
        text = entry.strip().lower()
        if text == 'file://':
            return cls('file')
        scheme, separator, rest = text.partition('://')
        if not separator:
            scheme, rest = 'https', text
        found = _HOST_PORT.match(rest) if scheme in _DEFAULT_PORTS else None
        host = _host(found['host']) if found else None
        if found is None or host is None or found['port'] not in (None, '*') and int(found['port']) > 65535:
            raise ValueError(f'{GIT_HOSTS_VARIABLE}: {entry.strip()!r} is none of host, https://host[:port], '
                             'http://host:port (port * for any) and file://')
        port = found['port'] or str(_DEFAULT_PORTS[scheme])
        return cls(scheme, host, None if port == '*' else int(port))

    def admits(self, origin: Origin) -> bool:
        return (origin.scheme, origin.host) == (self.scheme, self.host) and self.port in (None, origin.port)

    def __str__(self) -> str:
        if self.scheme == 'https' and self.port == 443:
            return self.host if ':' not in self.host else f'https://[{self.host}]'
        text = str(Origin(self.scheme, self.host, self.port))
        return text if self.port is not None or self.scheme == 'file' else f'{text}:*'


@dataclasses.dataclass(frozen=True)
class GitHosts:
    """PANDA_DEPLOY_GIT_HOSTS: the hosts a token may be sent to."""
    entries: tuple[GitHost, ...] = ()

    @classmethod
    def parse(cls, text: str) -> GitHosts:
        return cls(tuple(GitHost.parse(entry) for entry in text.split(',') if entry.strip()))

    @classmethod
    def default(cls) -> GitHosts:
        return cls.parse(DEFAULT_GIT_HOSTS)

    def allows(self, url: str) -> bool:
        origin = origin_of(url)
        return origin is not None and any(entry.admits(origin) for entry in self.entries)

    def check(self, url: str, *, field: str = 'git URL') -> None:
        """`SourceNotAllowed` unless a token may be sent to where `url` connects."""
        if self.allows(url):
            return
        origin = origin_of(url)
        where = f'{origin} is not one of them' if origin else 'its host cannot be told for certain'
        raise SourceNotAllowed(
            f'{field} {_without_user_info(url)} may not be sent the token of spec.source.tokenSecretRef: '
            f'the operator sends tokens only to the git hosts in {GIT_HOSTS_VARIABLE} ({self}), and {where}; '
            'a cluster admin can add it there, or remove tokenSecretRef for a public repository')

    def check_source(self, source: Source) -> None:
        """The preflight: a source with a token must be on the list (one without is not restricted)."""
        if source.token_secret_ref is not None:
            self.check(source.clone_url, field='spec.source.url' if source.url else 'spec.source.repo')

    def __str__(self) -> str:
        return ','.join(str(entry) for entry in self.entries) or 'empty'


def _without_user_info(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if '@' not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition('@')[2]))


@dataclasses.dataclass(frozen=True)
class DeniedNetworks:
    """PANDA_DEPLOY_HEALTH_CHECK_DENY: where a health check never connects."""
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> DeniedNetworks:
        networks = []
        for entry in (part.strip() for part in text.split(',')):
            if entry:
                try:
                    networks.append(ipaddress.ip_network(entry))
                except ValueError as exc:
                    raise ValueError(f'{HEALTH_CHECK_DENY_VARIABLE}: {entry!r} is not a network ({exc})') from None
        return cls(tuple(networks))

    @classmethod
    def default(cls) -> DeniedNetworks:
        return cls.parse(DEFAULT_HEALTH_CHECK_DENY)

    def match(self, address: str) -> Network | None:
        """The denied network `address` (or the IPv4 address it carries) is in, or None."""
        ip = ipaddress.ip_address(address.split('%', 1)[0])
        forms: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                forms.append(ip.ipv4_mapped)
            if ip in _NAT64:
                forms.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return next((network for form in forms for network in self.networks
                     if form.version == network.version and form in network), None)

    def refusal(self, host: str, addresses: list[str]) -> str | None:
        """Why a health check may not connect to `host` at `addresses` (what it resolved to), or None."""
        for address in addresses:
            network = self.match(address)
            if network is not None:
                shown = address if _same_address(host, address) else f'{host} resolves to {address}, which'
                return f'{shown} is in {network}: not allowed ({HEALTH_CHECK_DENY_VARIABLE})'
        return None

    def __str__(self) -> str:
        return ','.join(str(network) for network in self.networks) or 'empty'


def _same_address(host: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip('[]')) == ipaddress.ip_address(address.split('%', 1)[0])
    except ValueError:
        return False
