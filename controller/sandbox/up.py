"""`panda-deploy sandbox up --dir DIR`: the sandbox stack for your own repository, until interrupted.

Why: the demo deploys only its sample app. This starts the same stack
(`controller.sandbox.stack`) with no AWS world and nothing applied: the
Kubernetes API emulator, the AWS sandbox, a registry, the load-balancer
stand-in for every world `panda-deploy sandbox world` makes, the task runner
and the operator; writes `DIR/kubeconfig`, `DIR/env` and `DIR/aws-secret.yaml`
(`controller.sandbox.stack.envfile`); creates the credentials Secret for the
sandbox AWS; prints what it started; and runs until SIGINT or SIGTERM, then
stops all it started (the ExitStack closes: the operator, the registry, the
containers, the servers).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import docker
import kubernetes

from controller.models import GROUP, PLURAL, VERSION
from controller.sandbox.stack import localdocker
from controller.sandbox.stack.engine import run_with_engine
from controller.sandbox.stack.envfile import (
    OPERATOR_LOG,
    SECRET_NAME,
    ensure_secret,
    remove_files,
    shell_environment,
    write_env,
    write_secret_file,
)
from controller.sandbox.stack.operator import log_tail, operator_environment, start_operator
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.sandbox import start_aws, start_cluster, start_registry, start_tasks
from controller.sandbox.stack.worlds import AnyWorldBalancer

PROG = 'panda-deploy sandbox up'


@dataclasses.dataclass
class Up:
    """What `sandbox up` started, for the summary and the wait."""
    directory: pathlib.Path
    operator: subprocess.Popen[bytes]
    operator_env: dict[str, str]
    files: list[pathlib.Path]
    kube_url: str
    aws_url: str
    base_image: str


def start_up(stack: contextlib.ExitStack, client: docker.DockerClient, printer: ProgressPrinter,
             directory: pathlib.Path, namespaces: list[str]) -> Up:
    """Start everything, each stopped when `stack` closes; write DIR's files, DIR/env last."""
    temp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix='panda-sandbox-')))
    base_image, registry = start_registry(stack, client, printer, temp)
    tasks = start_tasks(stack, client, registry, printer)
    aws = start_aws(stack, tasks, printer)
    balancer = AnyWorldBalancer(aws_url=aws.url, tasks=tasks, printer=printer).start()
    stack.callback(balancer.stop)
    stack.callback(remove_files, directory)  # runs before the servers stop: DIR/env never names a dead sandbox
    cluster, kubeconfig = start_cluster(stack, printer, directory)
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    stack.callback(api.close)
    stack.callback(_collect_builds, api, printer.deployment_ids)  # so the images they built are removed
    for namespace in namespaces:
        ensure_secret(api, namespace)
    env = operator_environment(kubeconfig=kubeconfig, aws_url=aws.url, registry=registry,
                               http_port=localdocker.free_port(), proxy_url=balancer.url)
    operator = start_operator(env, directory / OPERATOR_LOG)
    stack.callback(localdocker.stop, operator)
    files = [kubeconfig, write_secret_file(directory, namespaces[0])]
    files.append(write_env(directory, shell_environment(env), comment=(
        f'{PROG} (pid {os.getpid()}) is serving these; source this file to use the sandbox from a shell.')))
    return Up(directory=directory, operator=operator, operator_env=env, files=files, kube_url=cluster.url,
              aws_url=aws.url, base_image=base_image)


def summary(up: Up, namespaces: list[str]) -> str:
    env, directory = up.operator_env, up.directory
    return '\n'.join([
        f'\n{PROG}: running (pid {os.getpid()}); Ctrl-C (or SIGTERM) stops everything it started.',
        f'  Kubernetes API  {up.kube_url}  (kubeconfig {up.files[0]})',
        f'  AWS             {up.aws_url}  (moto + CodeDeploy and ECS deployment simulators)',
        f'  registry        {env["PANDA_DEPLOY_REGISTRY"]}  (base image for your Dockerfile: {up.base_image})',
        f'  load balancer   {env["http_proxy"]}  (an HTTP proxy: load balancer URLs answer through it)',
        f'  operator        pid {up.operator.pid}, all namespaces, log {directory / OPERATOR_LOG}, '
        f'metrics http://127.0.0.1:{env["PANDA_DEPLOY_HTTP_PORT"]}/metrics',
        f'  Secret          {SECRET_NAME} (sandbox AWS keys) in namespace {", ".join(namespaces)}',
        f'  files           {", ".join(str(path) for path in up.files)}',
        'Next:',
        f'  source {directory / "env"}',
        f'  panda-deploy sandbox world --dir {directory} --service web > web.yaml   '
        f'# then add spec.source, and kubectl apply -f web.yaml',
    ])


def wait(up: Up) -> int:
    """Until a signal (KeyboardInterrupt) or the operator's end: 1 with its log then."""
    while up.operator.poll() is None:
        time.sleep(0.5)
    print(f'{PROG}: the operator exited with code {up.operator.returncode}; its log:\n'
          f'{log_tail(up.directory / OPERATOR_LOG)}', file=sys.stderr)
    return 1


def _collect_builds(api: kubernetes.client.ApiClient, deployment_ids: set[str]) -> None:
    """Every run's deployment id in the cluster, for the stack to remove the images those runs built."""
    with contextlib.suppress(Exception):  # at the end: a cluster that no longer answers leaves the images
        found = kubernetes.client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, PLURAL)
        for item in found.get('items') or []:
            status = item.get('status') or {}
            deployment_ids.update(run['deploymentId'] for run in status.get('history') or [] if 'deploymentId' in run)
            if status.get('deploymentId'):
                deployment_ids.add(status['deploymentId'])


def serve(stack: contextlib.ExitStack, client: docker.DockerClient, directory: pathlib.Path,
          namespaces: list[str]) -> int:
    """Start, print what, wait; 0 after a signal, 1 when the operator ends by itself."""
    printer = ProgressPrinter()
    stack.callback(printer.close)
    up = start_up(stack, client, printer, directory, namespaces)
    printer.note(summary(up, namespaces))
    try:
        return wait(up)
    except KeyboardInterrupt:
        printer.note(f'{PROG}: stopping everything it started')
        return 0


def main(argv: list[str] | None = None) -> int:
    """0 after a signal stopped it, 1 when something failed, 2 when this machine lacks what it needs."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split('\n')[0])
    parser.add_argument('--dir', required=True, type=pathlib.Path,
                        help='where to write kubeconfig, env, aws-secret.yaml and operator.log (made if missing)')
    parser.add_argument('--namespace', action='append',
                        help='create the sandbox AWS credentials Secret here (repeatable; default: default)')
    args = parser.parse_args(argv)
    directory, namespaces = args.dir.resolve(), args.namespace or ['default']
    directory.mkdir(parents=True, exist_ok=True)
    return run_with_engine(PROG, lambda stack, client: serve(stack, client, directory, namespaces))
