"""`panda-deploy demo`: the operator end to end on one machine, with nothing but a Docker engine.

Why this exists: the operator's job spans git, a Docker engine, a registry,
ECR, ECS, ELBv2, CodeDeploy and Kubernetes. A newcomer should see a whole
rollout happen -- and a second and third one switch production traffic
between the colours -- without an AWS account, a GitHub repository or a
cluster. Everything that would be remote has a local stand-in here; the
operator itself runs unchanged, as a child process configured only through
its documented environment variables and the Secrets it reads.

What runs, in this process group, stopped on exit, error or Ctrl-C:

- the Kubernetes API emulator (`controller.sandbox.kube.ClusterServer`, a
  thread) with the CRD from `crds/pandadeploys.yaml`; a kubeconfig for it in
  a temporary directory (the demo prints how to point kubectl at it);
- the AWS sandbox (`controller.sandbox.aws.AwsSandbox`, a thread): moto with
  the CodeDeploy simulator, lifecycle hooks reporting on their own and
  simulated time running fast;
- Debian's `docker-registry` (a child process) for the pushes, and the
  locally made base image the sample app builds FROM;
- the operator, `python -m controller operator --standalone --all-namespaces`;
- a stand-in for the load balancer and one container per task definition.

The AWS world is what a platform team would have before adopting the
operator: an ECS cluster, an ALB with a blue and a green target group, a
production listener (port 80) and a test listener (port 8080). The operator
creates the rest, as it would in AWS: the ECS service on the first rollout,
the CodeDeploy application and deployment group (from
`spec.blueGreen.loadBalancer` and `codeDeploy.serviceRoleArn`) on the first
rollout that needs one.

How the health checks reach a real server: moto runs no containers, so
`TaskRunner` runs each task definition's image (pulled from the local
registry) as a container on the host network, each on its own port (`PORT`),
where on AWS each task would have its own address. The operator is started
with `http_proxy` pointing at `LoadBalancerStandIn`, an HTTP proxy that
plays the ALB: a request for `http://<the ALB's DNS name>:<port>/...` goes to
the listener on that port, to the target group that listener forwards to
*now* (read from the sandbox's ELBv2 state on every request, so it follows
CodeDeploy's switches), and to the container of the task set behind that
target group. So the operator checks exactly the URLs it derives itself
(`controller.adapters.elbv2`): production on the first rollout, the test
listener (the replacement) afterwards; `spec.healthCheck.url` is not set.
moto starts no tasks for a new service either, and the CodeDeploy simulator
only reports replacement task sets: the first request for a service's first
task definition starts its container and is held until the container
answers (on AWS the operator's first checks could meet a service whose tasks
are still starting; see the note in `LoadBalancerStandIn._task_port`).

How progress is shown: by watching the resource and its Events through the
Kubernetes API, as `kubectl get -w` would, never the operator's log. The two
watch streams are merged in resourceVersion order (the emulator's is global,
like etcd's revision). Per-check progress is not in the status (it is only
logged by the operator), so "HealthCheck in progress - Check k/N" lines are
the health checks as the load balancer stand-in sees them arrive.

Rollouts: the first deploys branch main (the operator creates the service on
blue; nothing to switch); each further one commits to the sample repository
and pins the new commit with `spec.source.revision` -- a spec change, so a
new generation -- and CodeDeploy switches production blue -> green -> blue.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import heapq
import http.client
import http.server
import itertools
import json
import os
import pathlib
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from types import FrameType
from typing import Any, TextIO

import boto3.session
import docker
import docker.errors
import docker.models.containers
import kubernetes
import yaml

from controller.adapters.http import USER_AGENT as HEALTH_CHECK_AGENT
from controller.models import GROUP, PLURAL, VERSION, StageName
from controller.sandbox import localdocker
from controller.sandbox.aws import AwsSandbox, Timings
from controller.sandbox.kube import ClusterServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE, NAME = 'default', 'sample-app'
REGION = 'ap-northeast-2'  # examples/pandadeploy.yaml's
ROLLOUTS = 3  # blue (new service), then blue -> green, then green -> blue
ROLLOUT_TIMEOUT = 120.0
LABEL = 'dev.panda.deploy.demo'  # on every container the demo starts: LABEL=1, LABEL.pid=<demo pid>
BUILD_LABEL = 'dev.panda.deploy.deployment-id'  # on every image the operator builds (controller/pipeline/build.py)
SANDBOX_KEYS = {'accessKeyId': 'PANDADEMOACCESSKEY00', 'secretAccessKey': 'panda-demo-not-a-real-secret'}
FAST = Timings(step_seconds=0.2, auto_hook_seconds=0.3, tick_seconds=0.02)
START_ENGINE = """\
panda-deploy demo needs a Docker engine, and none answers at {where} ({error}).
Start one (as root), then run it again:
    apt-get install docker.io          # when dockerd is not installed
    dockerd --storage-driver=vfs --iptables=false --bridge=none -H unix:///var/run/docker.sock &
