"""A stand-in for GitHub's REST API (commit statuses), checked against GitHub's OpenAPI description.

Every request is checked with `tests.github_contract` (method, path,
parameters, body) and so is every answer it gives in the normal mode; a
request the description does not allow is kept in `violations` and answered
422, so a test that sees none knows each call was GitHub's. It also asks for
`Authorization: Bearer TOKEN` (the token it was given), a User-Agent (GitHub
refuses requests without one) and the API version header.

Modes play a hostile or broken server: `huge` (a 201 whose body never ends), `drip` (one
that comes a byte at a time),
`hang` (reads the request, never answers), `redirect` (302 elsewhere),
`fail` (answers 502 `failures` times, then normally), `ratelimit` (GitHub's 403 with
`x-ratelimit-remaining: 0`, `failures` times).
"""
from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
from typing import Any

from tests.github_contract import ContractError, GitHubContract

USER = {
    'login': 'panda-bot', 'id': 1, 'node_id': 'MDQ6VXNlcjE=', 'avatar_url': 'https://example.com/a.png',
    'gravatar_id': None, 'url': 'https://api.github.com/users/panda-bot', 'html_url': 'https://github.com/panda-bot',
    'followers_url': 'x', 'following_url': 'x', 'gists_url': 'x', 'starred_url': 'x', 'subscriptions_url': 'x',
    'organizations_url': 'x', 'repos_url': 'x', 'events_url': 'x', 'received_events_url': 'x', 'type': 'Bot',
    'site_admin': False}


@dataclasses.dataclass
class Call:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class GitHubStandIn:
    def __init__(self, *, token: str, prefix: str = '', description: str = 'api.github.com') -> None:
        self.token, self.prefix = token, prefix  # prefix: '/api/v3' for GitHub Enterprise Server
        self.contract = GitHubContract(description)
        self.calls: list[Call] = []
        self.statuses: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.violations: list[str] = []
        self.mode, self.failures = 'ok', 0
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def do_POST(self) -> None:  # noqa: N802
                standin._handle(self)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f'http://127.0.0.1:{self.server.server_address[1]}{self.prefix}'

    def __enter__(self) -> GitHubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get('Content-Length') or 0)
        body = request.rfile.read(min(length, 1 << 20))
        call = Call(request.command, request.path, dict(request.headers.items()), body)
        with self._lock:
            self.calls.append(call)
            mode = self.mode
            failing = mode in ('fail', 'ratelimit') and self.failures > 0
            self.failures -= failing
        if mode == 'hang':
            self.stopped.wait(60)
            return
        if mode == 'redirect':
            return self._answer(request, 302, b'', location='http://169.254.169.254/latest/meta-data/')
        if mode in ('huge', 'drip'):
            return self._huge(request, drip=mode == 'drip')
        if failing and mode == 'ratelimit':
            return self._answer(request, 403, b'{"message": "API rate limit exceeded"}',
                                headers={'x-ratelimit-remaining': '0', 'x-ratelimit-reset': str(int(time.time()))})
        if failing:
            return self._answer(request, 502, b'{"message": "Server Error"}')
        status, answer = self._serve(call)
        self._answer(request, status, answer)

    def _serve(self, call: Call) -> tuple[int, bytes]:
        if not call.target.startswith(self.prefix + '/'):
            return self._refuse(f'{call.target}: not under the API base {self.prefix or "/"}')
        try:
            matched = self.contract.check_request(call.method, call.target[len(self.prefix):], call.headers, call.body)
        except (ContractError, Exception) as exc:  # jsonschema's ValidationError for a path parameter too
            return self._refuse(str(exc))
        if call.headers.get('Authorization') != f'Bearer {self.token}':
            return 401, b'{"message": "Bad credentials"}'
        if not call.headers.get('User-Agent') or call.headers.get('X-GitHub-Api-Version') != '2022-11-28':
            return self._refuse('User-Agent and X-GitHub-Api-Version 2022-11-28 are required')
        sent = json.loads(call.body)
        params = matched.params
        now = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        status = {'url': f'https://api.github.com/repos/{params["owner"]}/{params["repo"]}/statuses/{params["sha"]}',
                  'avatar_url': None, 'id': len(self.calls), 'node_id': 'SC_1', 'state': sent['state'],
                  'description': sent.get('description'), 'target_url': sent.get('target_url'),
                  'context': sent.get('context', 'default'), 'created_at': now, 'updated_at': now, 'creator': USER}
        answer = json.dumps(status).encode()
        self.contract.check_answer(matched, 201, answer)
        with self._lock:
            self.statuses.setdefault((params['owner'], params['repo'], params['sha']), []).append(sent)
        return 201, answer

    def _refuse(self, why: str) -> tuple[int, bytes]:
        with self._lock:
            self.violations.append(why)
        return 422, json.dumps({'message': 'Validation Failed', 'detail': why}).encode()

    @staticmethod
    def _answer(request: http.server.BaseHTTPRequestHandler, status: int, body: bytes,
                location: str | None = None, headers: dict[str, str] | None = None) -> None:
        request.send_response(status)
        request.send_header('Content-Type', 'application/json')
        request.send_header('Content-Length', str(len(body)))
        if location:
            request.send_header('Location', location)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)

    def _huge(self, request: http.server.BaseHTTPRequestHandler, *, drip: bool = False) -> None:
        """An answer that never ends: 64 KiB at a time, or (`drip`) a byte every 50 ms, each within any
        per-read timeout."""
        request.send_response(201)
        request.send_header('Content-Type', 'application/json')
        request.send_header('Content-Length', str(1 << 34))
        request.end_headers()
        chunk = b' ' * (1 if drip else 65536)
        try:
            while not self.stopped.wait(0.05 if drip else 0):
                request.wfile.write(chunk)
                request.wfile.flush()
        except OSError:
            pass
