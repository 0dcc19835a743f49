"""The stack's start and stop: every stand-in and the operator, in this process group.

What `start_sandbox` starts, each stopped when the caller's ExitStack closes
(on exit, error or Ctrl-C):

- Debian's `docker-registry` (a child process) for the pushes, and the
  locally made base image the sample app builds FROM (`localdocker`);
- the AWS sandbox (`controller.sandbox.aws.AwsSandbox`, a thread): moto with
  the CodeDeploy simulator, lifecycle hooks reporting on their own and
  simulated time running fast, holding the AWS world (`world`);
- one container per task definition (`tasks`) and the load balancer stand-in
  (`loadbalancer`) in front of them;
- the Kubernetes API emulator (`controller.sandbox.kube.ClusterServer`, a
  thread) with the CRD from `crds/pandadeploys.yaml`, and a kubeconfig for it
  in a temporary directory;
- the sample app's git repository (`repository`), with no commit yet;
- the operator, `python -m controller operator --standalone --all-namespaces`;
- the watches of the sample resource and its Events into the printer.

Nothing is applied: the caller commits, applies Secrets and the PandaDeploy
(`manifests.demo_manifests` has the sample's) and follows the runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import signal
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
import kubernetes
import yaml

from controller.sandbox.aws import AwsSandbox, Timings
from controller.sandbox.kube import ClusterServer
from controller.sandbox.stack import ROOT, localdocker
from controller.sandbox.stack.loadbalancer import LoadBalancerStandIn
from controller.sandbox.stack.manifests import NAME
from controller.sandbox.stack.operator import operator_environment, start_operator
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.repository import SampleRepository
from controller.sandbox.stack.tasks import TaskRunner
from controller.sandbox.stack.watches import Watches
from controller.sandbox.stack.world import AwsWorld, create_aws_world, sandbox_clients

BUILD_LABEL = 'dev.panda.deploy.deployment-id'  # on every image the operator builds (controller/pipeline/build.py)
FAST = Timings(step_seconds=0.2, auto_hook_seconds=0.3, tick_seconds=0.02)


@dataclasses.dataclass
class Sandbox:
    """Everything started, for the rollouts to use (and for tests and benchmarks that drive the same stack)."""
    printer: ProgressPrinter
    custom: kubernetes.client.CustomObjectsApi
    repository: SampleRepository
    world: AwsWorld
    proxy_url: str
    operator: subprocess.Popen[bytes]
    operator_log: pathlib.Path
    temp: pathlib.Path
    env: dict[str, str]  # the operator's environment, to start it again with `restart_operator`
    cluster: ClusterServer
    aws: AwsSandbox
    clients: Callable[[str], Any]
    tasks: TaskRunner
    registry: str
    base_image: str
    api: kubernetes.client.ApiClient


def start_sandbox(stack: contextlib.ExitStack, client: docker.DockerClient, printer: ProgressPrinter, *,
                  operator_env: dict[str, str] | None = None, timings: Timings = FAST,
                  launch: Callable[[dict[str, str], pathlib.Path], subprocess.Popen[bytes]] = start_operator,
                  ) -> Sandbox:
    """Start every stand-in and the operator; each is stopped when `stack` closes.

    `operator_env` is added to the operator's environment; `timings` set how fast the AWS sandbox's time
    moves; `launch` starts the operator with that environment and its log file (e.g. the operator image in
    a container, tests/e2e/test_image.py)."""
    temp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix='panda-demo-')))
    base_image, registry = start_registry(stack, client, printer, temp)
    tasks = start_tasks(stack, client, registry, printer)
    aws = start_aws(stack, tasks, printer, timings=timings)
    clients = sandbox_clients(aws.url)
    world = create_aws_world(clients, cluster='sample-cluster', service=NAME)
    printer.note(f'[sandbox] AWS world: cluster {world.cluster}, load balancer {world.dns_name}, target groups '
                 f'{NAME}-blue and {NAME}-green, listeners :80 (production) and :8080 (test)')
    balancer = LoadBalancerStandIn(world=world, clients=clients, tasks=tasks, printer=printer).start()
    stack.callback(balancer.stop)
    printer.note(f'[sandbox] Load balancer stand-in on {balancer.url} (the operator\'s http_proxy)')
    cluster, kubeconfig = start_cluster(stack, printer, temp)

    repository = SampleRepository(temp / 'git')
    operator_log = temp / 'operator.log'
    env = operator_environment(kubeconfig=kubeconfig, aws_url=aws.url, registry=registry,
                               http_port=localdocker.free_port(), proxy_url=balancer.url)
    env.update(operator_env or {})
    operator = launch(env, operator_log)
    printer.note(f'[sandbox] Operator running (pid {operator.pid}), metrics on '
                 f'http://127.0.0.1:{env["PANDA_DEPLOY_HTTP_PORT"]}/metrics')

    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    sandbox = Sandbox(printer=printer, custom=kubernetes.client.CustomObjectsApi(api), repository=repository,
                      world=world, proxy_url=balancer.url, operator=operator, operator_log=operator_log, temp=temp,
                      env=env, cluster=cluster, aws=aws, clients=clients, tasks=tasks, registry=registry,
                      base_image=base_image, api=api)
    stack.callback(lambda: localdocker.stop(sandbox.operator))  # the one running then, after restarts
    watches = Watches(api, printer)
    watches.start()
    stack.callback(watches.stop)
    return sandbox


def restart_operator(sandbox: Sandbox, *, kill: int = signal.SIGKILL) -> None:
    """Stop the operator with `kill` (SIGKILL: no clean-up at all) and start a new one with the same environment."""
    with contextlib.suppress(ProcessLookupError):
        sandbox.operator.send_signal(kill)
    sandbox.operator.wait(timeout=60)
    sandbox.operator = start_operator(sandbox.env, sandbox.operator_log, append=True)


def start_registry(stack: contextlib.ExitStack, client: docker.DockerClient, printer: ProgressPrinter,
                   temp: pathlib.Path) -> tuple[str, str]:
    """(base image, registry host:port); the registry is stopped and the runs' images removed at the end."""
    base_image = localdocker.ensure_base_image(client)
    registry_process, registry, _ = localdocker.start_registry(temp / 'registry', auth=False)
    stack.callback(localdocker.stop, registry_process)
    stack.callback(_remove_builds, client, printer.deployment_ids)
    printer.note(f'[sandbox] Registry on {registry}; base image {base_image}')
    return base_image, registry


