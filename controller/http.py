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
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import prometheus_client

from controller import webhooks

LOOP_STALE_SECONDS = 10.0
POOL_STALL_SECONDS = 120.0
HEARTBEAT_SECONDS = 1.0


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
    watchdog: Watchdog
    hooks: webhooks.Webhooks | None = None
    body_seconds: float = webhooks.BODY_SECONDS
    timeout = 30  # seconds a connection may stay silent (headers included) before its thread lets it go

    def do_POST(self) -> None:  # noqa: N802 -- the stdlib's name
        path = self.path.split('?', 1)[0]
        if self.hooks is None or not path.startswith('/hooks/'):
            self.close_connection = True  # its body is not read
            self._answer(404, b'not found\n', 'text/plain; charset=utf-8')
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
            self._answer(404, b'not found\n', 'text/plain; charset=utf-8')

    def _answer(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes and scrapes every few seconds: not worth a log line


class Server:
    """The HTTP server thread, the watchdog thread and the loop's heartbeat task; `cleanup` stops all three."""

    def __init__(self, httpd: http.server.ThreadingHTTPServer, watchdog: Watchdog,
                 heartbeat: asyncio.Task[None]) -> None:
        self.httpd, self.watchdog, self.heartbeat = httpd, watchdog, heartbeat
        self.port: int = httpd.server_address[1]
        self.thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.5},
                                       name='http-server', daemon=True)

    async def cleanup(self) -> None:
        self.heartbeat.cancel()
        self.watchdog.stopping.set()
        await asyncio.to_thread(self.httpd.shutdown)
        self.httpd.server_close()


async def serve(*, host: str, port: int, pool: concurrent.futures.ThreadPoolExecutor | None = None,
                loop_stale_seconds: float = LOOP_STALE_SECONDS, pool_stall_seconds: float = POOL_STALL_SECONDS,
                hooks: webhooks.Webhooks | None = None, body_seconds: float = webhooks.BODY_SECONDS) -> Server:
    """Starts serving /metrics and /healthz (and `hooks` under /hooks/) on host:port (port 0: any free one,
    see `Server.port`)."""
    watchdog = Watchdog(pool=pool, loop_stale_seconds=loop_stale_seconds, pool_stall_seconds=pool_stall_seconds)
    handler = type('Handler', (_Handler,), {'watchdog': watchdog, 'hooks': hooks, 'body_seconds': body_seconds})
    server_class = type('HTTPServer', (http.server.ThreadingHTTPServer,), {
        'daemon_threads': True, 'address_family': socket.AF_INET6 if ':' in host else socket.AF_INET})
    httpd = server_class((host, port), handler)
    heartbeat = asyncio.create_task(watchdog.heartbeat(), name='healthz heartbeat')
    server = Server(httpd, watchdog, heartbeat)
    watchdog.thread.start()
    server.thread.start()
    return server
