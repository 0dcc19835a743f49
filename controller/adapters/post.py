"""One bounded HTTP POST of a notification: to GitHub's API or to a tenant's webhook.

The server at the other end is a stranger (a webhook URL is the tenant's; a
GitHub Enterprise host is whatever the admin named), so what it can cost the
operator is bounded:

- time: one deadline for the whole exchange (connect, send, headers, body);
  a watchdog shuts the socket down when it passes, so a server that drips
  its answer a byte at a time is cut off as surely as one that never answers;
- memory: at most `max_bytes` of the answer's body are read;
- reach: the host's addresses are checked against the denied networks
  before any connection (`HttpProbe`'s own resolver, so no second DNS answer
  gets a say), and a redirect is never followed (it is reported).

It returns the status and the (bounded) body, or raises `PostFailed`, which
says whether trying again later could help.
"""
from __future__ import annotations

import dataclasses
import http.client
import socket
import threading
import urllib.parse
from collections.abc import Mapping

from controller.adapters.http import HttpProbe, NotAllowed, _describe, _origin
from controller.egress import DeniedNetworks

MAX_ANSWER_BYTES = 64 * 1024
DEADLINE_SECONDS = 10.0


class PostFailed(Exception):
    """The POST got no acceptable answer; `retryable`: a later attempt may succeed (5xx, 429, timeouts)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.message, self.retryable = message, retryable


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    location: str | None = None
    rate_limited: bool = False  # Retry-After, or GitHub's x-ratelimit-remaining: 0 (its 403 for a rate limit)


def post(url: str, *, body: bytes, headers: Mapping[str, str], denied: DeniedNetworks,
         deadline: float = DEADLINE_SECONDS, max_bytes: int = MAX_ANSWER_BYTES) -> Answer:
    """POST `body` to `url` within `deadline` seconds, reading at most `max_bytes` of the answer."""
    try:
        scheme, host, port = _origin(url)
    except ValueError as exc:
        raise PostFailed(str(exc), retryable=False) from None
    parts = urllib.parse.urlsplit(url)
    target = urllib.parse.urlunsplit(('', '', parts.path or '/', parts.query, ''))
    cut = threading.Event()
    try:
        connection, _ = HttpProbe(denied=denied)._connection(scheme, host, port, timeout=deadline)
    except NotAllowed as exc:
        raise PostFailed(str(exc), retryable=False) from None
    except OSError as exc:
        raise PostFailed(_describe(exc), retryable=True) from None
    watchdog = threading.Timer(deadline, _cut_off, (connection, cut))
    watchdog.start()
    try:
        connection.request('POST', target, body=body, headers=dict(headers))
        response = connection.getresponse()
        answer = response.read(max_bytes + 1)
        status, location = response.status, response.getheader('Location')
        limited = bool(response.getheader('Retry-After')) or response.getheader('X-RateLimit-Remaining') == '0'
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = f'no answer within {deadline:g} seconds' if cut.is_set() else _describe(exc)
        raise PostFailed(reason, retryable=True) from None
    finally:
        watchdog.cancel()
        connection.close()
    if cut.is_set():  # the read ended because the watchdog shut the socket: a partial answer is no answer
        raise PostFailed(f'no answer within {deadline:g} seconds', retryable=True)
    if len(answer) > max_bytes:
        raise PostFailed(f'HTTP {status}: answer larger than {max_bytes} bytes', retryable=False)
    return Answer(status=status, body=answer, location=location, rate_limited=limited)


def _cut_off(connection: http.client.HTTPConnection, cut: threading.Event) -> None:
    """The deadline passed: end the exchange by shutting the socket down (the blocked read returns)."""
    cut.set()
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def judge(answer: Answer, *, what: str) -> None:
    """`PostFailed` unless the answer is a 2xx: 5xx, 408, 429 and a rate limit (GitHub answers 403) may pass
    later, other answers will not."""
    if 200 <= answer.status < 300:
        return
    if 300 <= answer.status < 400:
        raise PostFailed(f'{what}: HTTP {answer.status} redirect to {answer.location!s:.200} not followed',
                         retryable=False)
    text = answer.body[:200].decode('utf-8', 'replace')
    retryable = answer.status >= 500 or answer.status in (408, 429) or answer.rate_limited
    raise PostFailed(f'{what}: HTTP {answer.status}: {text}', retryable=retryable)
