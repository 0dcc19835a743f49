"""One HTTP GET as a health check sees it: status, seconds, and what went wrong.

A probe never raises: a refused connection, a timeout, a TLS failure or a
malformed response is a failed check, not a crashed stage, so Verify can count
it and report it (`error`, status None). Any HTTP answer, 4xx and 5xx
included, is reported with its status: whether it passes is the caller's
`expectedStatus` to decide. Up to 3 redirects are followed; a fourth is
reported as that redirect's status with an error. The standard library
(urllib) is enough, and keeps the operator's dependencies small. The body is
read (up to 1 MiB), so `seconds` covers the whole response.
"""
from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from typing import Any

from controller.adapters import Probe

MAX_REDIRECTS = 3
MAX_BODY_BYTES = 1 << 20
USER_AGENT = 'panda-deploy-healthcheck'


class _LimitedRedirects(urllib.request.HTTPRedirectHandler):
    # urllib counts distinct URLs (max_redirections) and visits of one URL (max_repeats): bound both.
    max_redirections = MAX_REDIRECTS
    max_repeats = MAX_REDIRECTS
    redirect_codes = frozenset({301, 302, 303, 307, 308})


class HttpProbe:
    """The `Http` adapter: GET with urllib, at most 3 redirects, errors as values."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_LimitedRedirects())

    def get(self, url: str, *, timeout: float) -> Probe:
        """GET `url`; `Probe(status, seconds, error)`, status None when no HTTP answer came."""
        started = time.monotonic()
        try:
            request = urllib.request.Request(url, headers={'User-Agent': USER_AGENT}, method='GET')
            with self._opener.open(request, timeout=timeout) as response:  # noqa: S310 (http and https only)
                response.read(MAX_BODY_BYTES)
                return Probe(status=int(response.status), seconds=time.monotonic() - started)
        except urllib.error.HTTPError as exc:
            seconds = time.monotonic() - started
            _close(exc)
            if exc.code in _LimitedRedirects.redirect_codes and exc.headers and exc.headers.get('Location'):
                return Probe(status=exc.code, seconds=seconds, error=f'more than {MAX_REDIRECTS} redirects')
            return Probe(status=exc.code, seconds=seconds)
        except urllib.error.URLError as exc:
            return Probe(status=None, seconds=time.monotonic() - started, error=_describe(exc.reason))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return Probe(status=None, seconds=time.monotonic() - started, error=_describe(exc))


def _describe(reason: Any) -> str:
    if isinstance(reason, TimeoutError):
        return 'timed out'
    if isinstance(reason, BaseException):
        text = str(reason)
        return f'{type(reason).__name__}: {text}' if text else type(reason).__name__
    return str(reason)


def _close(exc: urllib.error.HTTPError) -> None:
    try:
        exc.close()
    except Exception:  # noqa: BLE001 (best effort: the probe's answer is already known)
        pass
