"""Serving the sandbox: :class:`AwsSandbox` in a background thread, and ``main`` for the command line.

The demo runs the green image as a local container because moto runs none:
``AwsSandbox(on_green_task_set=..., on_cleanup=...)`` are called with
``(task definition ARN, image, container port)`` when a replacement task set is
created and when any task set is removed (CodeDeploy), and when a service
revision's tasks start and stop (ECS service deployments).
``on_lambda_hook`` plays the Lambda functions of ECS lifecycle hooks.

``python -m controller.sandbox.aws --port PORT`` (or ``panda-deploy sandbox aws``)
serves it standalone.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import urllib.request
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self

from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import BaseWSGIServer, make_server

from controller.sandbox.aws.ecs_hooks import LambdaHook
from controller.sandbox.aws.ecs_lifecycle import EcsCallbacks
from controller.sandbox.aws.ecs_simulator import EcsDeploymentSimulator
from controller.sandbox.aws.events import HookExecution
from controller.sandbox.aws.simulator import DeploymentSimulator
from controller.sandbox.aws.timings import Timings
from controller.sandbox.aws.wsgi import SandboxApp


class _QuietRequestHandler(MotoRequestHandler):
    """moto's request handler without a log line per request."""

    def log_request(self, code: int | str = '-', size: int | str = '-') -> None:
        pass


class AwsSandbox:
    """moto plus the CodeDeploy and ECS deployment simulators and the CodeBuild runner, served on ``host:port`` from
    a background thread."""

    def __init__(self, *, host: str = '127.0.0.1', port: int = 0, auto_hooks: bool = False,
                 timings: Timings | None = None,
                 on_green_task_set: Callable[[str, str, int], Any] | None = None,
                 on_cleanup: Callable[[str, str, int], Any] | None = None,
                 on_hook: Callable[[HookExecution], Any] | None = None,
                 on_lambda_hook: LambdaHook | None = None,
                 log_requests: bool = False) -> None:
        self.host = host
        self.port = port
        self.simulator = DeploymentSimulator(timings=timings, auto_hooks=auto_hooks,
                                             on_green_task_set=on_green_task_set, on_cleanup=on_cleanup,
                                             on_hook=on_hook)
        self.ecs_simulator = EcsDeploymentSimulator(timings=timings, callbacks=EcsCallbacks(
            on_green_task_set=on_green_task_set, on_cleanup=on_cleanup, on_lambda_hook=on_lambda_hook))
        self.app = SandboxApp(simulator=self.simulator, ecs_simulator=self.ecs_simulator)
        self._log_requests = log_requests
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` once started."""
        if self._server is None:
            raise RuntimeError('the sandbox is not running')
        return f'http://{self.host}:{self._server.server_port}'

    def start(self) -> Self:
        """Serve from a background thread; returns once the port listens."""
        if self._server is not None:
            raise RuntimeError('the sandbox is already running')
        handler = MotoRequestHandler if self._log_requests else _QuietRequestHandler
        self._server = make_server(self.host, self.port, self.app, threaded=True, request_handler=handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name='aws-sandbox', daemon=True)
        self._thread.start()
        self.simulator.start()
        self.ecs_simulator.start()
        return self

    def stop(self) -> None:
        """Stop serving and the simulators' clocks."""
        self.simulator.stop()
        self.ecs_simulator.stop()
        self.app.codebuild.stop_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def reset(self) -> None:
        """Forget every AWS resource (moto's ``/moto-api/reset``) and every simulated deployment."""
        request = urllib.request.Request(f'{self.url}/moto-api/reset', method='POST', data=b'')
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def refuse_unknown_keys(self, access_keys: Iterable[str] | None) -> None:
        """Refuse requests signed with an access key not in `access_keys`, as AWS does (None: accept any)."""
        self.app.known_access_keys = None if access_keys is None else frozenset(access_keys)

    def pending_hooks(self) -> list[HookExecution]:
        """Hook executions waiting for PutLifecycleEventHookExecutionStatus (AWS would pass the id to the Lambda)."""
        return self.simulator.pending_hooks()

    def environ(self) -> dict[str, str]:
        """Environment variables that point boto3 (and the operator) at the sandbox."""
        return {'AWS_ENDPOINT_URL': self.url, 'AWS_ACCESS_KEY_ID': 'sandbox', 'AWS_SECRET_ACCESS_KEY': 'sandbox'}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m controller.sandbox.aws',
        description='Serve moto (every AWS service) with CodeDeploy ECS blue/green and ECS service deployments '
                    'simulated, and CodeBuild builds run on the local Docker engine.')
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=0, help='0 picks a free port')
    parser.add_argument('--auto-hooks', action='store_true',
                        help='sandbox only: report Succeeded for every lifecycle hook after a short delay, '
                             'as if its Lambda function had run and passed')
    parser.add_argument('--step-seconds', type=float, default=Timings.step_seconds,
                        help='duration of each deployment step (default %(default)s)')
    parser.add_argument('--minute-seconds', type=float, default=Timings.minute_seconds,
                        help='length of a simulated minute for waitTimeInMinutes, terminationWaitTimeInMinutes '
                             'and canary/linear intervals (default %(default)s)')
    parser.add_argument('--log-requests', action='store_true', help='log every request, as moto_server does')
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m controller.sandbox.aws``: serve until SIGINT/SIGTERM."""
    args = _arguments().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s %(message)s')
    timings = Timings(step_seconds=args.step_seconds, minute_seconds=args.minute_seconds,
                      auto_hook_seconds=args.step_seconds)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with AwsSandbox(host=args.host, port=args.port, auto_hooks=args.auto_hooks, timings=timings,
                    log_requests=args.log_requests) as sandbox:
        print(f'listening on {sandbox.url}', flush=True)
        while not stop.wait(0.5):
            pass
    return 0
