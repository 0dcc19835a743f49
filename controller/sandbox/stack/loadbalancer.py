"""The load balancer stand-in: an HTTP proxy that plays the ALB, so health checks reach a real server.

The operator is started with `http_proxy` pointing at `LoadBalancerStandIn`.
A request for `http://<the ALB's DNS name>:<port>/...` goes to the listener
on that port, to the target group that listener forwards to *now* (read from
the sandbox's ELBv2 state on every request, so it follows CodeDeploy's
switches), and to the container of the task set behind that target group
(`TaskRunner`). So the operator checks exactly the URLs it derives itself
(`controller.adapters.elbv2`): production on the first rollout, the test
listener (the replacement) afterwards; `spec.healthCheck.url` is not set.
moto starts no tasks for a new service either, and the CodeDeploy simulator
only reports replacement task sets: the first request for a service's first
task definition starts its container and is held until the container
answers (on AWS the operator's first checks could meet a service whose tasks
are still starting; see the note in `LoadBalancerStandIn._task_port`).
"""
from __future__ import annotations

import http.client
import http.server
import random
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from controller.adapters.http import USER_AGENT as HEALTH_CHECK_AGENT
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.tasks import TaskRunner
from controller.sandbox.stack.world import AwsWorld


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
