"""The operator's HTTP port: Prometheus /metrics, /healthz for the kubelet's probes, webhooks (controller.webhooks).

/healthz must tell the kubelet when the operator is alive but useless, so that
it restarts the pod: when Kopf's event loop is blocked (nothing is watched,
no run progresses) or when the worker pool is wedged (its threads stuck in
work that stage timeouts abandoned, while runs wait for a worker). Neither
can be judged from the loop itself, since a blocked loop answers nothing; so
the port is served by a small threaded stdlib HTTP server, and a watchdog
thread decides health from two signals:
- a heartbeat task on the loop stamps the time every second; a stamp older
  than `loop_stale_seconds` means the loop is blocked;
- a no-op is kept submitted to the pool; one that has waited more than
  `pool_stall_seconds` while other work waits in the pool's queue means no
  worker has come free for that long. A pool busy with long builds and
  nothing waiting is healthy.

Webhooks come from outside the cluster, from anyone, so they have a port of
their own (PANDA_DEPLOY_WEBHOOK_PORT, as Flux's receiver has): a flood there
cannot keep the kubelet's probe or Prometheus from an answer. Each port
serves at most MAX_CONNECTIONS connections at once, a thread each; one more
is answered 503 and closed at once, so no sender can make the operator grow
threads without bound.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.server
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import prometheus_client

from controller import metrics, webhooks

LOOP_STALE_SECONDS = 10.0
POOL_STALL_SECONDS = 120.0
HEARTBEAT_SECONDS = 1.0
logger = logging.getLogger('panda-deploy.http')

MAX_CONNECTIONS = 64
"""Connections one port serves at once (a thread each); more are answered 503 and closed."""
REQUEST_SECONDS = 10.0
"""How long a connection may take to send its request line and headers and be answered (a webhook's body has
`body_seconds` on top); after that it is cut, so a sender trickling bytes cannot keep a thread."""
HOOK_NAMES = {'/hooks/github': 'github', '/hooks/generic': 'generic'}
"""The webhook metric's `hook` label of each path; any other path (or none read) is `other`."""
_BUSY = b'HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'