or point DOCKER_HOST at an engine you have."""


class DemoFailed(Exception):
    """The demo cannot go on; the message says why."""


# ---------------------------------------------------------------------------------------------
# The progress printer: watch streams, load balancer observations and notes, in order.


@dataclasses.dataclass
class _RunView:
    """What has been printed of one run (one status.deploymentId)."""
    deployment_id: str
    revision: bool = False
    dockerfile: bool = False
    code_deploy: bool = False
    health: bool = False
    verifying: bool = False
    completed: bool = False
    checks: int = 0


class ProgressPrinter:
    """Prints lines from several threads in one order, in the original progress stream's style.

    Watch items carry the emulator's global resourceVersion; they are held for
    `HOLD` seconds and printed in that order, so a status write and the Event
    posted just before it never swap. Items without one (notes, checks) sort
    after everything received before them. Check lines wait until the status
    shows stage 5 running, since a check can arrive before that write does.
    """

    HOLD = 0.3

    def __init__(self, *, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.checks_total = 5  # spec.healthCheck.checks, set when the resource is applied
        self._queue: queue.Queue[tuple[int | None, str, Any]] = queue.Queue()
        self._order = itertools.count()
        self._idle = threading.Event()
        self._stop = threading.Event()
        self._outcomes: dict[int, dict[str, Any]] = {}
        self._outcome_seen = threading.Condition()
        self._run: _RunView | None = None
        self.deployment_ids: set[str] = set()
        self._held_checks: list[str] = []
        self._thread = threading.Thread(target=self._loop, name='demo-printer', daemon=True)
        self._thread.start()

    # -- producers (any thread) --

    def note(self, line: str) -> None:
        self._queue.put((None, 'note', line))

    def watched_object(self, obj: dict[str, Any]) -> None:
        self._queue.put((_rv(obj), 'status', obj))

    def watched_event(self, event: dict[str, Any]) -> None:
        self._queue.put((_rv(event), 'event', event))

    def check_seen(self, *, listener_port: int, colour: str, status: int) -> None:
        self._queue.put((None, 'check', (listener_port, colour, status)))

    # -- the main thread --

    def wait_for_outcome(self, generation: int, *, timeout: float) -> dict[str, Any] | None:
        """The status that ended the run for `generation` (phase Succeeded or Failed), or None."""
        with self._outcome_seen:
            self._outcome_seen.wait_for(lambda: generation in self._outcomes, timeout=timeout)
            return self._outcomes.get(generation)

    def settle(self, quiet: float = 0.8) -> None:
        """Wait until nothing has been printed or queued for `quiet` seconds (the run's last Event)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self._idle.clear()
            if not self._idle.wait(quiet) and self._queue.empty():
                return

    def close(self) -> None:
        self.settle(0.5)
        self._stop.set()
        self._thread.join(timeout=5)

    # -- the printing thread --

    def _loop(self) -> None:
        pending: list[tuple[tuple[int, int, int], float, str, Any]] = []
        newest = 0
        while not (self._stop.is_set() and not pending and self._queue.empty()):
            try:
                rv, kind, payload = self._queue.get(timeout=0.05)
                newest = max(newest, rv or 0)
                key = (rv, 0, next(self._order)) if rv is not None else (newest, 1, next(self._order))
                heapq.heappush(pending, (key, time.monotonic(), kind, payload))
            except queue.Empty:
                pass
            while pending and (pending[0][1] + self.HOLD <= time.monotonic() or self._stop.is_set()):
                _, _, kind, payload = heapq.heappop(pending)
                self._idle.set()
                self._handle(kind, payload)

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == 'note':
            self._print(payload)
        elif kind == 'status':
            self._status(payload.get('status') or {}, payload)
        elif kind == 'event':
            self._event(payload)
        elif kind == 'check':
            self._check(*payload)

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _status(self, status: dict[str, Any], obj: dict[str, Any]) -> None:
        deployment_id = status.get('deploymentId')
        if not deployment_id:
            return
        if self._run is None or self._run.deployment_id != deployment_id:
            self._run, self._held_checks = _RunView(deployment_id), []
            self.deployment_ids.add(deployment_id)
        run = self._run
        if status.get('revision') and not run.revision:
            run.revision = True
            source = (obj.get('spec') or {}).get('source') or {}
            where = f'branch {source["branch"]}' if source.get('branch') else 'spec.source.revision'
            self._print(f'[Stage 1] Revision {status["revision"][:7]} ({where})')
        if (status.get('image') or {}).get('dockerfile') and not run.dockerfile:
            run.dockerfile = True
            self._print(f'[Stage 1] Dockerfile found: {status["image"]["dockerfile"]}')
        if status.get('codeDeployDeploymentId') and not run.code_deploy:
            run.code_deploy = True
            self._print(f'[Stage 4] CodeDeploy deployment {status["codeDeployDeploymentId"]} created')
        if status.get('stageNumber') == StageName.verify.number and not run.verifying:
            run.verifying = True
            for line in self._held_checks:
                self._print(line)
            self._held_checks = []
        if status.get('healthCheck') and not run.health:
            run.health = True
            self._print(f'[Stage 5] {_health_summary(status["healthCheck"])}')
        complete = next((s for s in status.get('stages') or [] if s.get('name') == StageName.complete.value), {})
        if complete.get('result') == 'Succeeded' and not run.completed:  # its Event is the run's final one
            run.completed = True
            self._print(f'[Stage 6] {complete.get("message") or "Succeeded"}')
        self._record_outcome(status)

    def _record_outcome(self, status: dict[str, Any]) -> None:
        if status.get('phase') in ('Succeeded', 'Failed') and status.get('observedGeneration'):
            with self._outcome_seen:
                self._outcomes[int(status['observedGeneration'])] = status
                self._outcome_seen.notify_all()

    def _event(self, event: dict[str, Any]) -> None:
        reason, message = str(event.get('reason') or ''), str(event.get('message') or '')
        stage = _stage_of_reason(reason)
        if stage is not None:
            detail = message.split(': ', 1)[1] if ': ' in message else reason
            self._print(f'[Stage {stage.number}] {detail}')
        elif reason in ('Started', 'Resumed'):
            self._print(message)
        elif event.get('type') == 'Warning':
            self._print(f'Warning {reason}: {message}')
        else:
            run = f'Run {self._run.deployment_id} ' if self._run else ''
            self._print(f'{run}{reason}: {message}')

    def _check(self, listener_port: int, colour: str, status: int) -> None:
        if self._run is None:
            return
        self._run.checks += 1
        line = (f'[Stage 5] HealthCheck in progress - Check {self._run.checks}/{self.checks_total} '
                f'(listener :{listener_port} -> {colour}, HTTP {status})')
        if self._run.verifying:
            self._print(line)
        else:
            self._held_checks.append(line)


def _rv(obj: dict[str, Any]) -> int:
    return int((obj.get('metadata') or {}).get('resourceVersion') or 0)


def _stage_of_reason(reason: str) -> StageName | None:
    """The stage of an Event reason such as BuildSucceeded or BlueGreenSkipped."""
    for name in StageName:
        if reason in (f'{name.value}Succeeded', f'{name.value}Skipped'):
            return name
    return None


def _health_summary(check: dict[str, Any]) -> str:
    return (f'Health checks {check.get("passed", 0)}/{check.get("total", 0)} passed on {check.get("url")} '
            f'(median {check.get("latencyMedianMs")} ms, max {check.get("latencyMaxMs")} ms)')


# ---------------------------------------------------------------------------------------------
# Tasks: one container per task definition.


@dataclasses.dataclass
class Task:
    container: docker.models.containers.Container
    port: int


class TaskRunner:
    """Runs what ECS would: the image of a task definition, as a local container on the host network.

    Its `start` and `stop` have the signature of `AwsSandbox`'s `on_green_task_set` and
    `on_cleanup` callbacks. The task definition names the ECR image; the container runs the
    same repository and tag from the local registry the operator pushed to.
    """

    def __init__(self, *, client: docker.DockerClient, registry: str, printer: ProgressPrinter) -> None:
        self.client = client
        self.registry = registry
        self.printer = printer
        self.labels = {LABEL: '1', f'{LABEL}.pid': str(os.getpid())}
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()

    def start(self, task_definition_arn: str, image: str, container_port: int) -> int:
        """The host port of the task definition's container, started (and answering) if it was not."""
        with self._lock:
            if (task := self._tasks.get(task_definition_arn)) is not None:
                return task.port
            task = self._run(task_definition_arn, self.local_image(image), container_port)
            self._tasks[task_definition_arn] = task
        self.printer.note(f'[sandbox] Task definition {_short_arn(task_definition_arn)}: container '
                          f'{task.container.name} serves on 127.0.0.1:{task.port} (container port {container_port})')
        return task.port

    def stop(self, task_definition_arn: str, image: str = '', container_port: int = 0) -> None:
        with self._lock:
            task = self._tasks.pop(task_definition_arn, None)
        if task is not None:
            _remove(task.container)
            self.printer.note(f'[sandbox] Task definition {_short_arn(task_definition_arn)}: '
                              f'container {task.container.name} removed')

    def port_of(self, task_definition_arn: str) -> int | None:
        with self._lock:
            task = self._tasks.get(task_definition_arn)
            return task.port if task else None

    def remove_orphans(self) -> int:
        """Remove containers of earlier demos that were killed before they could clean up."""
        orphans = [c for c in self.client.containers.list(all=True, filters={'label': f'{LABEL}=1'})
                   if not _alive(int(c.labels.get(f'{LABEL}.pid') or 0))]
        for container in orphans:
            _remove(container)
        return len(orphans)

    def stop_all(self) -> None:
        """Remove every container this demo started (by label, so none escapes)."""
        with self._lock:
            self._tasks.clear()
        found = self.client.containers.list(all=True, filters={'label': [f'{k}={v}' for k, v in self.labels.items()]})
        for container in found:
            _remove(container)

    def local_image(self, image: str) -> str:
        """`ACCOUNT.dkr.ecr.REGION.amazonaws.com/repo:tag` -> `REGISTRY/repo:tag` (as the operator pushed it)."""
        if '.dkr.ecr.' in image.split('/', 1)[0]:
            return f'{self.registry}/{image.split("/", 1)[1]}'
        return image

    def _run(self, task_definition_arn: str, image: str, container_port: int) -> Task:
        port = localdocker.free_port()
        family_revision = _short_arn(task_definition_arn).replace(':', '-')
        container = self.client.containers.run(
            image, detach=True, network_mode='host', environment={'PORT': str(port)}, labels=self.labels,
            name=f'panda-demo-{os.getpid()}-{family_revision}')
        deadline = time.monotonic() + 20
        while localdocker.answers(f'http://127.0.0.1:{port}/') is None:
            container.reload()
            if container.status == 'exited' or time.monotonic() > deadline:
                logs = container.logs(tail=20).decode(errors='replace')
                _remove(container)
                raise RuntimeError(f'container for {task_definition_arn} did not answer on port {port}: {logs}')
            time.sleep(0.1)
        return Task(container=container, port=port)


def _remove(container: docker.models.containers.Container) -> None:
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        container.remove(force=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _short_arn(arn: str) -> str:
    """`family:revision` of a task definition ARN."""
    return arn.rsplit('/', 1)[-1]


# ---------------------------------------------------------------------------------------------
# The AWS world and the load balancer stand-in.


@dataclasses.dataclass(frozen=True)
class AwsWorld:
    """What exists in the sandbox before the operator acts."""
    cluster: str
    service: str
    dns_name: str
    production_listener_arn: str
    test_listener_arn: str
    blue_target_group_arn: str
    green_target_group_arn: str
    role_arn: str

    def colour_of(self, target_group_arn: str) -> str:
        return {self.blue_target_group_arn: 'blue', self.green_target_group_arn: 'green'}.get(
            target_group_arn, target_group_arn.rsplit('/', 2)[-2])


def create_aws_world(clients: Callable[[str], Any], *, cluster: str, service: str) -> AwsWorld:
    """ECS cluster, VPC, ALB, blue and green target groups, production (80) and test (8080) listeners,
    and the role CodeDeploy would assume; no service and no CodeDeploy group (the operator makes those)."""
    clients('ecs').create_cluster(clusterName=cluster)
    ec2, elb, iam = clients('ec2'), clients('elbv2'), clients('iam')
    vpc = ec2.create_vpc(CidrBlock='10.0.0.0/16')['Vpc']['VpcId']
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f'10.0.{i}.0/24', AvailabilityZone=f'{REGION}{zone}')
               ['Subnet']['SubnetId'] for i, zone in enumerate('ac')]
    lb = elb.create_load_balancer(Name=f'{service}-alb', Subnets=subnets, Type='application')['LoadBalancers'][0]
    blue, green = (elb.create_target_group(Name=f'{service}-{colour}', Protocol='HTTP', Port=8080, VpcId=vpc,
                                           TargetType='ip', HealthCheckPath='/health')
                   ['TargetGroups'][0]['TargetGroupArn'] for colour in ('blue', 'green'))
    production, test = (elb.create_listener(LoadBalancerArn=lb['LoadBalancerArn'], Protocol='HTTP', Port=port,
                                            DefaultActions=[{'Type': 'forward', 'TargetGroupArn': blue}])
                        ['Listeners'][0]['ListenerArn'] for port in (80, 8080))
    trust = {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 'sts:AssumeRole',
                                                     'Principal': {'Service': 'codedeploy.amazonaws.com'}}]}
    role = iam.create_role(RoleName=f'{service}-codedeploy', AssumeRolePolicyDocument=json.dumps(trust))
    return AwsWorld(cluster=cluster, service=service, dns_name=lb['DNSName'], production_listener_arn=production,
                    test_listener_arn=test, blue_target_group_arn=blue, green_target_group_arn=green,
                    role_arn=role['Role']['Arn'])