def start_tasks(stack: contextlib.ExitStack, client: docker.DockerClient, registry: str,
                printer: ProgressPrinter) -> TaskRunner:
    """The task runner, after removing containers an earlier stack left; every container it starts goes at the end."""
    tasks = TaskRunner(client=client, registry=registry, printer=printer)
    stack.callback(tasks.stop_all)
    if removed := tasks.remove_orphans():
        printer.note(f'[sandbox] Removed {removed} container(s) left by an earlier demo that was killed')
    return tasks


def start_aws(stack: contextlib.ExitStack, tasks: TaskRunner, printer: ProgressPrinter, *,
              timings: Timings = FAST) -> AwsSandbox:
    """The AWS sandbox, empty; its task sets and service revisions run as `tasks`' containers."""
    aws = AwsSandbox(auto_hooks=True, timings=timings, on_green_task_set=tasks.start, on_cleanup=tasks.stop).start()
    stack.callback(aws.stop)
    aws.reset()  # moto's state is per process: an earlier sandbox's load balancer and target groups go
    printer.note(f'[sandbox] AWS (moto + CodeDeploy and ECS deployment simulators) on {aws.url}')
    return aws


def start_cluster(stack: contextlib.ExitStack, printer: ProgressPrinter,
                  directory: pathlib.Path) -> tuple[ClusterServer, pathlib.Path]:
    """The Kubernetes API emulator with the CRD, and a kubeconfig for it."""
    cluster = ClusterServer().start()
    stack.callback(cluster.stop)
    for doc in yaml.safe_load_all((ROOT / 'crds' / 'pandadeploys.yaml').read_text()):
        cluster.emulator.add_crd(doc)
    kubeconfig = cluster.write_kubeconfig(directory / 'kubeconfig')
    printer.note(f'[sandbox] Kubernetes API emulator on {cluster.url}; try: KUBECONFIG={kubeconfig} kubectl get pd -w')
    return cluster, kubeconfig


def _remove_builds(client: docker.DockerClient, deployment_ids: set[str]) -> None:
    """Remove the images the demo's runs built (by id: every tag, pushed digest and untagged parent goes)."""
    # One listing call with the labels in it: `images.list` inspects each image afterwards, which raises
    # ImageNotFound when another client of a shared engine removes one of its own labelled images meanwhile.
    for image in client.api.images(filters={'label': BUILD_LABEL}):
        if (image.get('Labels') or {}).get(BUILD_LABEL) in deployment_ids:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image['Id'], force=True)
