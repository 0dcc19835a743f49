"""A fault-injecting HTTP reverse proxy for the fault tests.

`FaultProxy(upstream)` listens on 127.0.0.1 and forwards every request to
`upstream` (the sandbox AWS, or an OCI registry), except where a `Rule`
matches: then it injects a fault instead of (or before) forwarding.

Faults (`Fault.kind`):
- `throttle`: HTTP 400 with the protocol's throttling body: JSON 1.1 services
  (ECS, CodeDeploy, ECR: an `X-Amz-Target` header) get
  `{"__type": "ThrottlingException", ...}`; query/XML services (ELBv2, STS: a
  form body with `Action=`) get `<ErrorResponse><Error><Code>Throttling</Code>...`
  (the code those services really use); anything else (a registry) gets a 429
  with the distribution spec's `TOOMANYREQUESTS` error.
- `500` / `503`: `InternalFailure` / `ServiceUnavailable` in the same protocol
  (a registry gets the distribution spec's `UNKNOWN` / `UNAVAILABLE`).
- `403`: for a registry, the distribution spec's `DENIED`; for AWS,
  `AccessDeniedException` (JSON) or `AccessDenied` (XML).
- `drop`: the connection is closed without any answer.
- `delay`: the request is forwarded after `seconds`.

A `Rule` matches on the AWS operation (`X-Amz-Target`'s operation or the query
`Action`), the HTTP method and a path regex, and fires for its next `times`
matching requests (None: for ever). Rules are tried in the order added; the
first one that matches and is not used up decides. `schedule` maps the
proxy's request number (1-based, over all requests) to a fault too.

Every request is recorded (`records`): time (monotonic), method, path,
operation, botocore's `amz-sdk-invocation-id` and attempt number (which tie
the attempts of one SDK call together), what was injected and the status sent.
"""
from __future__ import annotations

import collections
import dataclasses
import http.client
import http.server
import json
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable

FAULT_KINDS = ('throttle', '500', '503', '403', 'drop', 'delay')
HOP_BY_HOP = frozenset({'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te',
                        'trailers', 'transfer-encoding', 'upgrade', 'content-length'})
# (status, JSON 1.1 code, query/XML code, registry code) per fault.
_ANSWERS = {
    'throttle': (400, 'ThrottlingException', 'Throttling', 'TOOMANYREQUESTS'),
    '500': (500, 'InternalFailure', 'InternalFailure', 'UNKNOWN'),
    '503': (503, 'ServiceUnavailable', 'ServiceUnavailable', 'UNAVAILABLE'),
    '403': (403, 'AccessDeniedException', 'AccessDenied', 'DENIED'),
}
_MESSAGES = {
    'throttle': 'Rate exceeded', '500': 'We encountered an internal error. Please try again.',
    '503': 'Service is unavailable. Please try again later.', '403': 'requested access to the resource is denied',
}


@dataclasses.dataclass(frozen=True)
class Fault:
    kind: str
    seconds: float = 0.0  # for `delay`

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f'unknown fault kind {self.kind!r}; one of {", ".join(FAULT_KINDS)}')


@dataclasses.dataclass
class Rule:
    fault: Fault
    operation: str | None = None  # e.g. 'RegisterTaskDefinition', 'DescribeListeners'
    method: str | Iterable[str] | None = None
    path: str | None = None  # a regex searched in the path
    body: str | None = None  # a regex searched in the request body (e.g. a resource name)
    times: int | None = 1  # None: every matching request
    fired: int = 0

    def matches(self, request: Request) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.operation is not None and request.operation != self.operation:
            return False
        if self.method is not None:
            methods = {self.method} if isinstance(self.method, str) else set(self.method)
            if request.method not in methods:
                return False
        if self.body is not None and re.search(self.body, request.body) is None:
            return False
        return self.path is None or re.search(self.path, request.path) is not None


@dataclasses.dataclass
class Request:
    number: int
    at: float  # time.monotonic() when the request was read
    method: str
    path: str
    protocol: str  # 'json', 'query' or 'plain'
    operation: str | None
    invocation: str | None  # botocore's amz-sdk-invocation-id: one per SDK call, across its retries
    attempt: int | None  # botocore's attempt number (amz-sdk-request: attempt=N)
    injected: str | None = None
    status: int | None = None  # what the client got; None for a dropped connection
    rule: Rule | None = dataclasses.field(default=None, repr=False)  # the rule that injected the fault
    body: str = dataclasses.field(default='', repr=False)  # the first 64 KiB, for matching