def forward_target_group(listener: dict[str, Any]) -> str | None:
    """The target group a listener sends this request to (weighted, as an ALB does), or None."""
    for action in listener.get('DefaultActions') or []:
        groups = [g for g in (action.get('ForwardConfig') or {}).get('TargetGroups') or [] if g.get('Weight', 1) > 0]
        if groups:
            chosen = random.choices(groups, weights=[g.get('Weight', 1) for g in groups])[0]
            return str(chosen['TargetGroupArn'])
        if action.get('TargetGroupArn'):
            return str(action['TargetGroupArn'])
    return None


class LoadBalancerStandIn(http.server.ThreadingHTTPServer):
    """An HTTP proxy that plays the ALB for every request to the load balancer's DNS name.

    DNS name and port -> listener -> the target group it forwards to now ->
    the ECS task set behind that target group -> its container. Health checks
    (the operator's User-Agent) are reported to the printer.
    """

    daemon_threads = True

    def __init__(self, *, world: AwsWorld, clients: Callable[[str], Any], tasks: TaskRunner,
                 printer: ProgressPrinter) -> None:
        super().__init__(('127.0.0.1', 0), _ProxyHandler)
        self.world, self.clients, self.tasks, self.printer = world, clients, tasks, printer
        self._thread = threading.Thread(target=self.serve_forever, name='load-balancer', daemon=True)

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.server_address[1]}'

    def start(self) -> LoadBalancerStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def route(self, host: str, port: int) -> tuple[str, int]:
        """(colour, container port on 127.0.0.1) for a request to host:port; raises LookupError."""
        elb = self.clients('elbv2')
        balancers = [lb for lb in elb.describe_load_balancers()['LoadBalancers'] if lb['DNSName'] == host]
        if not balancers:
            raise LookupError(f'no load balancer is named {host}')
        listeners = elb.describe_listeners(LoadBalancerArn=balancers[0]['LoadBalancerArn'])['Listeners']
        listener = next((found for found in listeners if found['Port'] == port), None)
        target_group = forward_target_group(listener) if listener else None
        if target_group is None:
            raise LookupError(f'no listener forwards port {port} of {host}')
        return self.world.colour_of(target_group), self._task_port(target_group)

    def _task_port(self, target_group_arn: str) -> int:
        """The port of the container behind a target group: its task set's task definition.

        A service that has no task set yet (just created: moto runs no tasks and the
        simulator only starts replacements) is served by its own task definition,
        started here on first use and held until it answers. On AWS the operator's
        first checks of a new service would meet tasks still starting (an ALB answers
        503 then): stage 4 skips and Verify checks production at once, without waiting
        for the service to be stable (controller/pipeline/bluegreen.py, verify.py).
        """
        ecs, world = self.clients('ecs'), self.world
        task_sets = ecs.describe_task_sets(cluster=world.cluster, service=world.service).get('taskSets') or []
        for task_set in task_sets:
            if any(lb.get('targetGroupArn') == target_group_arn for lb in task_set.get('loadBalancers') or []):
                return self._started(task_set['taskDefinition'])
        services = ecs.describe_services(cluster=world.cluster, services=[world.service])['services']
        for service in services:
            if any(lb.get('targetGroupArn') == target_group_arn for lb in service.get('loadBalancers') or []):
                return self._started(service['taskDefinition'])
        raise LookupError(f'no task is registered with {target_group_arn.rsplit("/", 2)[-2]}')

    def _started(self, task_definition_arn: str) -> int:
        port = self.tasks.port_of(task_definition_arn)
        if port is not None:
            return port
        definition = self.clients('ecs').describe_task_definition(taskDefinition=task_definition_arn)
        container = definition['taskDefinition']['containerDefinitions'][0]
        return self.tasks.start(task_definition_arn, container['image'],
                                int(container['portMappings'][0]['containerPort']))


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: LoadBalancerStandIn
    HOP_BY_HOP = frozenset({'connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te',
                            'trailers', 'transfer-encoding', 'upgrade'})

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._proxy()

    def do_HEAD(self) -> None:  # noqa: N802
        self._proxy()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- quiet
        pass

    def _proxy(self) -> None:
        target = urllib.parse.urlsplit(self.path)
        if target.scheme != 'http' or not target.hostname:
            self._answer(400, 'This is the demo\'s load balancer stand-in: an HTTP proxy for the ALB\'s DNS name.\n')
            return
        try:
            colour, port = self.server.route(target.hostname, target.port or 80)
        except (LookupError, RuntimeError) as exc:
            self._answer(503, f'{exc}\n')
            return
        path = target.path or '/'
        if target.query:
            path += f'?{target.query}'
        status = self._forward(port, path, colour)
        if self.headers.get('User-Agent') == HEALTH_CHECK_AGENT:
            self.server.printer.check_seen(listener_port=target.port or 80, colour=colour, status=status)

    def _forward(self, port: int, path: str, colour: str) -> int:
        upstream = http.client.HTTPConnection('127.0.0.1', port, timeout=10)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in self.HOP_BY_HOP}
            upstream.request(self.command, path, headers=headers)
            response = upstream.getresponse()
            body = response.read()
        except OSError as exc:
            self._answer(502, f'{colour} did not answer: {exc}\n')
            return 502
        finally:
            upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in self.HOP_BY_HOP | {'content-length'}:
                self.send_header(key, value)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('X-Panda-Demo-Target', colour)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)
        return response.status

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header('Content-Type', 'text/plain')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)


