"""A smart-HTTP git server for tests: `git http-backend` as CGI behind a threaded HTTP server.

It demands the token the way GitHub takes one (HTTP basic auth, any user
name, the token as password) and answers 401 with `WWW-Authenticate: Basic`
otherwise, so the adapter's token handling is exercised against real git on
both ends without the network. `error_text` makes it refuse every request
with a git protocol error (`ERR …`) that git prints verbatim, to check
redaction of what servers say.
"""
from __future__ import annotations

import base64
import http.server
import os
import pathlib
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager


class GitHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: pathlib.Path, *, token: str | None = None, error_text: str | None = None) -> None:
        super().__init__(('127.0.0.1', 0), _Handler)
        self.root = root
        self.token = token
        self.error_text = error_text
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, sent Authorization)

    def url(self, name: str) -> str:
        host, port = self.server_address[:2]
        return f'http://{host}:{port}/{name}'

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        if not header or not header.startswith('Basic '):
            return False
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(':')
        except ValueError:
            return False
        return password == self.token


@contextmanager
def serving(root: pathlib.Path, *, token: str | None = None, error_text: str | None = None) -> Iterator[GitHttpServer]:
    """A running server for the repositories under `root`, shut down on exit."""
    server = GitHttpServer(root, token=token, error_text=error_text)
    thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05}, name='git-http', daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _pkt(text: str) -> bytes:
    data = text.encode()
    return f'{len(data) + 4:04x}'.encode() + data


class _Handler(http.server.BaseHTTPRequestHandler):
    server: GitHttpServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._serve()

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self._serve()

    def _serve(self) -> None:
        path, _, query = self.path.partition('?')
        auth = self.headers.get('Authorization')
        self.server.requests.append((self.command, self.path, auth is not None))
        if not self.server.authorized(auth):
            self._reply(401, {'WWW-Authenticate': 'Basic realm="git"', 'Content-Type': 'text/plain'},
                        b'authentication required\n')
            return
        body = self._body()
        if self.server.error_text is not None:
            service = urllib.parse.parse_qs(query).get('service', ['git-upload-pack'])[0]
            payload = _pkt(f'# service={service}\n') + b'0000' + _pkt(f'ERR {self.server.error_text}\n')
            self._reply(200, {'Content-Type': f'application/x-{service}-advertisement'}, payload)
            return
        env = {
            'PATH': os.environ.get('PATH', '/usr/bin:/bin'),
            'GIT_PROJECT_ROOT': str(self.server.root),
            'GIT_HTTP_EXPORT_ALL': '1',
            'PATH_INFO': urllib.parse.unquote(path),
            'QUERY_STRING': query,
            'REQUEST_METHOD': self.command,
            'CONTENT_TYPE': self.headers.get('Content-Type', ''),
            'CONTENT_LENGTH': str(len(body)),
            'REMOTE_ADDR': self.client_address[0],
            'GIT_CONFIG_NOSYSTEM': '1',
            'GIT_CONFIG_GLOBAL': '/dev/null',
        }
        for header, variable in (('Content-Encoding', 'HTTP_CONTENT_ENCODING'), ('Git-Protocol', 'GIT_PROTOCOL')):
            if self.headers.get(header):
                env[variable] = self.headers[header]
        done = subprocess.run(['git', 'http-backend'], input=body, env=env, capture_output=True, timeout=60)
        head, _, payload = done.stdout.partition(b'\r\n\r\n')
        if not payload and b'\n\n' in head:
            head, _, payload = done.stdout.partition(b'\n\n')
        status, headers = 200, {}
        for line in head.decode('latin-1').splitlines():
            name, _, value = line.partition(':')
            if name.lower() == 'status':
                status = int(value.split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        self._reply(status, headers, payload)

    def _body(self) -> bytes:
        """The request body, de-chunked (git streams big POSTs chunked); gzip is left to http-backend."""
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return b''.join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get('Content-Length') or 0)
        return self.rfile.read(length) if length else b''

    def _reply(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ('content-length', 'connection'):
                self.send_header(name, value)
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