class FaultProxy:
    """A threaded reverse proxy to `upstream` (http://host:port) injecting faults by rule or schedule."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream if '://' in upstream else f'http://{upstream}')
        self.upstream_host, self.upstream_port = parsed.hostname or '127.0.0.1', parsed.port or 80
        self.rules: list[Rule] = []
        self.schedule: dict[int, Fault] = {}
        self.records: list[Request] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def do_GET(self) -> None:  # noqa: N802 (http.server's names)
                proxy._handle(self)

            do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.address = f'127.0.0.1:{self.port}'
        self.url = f'http://{self.address}'
        self._thread = threading.Thread(target=self.server.serve_forever, name='fault-proxy', daemon=True)
        self._thread.start()

    # -- configuring --------------------------------------------------------------------

    def add(self, fault: Fault | str, **match: object) -> Rule:
        """Inject `fault` into the next `times` (default 1) requests matching `operation`/`method`/`path`."""
        rule = Rule(fault=Fault(fault) if isinstance(fault, str) else fault, **match)  # type: ignore[arg-type]
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.schedule.clear()

    def reset(self) -> None:
        """No rules and no records."""
        with self._lock:
            self.rules.clear()
            self.schedule.clear()
            self.records.clear()

    # -- reading ------------------------------------------------------------------------

    def injected(self) -> collections.Counter[str]:
        """How many faults of each kind were injected."""
        with self._lock:
            return collections.Counter(r.injected for r in self.records if r.injected)

    def requests(self, operation: str | None = None, *, rule: Rule | None = None) -> list[Request]:
        """The requests recorded, of `operation` when given, faulted by `rule` when given."""
        with self._lock:
            return [r for r in self.records if (operation is None or r.operation == operation)
                    and (rule is None or r.rule is rule)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving ------------------------------------------------------------------------

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = _read_body(handler)
        headers = handler.headers
        target = headers.get('X-Amz-Target')
        operation: str | None = None
        if target:
            protocol, operation = 'json', target.rsplit('.', 1)[-1]
        else:
            form = urllib.parse.parse_qs(body.decode('latin-1')) if body and b'Action=' in body else {}
            if form.get('Action'):
                protocol, operation = 'query', form['Action'][0]
            else:
                protocol = 'plain'
        attempt = re.search(r'attempt=(\d+)', headers.get('amz-sdk-request', ''))
        with self._lock:
            request = Request(number=len(self.records) + 1, at=time.monotonic(), method=handler.command,
                              path=handler.path, protocol=protocol, operation=operation,
                              invocation=headers.get('amz-sdk-invocation-id'),
                              attempt=int(attempt.group(1)) if attempt else None,
                              body=body[:65536].decode('latin-1'))
            self.records.append(request)
            fault = self.schedule.pop(request.number, None)
            if fault is None:
                for rule in self.rules:
                    if rule.matches(request):
                        rule.fired += 1
                        fault, request.rule = rule.fault, rule
                        break
            request.injected = fault.kind if fault else None

        if fault is not None and fault.kind == 'drop':
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault is not None and fault.kind == 'delay':
            time.sleep(fault.seconds)
        elif fault is not None:
            request.status = self._answer(handler, request, fault)
            return
        request.status = self._forward(handler, body)

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, request: Request, fault: Fault) -> int:
        status, json_code, query_code, registry_code = _ANSWERS[fault.kind]
        message = _MESSAGES[fault.kind]
        request_id = str(uuid.uuid4())
        if request.protocol == 'json':
            content_type = 'application/x-amz-json-1.1'
            payload = json.dumps({'__type': json_code, 'message': message}).encode()
        elif request.protocol == 'query':
            content_type = 'text/xml'
            kind = 'Sender' if status < 500 else 'Receiver'
            payload = (f'<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">'
                       f'<Error><Type>{kind}</Type><Code>{query_code}</Code><Message>{message}</Message></Error>'
                       f'<RequestId>{request_id}</RequestId></ErrorResponse>').encode()
        else:
            status = 429 if fault.kind == 'throttle' else status
            content_type = 'application/json'
            payload = json.dumps({'errors': [{'code': registry_code, 'message': message, 'detail': None}]}).encode()
        handler.send_response(status)
        handler.send_header('Content-Type', content_type)
        handler.send_header('Content-Length', str(len(payload)))
        handler.send_header('x-amzn-RequestId', request_id)
        handler.end_headers()
        if handler.command != 'HEAD':
            handler.wfile.write(payload)
        return status

    def _forward(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> int | None:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
            if body or handler.command in ('POST', 'PUT', 'PATCH'):
                headers['Content-Length'] = str(len(body))
            connection.request(handler.command, handler.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except OSError:
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return None
        finally:
            connection.close()
        handler.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                handler.send_header(name, value)
        if handler.command == 'HEAD':
            length = response.getheader('Content-Length')
            if length is not None:
                handler.send_header('Content-Length', length)
        else:
            handler.send_header('Content-Length', str(len(payload)))
        handler.end_headers()
        if handler.command != 'HEAD':
            handler.wfile.write(payload)
        return int(response.status)


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    """The whole request body: by Content-Length, or decoded from chunked transfer encoding."""
    if 'chunked' in handler.headers.get('Transfer-Encoding', '').lower():
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b';', 1)[0].strip() or b'0', 16)
            if size == 0:
                while handler.rfile.readline() not in (b'\r\n', b'\n', b''):
                    pass  # trailers
                return b''.join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()  # the CRLF after each chunk
    length = int(handler.headers.get('Content-Length') or 0)
    return handler.rfile.read(length) if length else b''


def gaps(times: Iterable[float]) -> list[float]:
    """Differences between successive times."""
    ordered = list(times)
    return [round(b - a, 3) for a, b in zip(ordered, ordered[1:], strict=False)]