# ---------------------------------------------------------------------------------------------
# The sample app repository.


class SampleRepository:
    """examples/sample-app as a git repository served by file:// URL; each version is one commit.

    Author, committer and dates are fixed, so the same versions have the same
    commit SHAs on every machine and every run (and so the same image tags).
    """

    def __init__(self, root: pathlib.Path) -> None:
        self.work = root / 'work'
        self.bare = root / 'your-org' / 'sample-app.git'  # owner/name -> ECR repository your-org-sample-app
        shutil.copytree(ROOT / 'examples' / 'sample-app', self.work)
        self._git('init', '-q', '-b', 'main', '.')
        self._git('init', '-q', '--bare', '-b', 'main', str(self.bare))
        self._page = (self.work / 'www' / 'index.html').read_text()

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def commit(self, version: int) -> tuple[str, str]:
        """Commit version `version` of the app (its page says so) to main and push; (sha, subject)."""
        if version > 1:
            (self.work / 'www' / 'index.html').write_text(self._page.replace('</h1>', f' (v{version})</h1>'))
        subject = f'Sample app v{version}'
        when = f'2025-01-{version:02d}T12:00:00+00:00'
        self._git('add', '-A')
        self._git('commit', '-q', '-m', subject, env={'GIT_AUTHOR_DATE': when, 'GIT_COMMITTER_DATE': when})
        self._git('push', '-q', str(self.bare), 'main')
        return self._git('rev-parse', 'HEAD'), subject

    def _git(self, *args: str, env: dict[str, str] | None = None) -> str:
        environment = {**os.environ, 'GIT_CONFIG_GLOBAL': os.devnull, 'GIT_CONFIG_NOSYSTEM': '1',
                       'GIT_AUTHOR_NAME': 'Panda Demo', 'GIT_AUTHOR_EMAIL': 'demo@panda.invalid',
                       'GIT_COMMITTER_NAME': 'Panda Demo', 'GIT_COMMITTER_EMAIL': 'demo@panda.invalid', **(env or {})}
        done = subprocess.run(['git', '-C', str(self.work), *args], env=environment, check=True,
                              capture_output=True, text=True)
        return done.stdout.strip()


