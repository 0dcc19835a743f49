"""What the sandbox AWS's STS saw: who signed each AssumeRole and GetCallerIdentity, and what it answered.

`StsLog` wraps the moto application inside a running `AwsSandbox`
(`StsLog.install(sandbox)`), so a test can show which credentials assumed
which role: the access key that signed each request (from its SigV4
`Authorization` header), the role and session name asked for, and the access
key the answer issued. That is how role chaining is seen from AWS's side: the
second role is assumed with a key the first AssumeRole issued, never with
the operator's own key.
"""
from __future__ import annotations

import dataclasses
import io
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from controller.sandbox.aws import AwsSandbox

_SIGNED_BY = re.compile(r'Credential=([^/,\s]+)/')
_ACTIONS = ('AssumeRole', 'GetCallerIdentity')


@dataclasses.dataclass(frozen=True)
class StsCall:
    action: str
    signed_by: str
    role_arn: str | None = None
    session_name: str | None = None
    issued: str | None = None  # AssumeRole: the access key of the role's session
    arn: str | None = None  # GetCallerIdentity: the caller


class StsLog:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._calls: list[StsCall] = []

    @classmethod
    def install(cls, sandbox: AwsSandbox) -> StsLog:
        log = cls(sandbox.app.moto)
        sandbox.app.moto = log
        return log

    @property
    def calls(self) -> list[StsCall]:
        with self._lock:
            return list(self._calls)

    def assumed(self, role_arn: str) -> list[StsCall]:
        return [c for c in self.calls if c.action == 'AssumeRole' and c.role_arn == role_arn]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = environ['wsgi.input'].read(int(environ.get('CONTENT_LENGTH') or 0))
        environ['wsgi.input'] = io.BytesIO(body)
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode('utf-8', 'replace')).items()}
        if form.get('Action') not in _ACTIONS:
            return self.app(environ, start_response)
        payload = b''.join(self.app(environ, start_response))
        text = payload.decode('utf-8', 'replace')
        signed = _SIGNED_BY.search(environ.get('HTTP_AUTHORIZATION', ''))
        issued = re.search(r'<AccessKeyId>([^<]+)</AccessKeyId>', text)
        arn = re.search(r'<GetCallerIdentityResult>.*?<Arn>([^<]+)</Arn>', text, re.S)
        with self._lock:
            self._calls.append(StsCall(action=form['Action'], signed_by=signed.group(1) if signed else '',
                                       role_arn=form.get('RoleArn'), session_name=form.get('RoleSessionName'),
                                       issued=issued.group(1) if issued else None,
                                       arn=arn.group(1) if arn else None))
        return [payload]
