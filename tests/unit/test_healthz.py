"""/healthz tells the kubelet when the operator is alive but wedged: its event loop blocked, or its worker
pool stuck while runs wait for a worker. /metrics keeps answering (also while the loop is blocked)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable

import pytest

from controller import http


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def poll_until(url: str, want: int, *, within: float) -> tuple[float, str]:
    """From a thread (the loop may be blocked): seconds until GET url answered `want`, and that body."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        status, body = get(url)
        if status == want:
            return time.monotonic() - started, body
        time.sleep(0.2)
    raise AssertionError(f'{url} did not answer {want} within {within}s (last: {status} {body!r})')


@pytest.fixture
def pool() -> concurrent.futures.ThreadPoolExecutor:
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix='deployment-worker')
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
async def serve(pool: concurrent.futures.ThreadPoolExecutor) -> AsyncIterator[Callable[..., str]]:
    servers: list[http.Server] = []

    async def start(**limits: float) -> str:
        server = await http.serve(host='127.0.0.1', port=0, pool=pool, **limits)
        servers.append(server)
        return f'http://127.0.0.1:{server.port}'

    yield start
    for server in servers:
        await server.cleanup()


async def test_healthz_and_metrics_answer_on_a_healthy_operator(serve):
    base = await serve()
    assert await asyncio.to_thread(get, f'{base}/healthz') == (200, 'ok\n')
    status, body = await asyncio.to_thread(get, f'{base}/metrics')
    assert status == 200 and 'python_info' in body
    assert (await asyncio.to_thread(get, f'{base}/nothing'))[0] == 404


async def test_healthz_fails_while_the_event_loop_is_blocked_and_recovers(serve):
    base = await serve(loop_stale_seconds=2)
    await asyncio.sleep(1.5)   # a heartbeat or two
    seen: dict[str, tuple[float, str]] = {}

    def probe() -> None:   # a kubelet: from outside the loop
        seen['503'] = poll_until(f'{base}/healthz', 503, within=6)
        seen['metrics'] = (0.0, get(f'{base}/metrics')[1])

    prober = threading.Thread(target=probe)
    prober.start()
    time.sleep(6)   # blocks the event loop (a handler that never yields)
    prober.join()
    took, body = seen['503']
    assert took <= 4, f'/healthz said 503 only after {took:.1f}s'
    assert body.startswith('event loop blocked: no heartbeat for ') and '(limit 2s)' in body
    assert 'python_info' in seen['metrics'][1], '/metrics still answers while the loop is blocked'

    took, body = await asyncio.to_thread(poll_until, f'{base}/healthz', 200, within=4)
    assert body == 'ok\n'


async def test_healthz_fails_while_the_worker_pool_is_wedged_and_runs_wait(serve, pool):
    base = await serve(pool_stall_seconds=2)
    stuck = threading.Event()
    for _ in range(2):   # both workers held by abandoned work (a git that never returns)
        pool.submit(stuck.wait)
    await asyncio.sleep(3)
    status, body = await asyncio.to_thread(get, f'{base}/healthz')
    assert (status, body) == (200, 'ok\n'), 'every worker busy but nothing waiting: healthy (long builds)'

    queued = pool.submit(lambda: 'a stage of a run')   # a run waits for a worker
    took, body = await asyncio.to_thread(poll_until, f'{base}/healthz', 503, within=6)
    assert body.startswith('worker pool wedged: no worker free for ') and 'while 1 calls wait (limit 2s)' in body

    stuck.set()   # the workers come free
    assert queued.result(timeout=5) == 'a stage of a run'
    await asyncio.to_thread(poll_until, f'{base}/healthz', 200, within=4)


def test_the_defaults_leave_room_for_slow_passes():
    assert 5 <= http.LOOP_STALE_SECONDS <= 30      # liveness: 3 failures 20 s apart before a restart
    assert 60 <= http.POOL_STALL_SECONDS <= 300