# ---------------------------------------------------------------------------------------------
# Kubernetes: manifests, watches.


def demo_manifests(*, repo_url: str, base_image: str, world: AwsWorld) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(Secrets, PandaDeploy) from examples/, filled in for the sandbox."""
    secrets = [doc for doc in yaml.safe_load_all((ROOT / 'examples' / 'secrets.yaml').read_text()) if doc]
    for secret in secrets:
        if secret['metadata']['name'] == 'aws-creds':
            secret['stringData'] = dict(SANDBOX_KEYS)
        else:  # a GitHub token: a file:// repository needs none, but the sample refers to the Secret
            secret['stringData'] = {'token': 'not-needed-for-a-file-url'}
    resource = yaml.safe_load((ROOT / 'examples' / 'pandadeploy.yaml').read_text())
    spec = copy.deepcopy(resource['spec'])
    spec['source'] = {'url': repo_url, 'branch': 'main', 'tokenSecretRef': spec['source']['tokenSecretRef'],
                      'buildArgs': {'BASE_IMAGE': base_image}}
    spec['ecs'].update(cluster=world.cluster, service=world.service, desiredCount=1)
    spec['blueGreen']['codeDeploy']['serviceRoleArn'] = world.role_arn
    spec['blueGreen']['hooks'] = {'beforeAllowTraffic': f'{world.service}-before-allow-traffic',
                                  'afterAllowTraffic': f'{world.service}-after-allow-traffic'}
    spec['blueGreen']['loadBalancer'] = {
        'productionListenerArn': world.production_listener_arn, 'testListenerArn': world.test_listener_arn,
        'blueTargetGroupArn': world.blue_target_group_arn, 'greenTargetGroupArn': world.green_target_group_arn}
    spec['healthCheck'].update(intervalSeconds=1)
    spec['timeouts'] = {'stageSeconds': '2m', 'totalSeconds': '5m'}
    resource['spec'] = spec
    return secrets, resource


class Watches:
    """The resource and its Events, watched through the Kubernetes API into the printer."""

    def __init__(self, api: kubernetes.client.ApiClient, printer: ProgressPrinter) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.printer = printer
        self._watches: list[kubernetes.watch.Watch] = []
        self._stopping = False

    def start(self) -> None:
        objects = self.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)
        self._spawn(self.printer.watched_object, self.custom.list_namespaced_custom_object,
                    GROUP, VERSION, NAMESPACE, PLURAL, field_selector=f'metadata.name={NAME}',
                    resource_version=objects['metadata']['resourceVersion'])
        events = self.core.list_namespaced_event(NAMESPACE)
        self._spawn(self.printer.watched_event, self.core.list_namespaced_event, NAMESPACE,
                    field_selector=f'involvedObject.name={NAME}', resource_version=events.metadata.resource_version)

    def stop(self) -> None:
        self._stopping = True
        for watch in self._watches:
            watch.stop()

    def _spawn(self, deliver: Callable[[dict[str, Any]], None], list_fn: Callable[..., Any], *args: Any,
               **kwargs: Any) -> None:
        watch = kubernetes.watch.Watch()
        self._watches.append(watch)

        def follow() -> None:
            try:
                for item in watch.stream(list_fn, *args, **kwargs):
                    if item['type'] in ('ADDED', 'MODIFIED'):
                        deliver(item.get('raw_object') or item['object'])
            except Exception as exc:  # noqa: BLE001 -- at the end, the server going away ends the stream
                if not self._stopping:
                    self.printer.note(f'[demo] The watch of {list_fn.__name__} ended: {type(exc).__name__}: {exc}')

        threading.Thread(target=follow, name='demo-watch', daemon=True).start()


# ---------------------------------------------------------------------------------------------
# The operator process.


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
               # Tokens may go to this machine's git servers (tests, your own) and file:// repositories here.
               PANDA_DEPLOY_GIT_HOSTS='github.com,http://127.0.0.1:*,file://')
    return env


def start_operator(env: dict[str, str], log_path: pathlib.Path, *, append: bool = False) -> subprocess.Popen[bytes]:
    """`python -m controller operator`, in this process group; returns once /healthz answers."""
    with log_path.open('ab' if append else 'wb') as log:
        process = subprocess.Popen([sys.executable, '-m', 'controller', 'operator', '--standalone',
                                    '--all-namespaces'], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    health = f'http://127.0.0.1:{env["PANDA_DEPLOY_HTTP_PORT"]}/healthz'
    deadline = time.monotonic() + 60
    while localdocker.answers(health) != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            localdocker.stop(process)
            raise DemoFailed(f'the operator did not start:\n{_tail(log_path)}')
        time.sleep(0.2)
    return process


def _tail(path: pathlib.Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:])
    return ''


# ---------------------------------------------------------------------------------------------
# The demo.


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


def _docker_client() -> docker.DockerClient | None:
    try:
        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        where = os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'
        print(START_ENGINE.format(where=where, error=type(exc).__name__), file=sys.stderr)
        return None


def _clients(aws_url: str) -> Callable[[str], Any]:
    """boto3 clients of the sandbox for the demo's own calls, one per service, made on first use."""
    session = boto3.session.Session(aws_access_key_id='demo', aws_secret_access_key='demo', region_name=REGION)
    made: dict[str, Any] = {}
    lock = threading.Lock()

    def client(service: str) -> Any:
        with lock:
            if service not in made:
                made[service] = session.client(service, endpoint_url=aws_url)
            return made[service]
    return client