class Watchdog:
    """Judges the event loop and the worker pool from a thread of its own."""

    def __init__(self, *, pool: concurrent.futures.ThreadPoolExecutor | None, loop_stale_seconds: float,
                 pool_stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.pool, self.clock = pool, clock
        self.loop_stale_seconds, self.pool_stall_seconds = loop_stale_seconds, pool_stall_seconds
        self.beat = clock()
        self.probe: concurrent.futures.Future[None] | None = None
        self.probe_sent = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name='healthz-watchdog', daemon=True)

    async def heartbeat(self) -> None:
        """Runs on the event loop: stamps the time while the loop turns."""
        while True:
            self.beat = self.clock()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def _watch(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            self._probe_pool()

    def _probe_pool(self) -> None:
        if self.pool is None or (self.probe is not None and not self.probe.done()):
            return
        self.probe_sent = self.clock()
        with contextlib.suppress(RuntimeError):  # shut down: the operator is exiting
            self.probe = self.pool.submit(lambda: None)

    def problems(self) -> list[str]:
        """What is wrong, as short sentences; empty when healthy."""
        now, found = self.clock(), []
        if now - self.beat > self.loop_stale_seconds:
            found.append(f'event loop blocked: no heartbeat for {now - self.beat:.0f}s '
                         f'(limit {self.loop_stale_seconds:g}s)')
        probe, pool = self.probe, self.pool
        if pool is not None and probe is not None and not probe.done():
            waited = now - self.probe_sent
            waiting = pool._work_queue.qsize() - 1  # besides the probe itself, which is in the queue until run
            if waited > self.pool_stall_seconds and waiting > 0:
                found.append(f'worker pool wedged: no worker free for {waited:.0f}s while {waiting} calls wait '
                             f'(limit {self.pool_stall_seconds:g}s)')
        return found


class _Handler(http.server.BaseHTTPRequestHandler):
    """What both ports share: answers, no request log, a limit on silence."""
    timeout = 30  # seconds a connection may stay silent (headers included) before its thread lets it go

    def do_GET(self) -> None:  # noqa: N802 -- the stdlib's name
        self._answer(404, b'not found\n', 'text/plain; charset=utf-8')

    def do_POST(self) -> None:  # noqa: N802 -- the stdlib's name
        self.close_connection = True  # its body is not read
        self._answer(404, b'not found\n', 'text/plain; charset=utf-8')

    def _answer(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes and scrapes every few seconds: not worth a log line


class _ProbesHandler(_Handler):
    """GET /metrics and /healthz."""
    watchdog: Watchdog

    def do_GET(self) -> None:  # noqa: N802 -- the stdlib's name
        path = self.path.split('?', 1)[0]
        if path == '/metrics':
            self._answer(200, prometheus_client.generate_latest(prometheus_client.REGISTRY),
                         prometheus_client.CONTENT_TYPE_LATEST)
        elif path == '/healthz':
            problems = self.watchdog.problems()
            text = ''.join(f'{p}\n' for p in problems) or 'ok\n'
            self._answer(503 if problems else 200, text.encode(), 'text/plain; charset=utf-8')
        else:
            super().do_GET()


class _HooksHandler(_Handler):
    """POST /hooks/…: a body of bounded size within `body_seconds`, handed to `hooks`; every answer counted."""
    hooks: webhooks.Webhooks
    body_seconds: float = webhooks.BODY_SECONDS

    def send_response(self, code: int, message: str | None = None) -> None:
        path = getattr(self, 'path', '').split('?', 1)[0]
        metrics.WEBHOOK_REQUESTS.labels(HOOK_NAMES.get(path, 'other'), str(code)).inc()
        super().send_response(code, message)

    def do_POST(self) -> None:  # noqa: N802 -- the stdlib's name
        path = self.path.split('?', 1)[0]
        if not path.startswith('/hooks/'):
            super().do_POST()
            return
        try:
            body = self._body()
        except webhooks.Refused as refused:
            self.close_connection = True
            self._answer(refused.status, f'{refused.message}\n'.encode(), 'text/plain; charset=utf-8')
            return
        status, text = self.hooks.handle(path=path, headers={k.lower(): v for k, v in self.headers.items()}, body=body)
        self._answer(status, f'{text}\n'.encode(), 'text/plain; charset=utf-8')

    def _body(self) -> bytes:
        """The request body: a Content-Length (no chunks) of at most MAX_BODY_BYTES, all of it within
        `body_seconds`."""
        length = self.headers.get('Content-Length')
        if length is None or not length.strip().isdigit() or self.headers.get('Transfer-Encoding'):
            raise webhooks.Refused(411, 'a Content-Length is required')
        size = int(length)
        if size > webhooks.MAX_BODY_BYTES:
            raise webhooks.Refused(413, f'the body is over {webhooks.MAX_BODY_BYTES} bytes')
        deadline, body = time.monotonic() + self.body_seconds, bytearray()
        try:
            self._read(body, size, deadline)
        finally:
            self.connection.settimeout(self.timeout)
        return bytes(body)

    def _read(self, body: bytearray, size: int, deadline: float) -> None:
        while len(body) < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise webhooks.Refused(408, f'the body did not arrive within {self.body_seconds:g} s')
            self.connection.settimeout(left)
            try:
                chunk = self.rfile.read1(size - len(body))
            except TimeoutError:
                continue
            if not chunk:
                raise webhooks.Refused(400, 'the body ended before its Content-Length')
            body += chunk


class _Listener(http.server.ThreadingHTTPServer):
    """One port: a thread per connection, at most `max_connections` of them; one more gets 503 and is closed."""
    daemon_threads = True  # stopping never waits for a sender: server_close joins only non-daemon threads
    request_queue_size = 128  # the listen backlog: a burst waits to be accepted (and told 503) rather than retrying

    def __init__(self, host: str, port: int, handler: type[_Handler], *, max_connections: int,
                 request_seconds: float, busy: Callable[[], None] = lambda: None) -> None:
        self.address_family = socket.AF_INET6 if ':' in host else socket.AF_INET
        self.busy = busy  # called for each connection over the limit
        self._slots = threading.BoundedSemaphore(max_connections)
        self.request_seconds = request_seconds
        self._open: dict[socket.socket, float] = {}  # each connection being served, and when it came
        self._lock = threading.Lock()
        super().__init__((host, port), handler)
        self.port: int = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, kwargs={'poll_interval': 0.5},
                                       name=f'http-server-{self.port}', daemon=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.busy()
            with contextlib.suppress(OSError):
                request.setblocking(False)  # the answer fits the socket's buffer; never wait on this sender
                request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started: it would have released the slot
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._open[request] = time.monotonic()
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open.pop(request, None)
            self._slots.release()

    def service_actions(self) -> None:
        """Between polls of serve_forever (every 0.5 s): cut the connections past `request_seconds`; their threads
        then read the end of the stream and go."""
        now = time.monotonic()
        with self._lock:
            late = [connection for connection, came in self._open.items() if now - came > self.request_seconds]
        for connection in late:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that went away (or was cut) is no news; anything else is logged, not printed."""
        if not isinstance(sys.exc_info()[1], OSError):
            logger.exception('HTTP port %d: a request failed', self.port)

    async def stop(self) -> None:
        await asyncio.to_thread(self.shutdown)
        self.server_close()


class Server:
    """The probes' port (/metrics, /healthz) with its watchdog thread and the loop's heartbeat task, and the
    webhooks' port when there are webhooks; `cleanup` stops them all."""

    def __init__(self, probes: _Listener, watchdog: Watchdog, heartbeat: asyncio.Task[None],
                 hooks: _Listener | None) -> None:
        self.probes, self.watchdog, self.heartbeat, self.hooks = probes, watchdog, heartbeat, hooks
        self.port = probes.port
        """The port of /metrics and /healthz."""
        self.hooks_port = hooks.port if hooks is not None else None
        """The port of /hooks/…, or None without webhooks."""

    async def cleanup(self) -> None:
        self.heartbeat.cancel()
        self.watchdog.stopping.set()
        for listener in (self.probes, self.hooks):
            if listener is not None:
                await listener.stop()


async def serve(*, host: str, port: int, pool: concurrent.futures.ThreadPoolExecutor | None = None,
                loop_stale_seconds: float = LOOP_STALE_SECONDS, pool_stall_seconds: float = POOL_STALL_SECONDS,
                hooks: webhooks.Webhooks | None = None, hooks_port: int = 0,
                body_seconds: float = webhooks.BODY_SECONDS, max_connections: int = MAX_CONNECTIONS) -> Server:
    """Starts serving /metrics and /healthz on host:port, and `hooks` under /hooks/ on host:hooks_port (port 0:
    any free one, see `Server.port` and `Server.hooks_port`)."""
    watchdog = Watchdog(pool=pool, loop_stale_seconds=loop_stale_seconds, pool_stall_seconds=pool_stall_seconds)
    probes = _Listener(host, port, type('ProbesHandler', (_ProbesHandler,), {'watchdog': watchdog}),
                       max_connections=max_connections, request_seconds=REQUEST_SECONDS)
    hooked = None
    if hooks is not None:
        handler = type('HooksHandler', (_HooksHandler,), {'hooks': hooks, 'body_seconds': body_seconds})
        try:
            hooked = _Listener(host, hooks_port, handler, max_connections=max_connections,
                               request_seconds=REQUEST_SECONDS + body_seconds,
                               busy=metrics.WEBHOOK_REQUESTS.labels('other', '503').inc)
        except OSError:
            probes.server_close()
            raise
    heartbeat = asyncio.create_task(watchdog.heartbeat(), name='healthz heartbeat')
    server = Server(probes, watchdog, heartbeat, hooked)
    watchdog.thread.start()
    for listener in (probes, hooked):
        if listener is not None:
            listener.thread.start()
    return server
