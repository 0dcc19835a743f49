"""The operator as the sandbox runs it: a child process configured only through its environment."""
from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Sequence

from controller.sandbox.stack import ROOT, localdocker


class OperatorFailed(Exception):
    """The operator process did not start; the message has the end of its log."""


def operator_environment(*, kubeconfig: pathlib.Path, aws_url: str, registry: str, http_port: int,
                         proxy_url: str) -> dict[str, str]:
    """The operator's environment: the machine's, without its AWS set-up or proxies, plus the sandbox's.

    AWS keys come only from the Secret; `http_proxy` sends the health checks to the load balancer stand-in.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('AWS_', 'PANDA_DEPLOY_')) and not k.lower().endswith('_proxy')}
    env.update(KUBECONFIG=str(kubeconfig), AWS_ENDPOINT_URL=aws_url, AWS_EC2_METADATA_DISABLED='true',
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, PANDA_DEPLOY_REGISTRY=registry,
               PANDA_DEPLOY_HTTP_HOST='127.0.0.1', PANDA_DEPLOY_HTTP_PORT=str(http_port),
               PANDA_DEPLOY_POLL_SECONDS='1', http_proxy=proxy_url, HTTP_PROXY=proxy_url,
               no_proxy='127.0.0.1,localhost', NO_PROXY='127.0.0.1,localhost',
               # tokens may go to the sandbox's own git servers (loopback http, file://), as well as GitHub
               PANDA_DEPLOY_GIT_HOSTS='github.com,http://127.0.0.1:*,file://')
    return env


OPERATOR_ARGS = ('--standalone', '--all-namespaces')


def start_operator(env: dict[str, str], log_path: pathlib.Path, *, append: bool = False,
                   argv: Sequence[str] = (sys.executable, '-m', 'controller', 'operator', *OPERATOR_ARGS),
                   ) -> subprocess.Popen[bytes]:
    """`argv` (`python -m controller operator`), in this process group; returns once /healthz answers."""
    with log_path.open('ab' if append else 'wb') as log:
        process = subprocess.Popen(list(argv), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    health = f'http://127.0.0.1:{env["PANDA_DEPLOY_HTTP_PORT"]}/healthz'
    deadline = time.monotonic() + 60
    while localdocker.answers(health) != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            localdocker.stop(process)
            raise OperatorFailed(f'the operator did not start:\n{log_tail(log_path)}')
        time.sleep(0.2)
    return process


def log_tail(path: pathlib.Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file ('' when it cannot be read)."""
    with contextlib.suppress(OSError):
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])
    return ''