def start_sandbox(stack: contextlib.ExitStack, client: docker.DockerClient, printer: ProgressPrinter, *,
                  operator_env: dict[str, str] | None = None, apply: bool = True) -> Sandbox:
    """Start every stand-in and the operator; each is stopped when `stack` closes.

    `operator_env` is added to the operator's environment; with `apply` false, the sample Secrets and
    resource are not applied (the caller creates its own)."""
    temp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix='panda-demo-')))
    base_image = localdocker.ensure_base_image(client)
    registry_process, registry, _ = localdocker.start_registry(temp / 'registry', auth=False)
    stack.callback(localdocker.stop, registry_process)
    stack.callback(_remove_builds, client, printer.deployment_ids)
    printer.note(f'[sandbox] Registry on {registry}; base image {base_image}')

    tasks = TaskRunner(client=client, registry=registry, printer=printer)
    stack.callback(tasks.stop_all)
    if removed := tasks.remove_orphans():
        printer.note(f'[sandbox] Removed {removed} container(s) left by an earlier demo that was killed')
    aws = AwsSandbox(auto_hooks=True, timings=FAST, on_green_task_set=tasks.start, on_cleanup=tasks.stop).start()
    stack.callback(aws.stop)
    aws.reset()  # moto's state is per process: an earlier sandbox's load balancer and target groups go
    clients = _clients(aws.url)
    world = create_aws_world(clients, cluster='sample-cluster', service=NAME)
    printer.note(f'[sandbox] AWS (moto + CodeDeploy simulator) on {aws.url}: cluster {world.cluster}, load balancer '
                 f'{world.dns_name}, target groups {NAME}-blue and {NAME}-green, listeners :80 (production) '
                 f'and :8080 (test)')

    balancer = LoadBalancerStandIn(world=world, clients=clients, tasks=tasks, printer=printer).start()
    stack.callback(balancer.stop)
    printer.note(f'[sandbox] Load balancer stand-in on {balancer.url} (the operator\'s http_proxy)')

    cluster = ClusterServer().start()
    stack.callback(cluster.stop)
    for doc in yaml.safe_load_all((ROOT / 'crds' / 'pandadeploys.yaml').read_text()):
        cluster.emulator.add_crd(doc)
    kubeconfig = cluster.write_kubeconfig(temp / 'kubeconfig')
    printer.note(f'[sandbox] Kubernetes API emulator on {cluster.url}; try: KUBECONFIG={kubeconfig} kubectl get pd -w')

    repository = SampleRepository(temp / 'git')
    operator_log = temp / 'operator.log'
    env = operator_environment(kubeconfig=kubeconfig, aws_url=aws.url, registry=registry,
                               http_port=localdocker.free_port(), proxy_url=balancer.url)
    env.update(operator_env or {})
    operator = start_operator(env, operator_log)
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
    if apply:
        apply_manifests(api, repository=repository, base_image=base_image, world=world, printer=printer)
    return sandbox


