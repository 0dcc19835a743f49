"""The operator's HTTP port: Prometheus /metrics and /healthz for the kubelet's probes."""
from __future__ import annotations

import aiohttp.web
import prometheus_client


async def serve(*, host: str, port: int) -> aiohttp.web.AppRunner:
    async def metrics(_: aiohttp.web.Request) -> aiohttp.web.Response:
        body = prometheus_client.generate_latest(prometheus_client.REGISTRY)
        return aiohttp.web.Response(body=body, headers={'Content-Type': prometheus_client.CONTENT_TYPE_LATEST})

    async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text='ok\n')

    app = aiohttp.web.Application()
    app.router.add_get('/metrics', metrics)
    app.router.add_get('/healthz', healthz)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, host, port).start()
    return runner
