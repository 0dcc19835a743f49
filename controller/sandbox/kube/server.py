"""Serving the emulator over HTTP on 127.0.0.1, writing a kubeconfig for it, and running it standalone
(``panda-deploy sandbox kube``, ``python -m controller.sandbox.kube``)."""
from __future__ import annotations

import argparse
import asyncio
import pathlib
import signal
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any, Self

import aiohttp.web
import yaml

from controller.sandbox.kube.emulator import ClusterEmulator

CONTEXT_NAME = 'panda-sandbox'


class ClusterServer:
    """Serve a :class:`ClusterEmulator` over HTTP on 127.0.0.1.

    In a background thread with its own event loop (``start()``/``stop()`` or
    ``with ClusterServer() as server:``), or inside the running loop
    (``async with ClusterServer() as server:``, or ``await server.serve()``
    until cancelled).  ``port=0`` picks a free port.
    """

    def __init__(self, *, emulator: ClusterEmulator | None = None, host: str = '127.0.0.1', port: int = 0) -> None:
        self.emulator = emulator if emulator is not None else ClusterEmulator()
        self.host = host
        self._port = port
        self._runner: aiohttp.web.BaseRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError('the server is not running')
        return self._port

    @property
    def url(self) -> str:
        return f'http://{self.host}:{self.port}'

    def write_kubeconfig(self, path: str | pathlib.Path, *, namespace: str = 'default') -> pathlib.Path:
        """Write a kubeconfig (context ``panda-sandbox``, no credentials) for this server."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            'apiVersion': 'v1', 'kind': 'Config', 'preferences': {},
            'clusters': [{'name': CONTEXT_NAME, 'cluster': {'server': self.url}}],
            'users': [{'name': CONTEXT_NAME, 'user': {}}],
            'contexts': [{'name': CONTEXT_NAME, 'context': {
                'cluster': CONTEXT_NAME, 'user': CONTEXT_NAME, 'namespace': namespace}}],
            'current-context': CONTEXT_NAME,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- inside a running loop --

    async def start_async(self) -> Self:
        """Start serving in the current event loop."""
        if self._runner is not None:
            raise RuntimeError('the server is already running')
        await self.emulator.__aenter__()
        server = aiohttp.web.Server(self.emulator, handler_cancellation=True)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, self.host, self._port)
        await site.start()
        self._port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def stop_async(self) -> None:
        """Stop serving: end the watches, close the listener."""
        if self._runner is None:
            return
        self.emulator.close_watches()
        await asyncio.sleep(0)
        runner, self._runner = self._runner, None
        await runner.cleanup()
        await self.emulator.__aexit__(None, None, None)

    async def serve(self) -> None:
        """Serve until cancelled (starting if needed), then stop."""
        if self._runner is None:
            await self.start_async()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop_async()

    async def __aenter__(self) -> Self:
        return await self.start_async()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_async()

    # -- in a background thread --

    def start(self) -> Self:
        """Start serving from a background thread; returns once the port listens."""
        if self._thread is not None:
            raise RuntimeError('the server is already running')
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stopping = asyncio.Event()
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as e:  # noqa: BLE001 -- reported to the starting thread
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(self._stopping.wait())
                loop.run_until_complete(self.stop_async())
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name='kube-emulator', daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop the background thread's server and wait for it."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _load_manifests(paths: Iterable[str]) -> Iterator[dict[str, Any]]:
    for path in paths:
        for doc in yaml.safe_load_all(pathlib.Path(path).read_text()):
            if isinstance(doc, dict):
                yield doc


def main(argv: list[str] | None = None) -> int:
    """``python -m controller.sandbox.kube``: serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog='python -m controller.sandbox.kube',
                                     description='Serve the Kubernetes API emulator on 127.0.0.1.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0, help='0 picks a free port')
    parser.add_argument('--kubeconfig', help='write a kubeconfig for the server here')
    parser.add_argument('-f', '--manifest', action='append', default=[],
                        help='YAML file of objects (e.g. CRDs) to create at start; repeatable')
    args = parser.parse_args(argv)

    async def run() -> None:
        server = ClusterServer(host=args.host, port=args.port)
        for manifest in _load_manifests(args.manifest):
            if manifest.get('kind') == 'CustomResourceDefinition':
                server.emulator.add_crd(manifest)
            else:
                server.emulator.create(manifest)
        await server.start_async()
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig)
        print(f'listening on {server.url}', flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await server.stop_async()

    asyncio.run(run())
    return 0