def restart_operator(sandbox: Sandbox, *, kill: int = signal.SIGKILL) -> None:
    """Stop the operator with `kill` (SIGKILL: no clean-up at all) and start a new one with the same environment."""
    with contextlib.suppress(ProcessLookupError):
        sandbox.operator.send_signal(kill)
    sandbox.operator.wait(timeout=60)
    sandbox.operator = start_operator(sandbox.env, sandbox.operator_log, append=True)


def _remove_builds(client: docker.DockerClient, deployment_ids: set[str]) -> None:
    """Remove the images the demo's runs built (by id: every tag, pushed digest and untagged parent goes)."""
    # One listing call with the labels in it: `images.list` inspects each image afterwards, which raises
    # ImageNotFound when another client of a shared engine removes one of its own labelled images meanwhile.
    for image in client.api.images(filters={'label': BUILD_LABEL}):
        if (image.get('Labels') or {}).get(BUILD_LABEL) in deployment_ids:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image['Id'], force=True)


def apply_manifests(api: kubernetes.client.ApiClient, *, repository: SampleRepository, base_image: str,
                    world: AwsWorld, printer: ProgressPrinter) -> None:
    """The first commit, then the sample Secrets and the PandaDeploy, through the Kubernetes API."""
    sha, subject = repository.commit(1)
    printer.note(f'[sandbox] Sample app repository {repository.url}: {sha[:7]} "{subject}"')
    secrets, resource = demo_manifests(repo_url=repository.url, base_image=base_image, world=world)
    printer.checks_total = int(resource['spec']['healthCheck']['checks'])
    core = kubernetes.client.CoreV1Api(api)
    for secret in secrets:
        core.create_namespaced_secret(NAMESPACE, secret)
    printer.note(f'Applied Secrets {", ".join(s["metadata"]["name"] for s in secrets)} (sandbox values) and '
                 f'PandaDeploy {NAMESPACE}/{NAME} (examples/, filled in for the sandbox)')
    printer.note(f'\n== Rollout 1/{ROLLOUTS}: branch main at {sha[:7]} "{subject}" (generation 1) ==')
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL,
                                                                            resource)


