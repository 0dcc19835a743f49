"""One HTTP GET as a health check sees it: status, seconds, and what went wrong.

A probe never raises: a refused connection, a timeout, a TLS failure or a
malformed response is a failed check, not a crashed stage, so Verify can count
it and report it (`error`, status None). Any HTTP answer, 4xx and 5xx
included, is reported with its status: whether it passes is the caller's
`expectedStatus` to decide. The body is read (up to 1 MiB), so `seconds`
covers the whole response.

The URL is the tenant's (`spec.healthCheck.url`), and so is the application
answering it, so the probe must not become the tenant's way into what only
the operator can reach (the cloud's metadata service hands out credentials):

- The host is resolved once; when any address it resolves to is in the
  operator's deny-list (`denied`, PANDA_DEPLOY_HEALTH_CHECK_DENY, default
  link-local 169.254.0.0/16 and fd00:ec2::254) the probe connects to none of
  them and says so (`denied`). Otherwise it connects to exactly the addresses
  it checked, so no second DNS answer (rebinding) gets a say.
- Redirects are followed only to the same scheme, host and port, at most 3;
  a fourth is reported as that redirect's status with an error, and a
  redirect elsewhere is reported unfollowed.
- Through an HTTP proxy (the `http_proxy`/`https_proxy` environment, as
  urllib reads it; the sandbox's load balancer stand-in is one), the proxy
  connects, so it resolves the name: here only an address written in the
  URL is checked, and the proxy's own rules must deny the rest.

http.client from the standard library is enough, and keeps the operator's
dependencies small.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.parse
import urllib.request
from typing import Any

from controller.adapters import Probe
from controller.egress import DeniedNetworks

MAX_REDIRECTS = 3
MAX_BODY_BYTES = 1 << 20
USER_AGENT = 'panda-deploy-healthcheck'
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {'http': 80, 'https': 443}


class NotAllowed(Exception):
    """The URL's address is in the deny-list: no connection was attempted."""


class HttpProbe:
    """The `Http` adapter: GET with http.client, checked addresses, same-origin redirects (at most 3)."""

    def __init__(self, *, denied: DeniedNetworks | None = None) -> None:
        self.denied = denied if denied is not None else DeniedNetworks.default()
        self._tls = ssl.create_default_context()

    def get(self, url: str, *, timeout: float) -> Probe:
        """GET `url`; `Probe(status, seconds, error, denied)`, status None when no HTTP answer came."""
        started = time.monotonic()
        try:
            status, error = self._follow(url, timeout=timeout)
        except NotAllowed as exc:
            return Probe(status=None, seconds=time.monotonic() - started, error=str(exc), denied=True)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return Probe(status=None, seconds=time.monotonic() - started, error=_describe(exc))
        return Probe(status=status, seconds=time.monotonic() - started, error=error)

    def _follow(self, url: str, *, timeout: float) -> tuple[int, str | None]:
        """(status, error) of `url` after same-origin redirects."""
        origin = _origin(url)
        for hop in range(MAX_REDIRECTS + 1):
            status, location = self._get_once(url, timeout=timeout)
            if status not in REDIRECT_CODES or not location:
                return status, None
            target = urllib.parse.urljoin(url, location)
            try:
                same = _origin(target) == origin
            except ValueError:
                same = False
            if not same:
                return status, f'redirect to {target} not followed (another host)'
            if hop == MAX_REDIRECTS:
                return status, f'more than {MAX_REDIRECTS} redirects'
            url = target
        raise AssertionError('unreachable')

    def _get_once(self, url: str, *, timeout: float) -> tuple[int, str | None]:
        """(status, Location) of one GET, its body read (up to MAX_BODY_BYTES)."""
        scheme, host, port = _origin(url)
        parts = urllib.parse.urlsplit(url)
        target = urllib.parse.urlunsplit(('', '', parts.path or '/', parts.query, ''))
        headers = {'User-Agent': USER_AGENT}
        connection, proxied = self._connection(scheme, host, port, timeout=timeout)
        if proxied and scheme == 'http':  # an http proxy is asked for the absolute URL
            target = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path or '/', parts.query, ''))
            headers['Host'] = parts.netloc.rpartition('@')[2]
        try:
            connection.request('GET', target, headers=headers)
            response = connection.getresponse()
            response.read(MAX_BODY_BYTES)
            return response.status, response.getheader('Location')
        finally:
            connection.close()

    def _connection(self, scheme: str, host: str, port: int, *,
                    timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """(a connection to `host` at a checked address, or to the proxy for it; whether through a proxy)."""
        proxy = _proxy_for(scheme, host)
        if proxy is not None:  # the proxy resolves the name: only an address spelled in the URL is checked here
            self._check(host, _numeric_addresses(host, port))
            proxy_host, proxy_port = proxy
            if scheme == 'http':
                return http.client.HTTPConnection(proxy_host, proxy_port, timeout=timeout), True
            tunnel = http.client.HTTPSConnection(proxy_host, proxy_port, timeout=timeout, context=self._tls)
            tunnel.set_tunnel(host, port, headers={'User-Agent': USER_AGENT})
            return tunnel, True
        sock = self._connect(host, port, timeout=timeout)
        if scheme == 'https':
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout,
                                                                                  context=self._tls)
            sock = self._tls.wrap_socket(sock, server_hostname=host)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.sock = sock
        return connection, False

    def _connect(self, host: str, port: int, *, timeout: float) -> socket.socket:
        """A socket connected to one of the addresses `host` resolves to, all of them checked first."""
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        self._check(host, [str(info[4][0]) for info in found])
        error: OSError | None = None
        for family, kind, protocol, _, address in found:
            sock = socket.socket(family, kind, protocol)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f'{host} resolves to no address')

    def _check(self, host: str, addresses: list[str]) -> None:
        refusal = self.denied.refusal(host, addresses)
        if refusal is not None:
            raise NotAllowed(refusal)


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, port defaulted; ValueError for anything else."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f'not an http(s) URL: {url!r}')
    return scheme, parts.hostname.lower(), parts.port or _DEFAULT_PORTS[scheme]


def _proxy_for(scheme: str, host: str) -> tuple[str, int] | None:
    """The (host, port) of the HTTP proxy the environment names for `scheme`, unless `host` bypasses it."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parts = urllib.parse.urlsplit(proxy if '://' in proxy else f'http://{proxy}')
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or 80


def _numeric_addresses(host: str, port: int) -> list[str]:
    """The address `host` spells in any numeric form (169.254.169.254, 2852039166, 0251.0376.0251.0376, an IPv6
    address), without asking DNS; [] for a name."""
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                               flags=socket.AI_NUMERICHOST)]
    except socket.gaierror:
        return []


def _describe(reason: Any) -> str:
    if isinstance(reason, TimeoutError):
        return 'timed out'
    if isinstance(reason, BaseException):
        text = str(reason)
        return f'{type(reason).__name__}: {text}' if text else type(reason).__name__
    return str(reason)