def bump(sandbox: Sandbox, number: int) -> None:
    """A new commit, pinned with spec.source.revision: a spec change, so a new generation and a new run."""
    sha, subject = sandbox.repository.commit(number)
    found = sandbox.custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, NAME, {'spec': {'source': {'branch': None, 'revision': sha}}})
    generation = found['metadata']['generation']
    sandbox.printer.note(f'\n== Rollout {number}/{ROLLOUTS}: commit {sha[:7]} "{subject}" pinned with '
                         f'spec.source.revision (generation {generation}) ==')


def await_rollout(sandbox: Sandbox, generation: int) -> dict[str, Any]:
    """The status that ends the run for `generation`, once its last lines are printed; DemoFailed otherwise."""
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    status = None
    while status is None and time.monotonic() < deadline:
        status = sandbox.printer.wait_for_outcome(generation, timeout=1.0)
        if status is None and sandbox.operator.poll() is not None:
            raise DemoFailed(f'the operator exited with code {sandbox.operator.returncode}; its log:\n'
                             f'{_tail(sandbox.operator_log)}')
    sandbox.printer.settle()
    if status is None:
        raise DemoFailed(f'rollout for generation {generation} did not finish within {ROLLOUT_TIMEOUT:.0f}s; '
                         f'operator log:\n{_tail(sandbox.operator_log)}')
    if status.get('phase') != 'Succeeded':
        raise DemoFailed(f'rollout for generation {generation} failed: {status.get("message")}')
    return status


def show_production(sandbox: Sandbox) -> None:
    """GET the production URL through the load balancer stand-in, as a user would reach the app."""
    url = f'http://{sandbox.world.dns_name}/'
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': sandbox.proxy_url}))
    with opener.open(url, timeout=10) as response:
        page = response.read().decode(errors='replace')
        answer = f'HTTP {response.status} from {response.headers.get("X-Panda-Demo-Target", "?")}'
    heading = re.search(r'<h1>(.*?)</h1>', page)
    sandbox.printer.note(f'[demo] GET {url} -> {answer}: "{heading.group(1) if heading else page[:60]}"')


def summary(found: dict[str, Any]) -> str:
    """The resource's final status, the way `kubectl get pd` and `describe` would show it."""
    status = found.get('status') or {}
    ready = _ready(found)
    image = status.get('image') or {}
    lines = [f'\n== {NAMESPACE}/{NAME}: {status.get("phase")}, Ready={ready.get("status")} '
             f'({ready.get("reason")}: {ready.get("message")}) ==',
             f'  generation    {found["metadata"]["generation"]} (observed {status.get("observedGeneration")})',
             f'  revision      {status.get("revision")}',
             f'  image         {image.get("uri")}@{image.get("digest")}',
             f'  task def      {status.get("taskDefinitionArn")}',
             f'  active        {status.get("activeColor")}',
             f'  blue URL      {status.get("blueUrl")}',
             f'  green URL     {status.get("greenUrl")}']
    if status.get('healthCheck'):
        lines.append(f'  health check  {_health_summary(status["healthCheck"])}')
    lines.append('  history       generation  revision  result     active  seconds')
    for entry in status.get('history') or []:
        lines.append(f'                {entry["generation"]:<10}  {(entry.get("revision") or "")[:7]:<8}  '
                     f'{entry["result"]:<9}  {entry.get("activeColor") or "-":<6}  {entry["durationSeconds"]}')
    return '\n'.join(lines)


def _ready(found: dict[str, Any]) -> dict[str, Any]:
    """The Ready condition (empty when there is none)."""
    conditions = (found.get('status') or {}).get('conditions') or []
    return next((c for c in conditions if c.get('type') == 'Ready'), {})


def run_demo(stack: contextlib.ExitStack, client: docker.DockerClient) -> int:
    printer = ProgressPrinter()
    stack.callback(printer.close)
    printer.note('panda-deploy demo: the operator against local stand-ins for Kubernetes, AWS and GitHub')
    sandbox = start_sandbox(stack, client, printer)
    for number in range(1, ROLLOUTS + 1):
        if number > 1:
            bump(sandbox, number)
        await_rollout(sandbox, number)
        show_production(sandbox)
    printer.close()
    found = sandbox.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
    print(summary(found), flush=True)
    ready = _ready(found)
    current = (found.get('status') or {}).get('observedGeneration') == found['metadata']['generation']
    if ready.get('status') != 'True' or not current:
        raise DemoFailed(f'{NAME} is not Ready for generation {found["metadata"]["generation"]}: {ready}')
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when the resource is Ready after the last rollout, 1 on failure, 2 without Docker."""
    parser = argparse.ArgumentParser(prog='panda-deploy demo', description=__doc__.split('\n')[0])
    parser.parse_args(argv)
    client = _docker_client()
    if client is None:
        return 2
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.getsignal(signal.SIGINT)
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(client.close)
            try:
                return run_demo(stack, client)
            finally:  # a second Ctrl-C must not cut the clean-up short
                for signum in previous:
                    signal.signal(signum, signal.SIG_IGN)
    except localdocker.Unavailable as exc:
        print(f'panda-deploy demo: {exc}', file=sys.stderr)
        return 2
    except DemoFailed as exc:
        print(f'panda-deploy demo failed: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('panda-deploy demo: interrupted; everything it started is stopped', file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

