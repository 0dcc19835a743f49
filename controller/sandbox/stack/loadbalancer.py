"""The load balancer stand-in: an HTTP proxy that plays the ALB, so health checks reach a real server.

The operator is started with `http_proxy` pointing at `LoadBalancerStandIn`.
A request for `http://<the ALB's DNS name>:<port>/...` goes to the listener
on that port, through its rules as an ALB applies them (`routing`: the first
rule by priority whose path-pattern, host-header … conditions match, else
the default action), to the target group that rule forwards to *now* (read
from the sandbox's ELBv2 state on every request, so it follows CodeDeploy's
switches and ECS's canary and linear steps; several weighted target groups
share the requests exactly by weight), and to the container of the task
definition behind that target group (`targets`: a CodeDeploy task set's, or
an ECS native service revision's; started with `TaskRunner` when first
needed). So the operator checks exactly the URLs it derives itself
(`controller.adapters.elbv2`): production on the first rollout, the test
listener (the replacement) afterwards; `spec.healthCheck.url` is not set.
Every answer says who served it: `X-Panda-Demo-Target` (the colour, or the
target group's name outside the demo's world), `X-Panda-Demo-Target-Group`
and `X-Panda-Demo-Task-Definition` (`family:revision`).
"""
from __future__ import annotations

import dataclasses
import http.client
import http.server
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from controller.adapters.http import USER_AGENT as HEALTH_CHECK_AGENT
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.routing import FixedResponse, Request, WeightedSplit, decide, matching_rule
from controller.sandbox.stack.targets import TargetTasks, short_name
from controller.sandbox.stack.tasks import TaskRunner
from controller.sandbox.stack.world import AwsWorld

SWEEP_SECONDS = 1.0  # how often containers of ECS revisions that no longer have tasks are looked for


@dataclasses.dataclass(frozen=True, kw_only=True)
class Served:
    """Where a request went: the target group, its colour, the task definition and its container's port."""

    target_group_arn: str
    colour: str
    task_definition_arn: str
    port: int

    def headers(self) -> dict[str, str]:
        return {'X-Panda-Demo-Target': self.colour, 'X-Panda-Demo-Target-Group': short_name(self.target_group_arn),
                'X-Panda-Demo-Task-Definition': self.task_definition_arn.rsplit('/', 1)[-1]}


class LoadBalancerStandIn(http.server.ThreadingHTTPServer):
    """An HTTP proxy that plays the ALB for every request to a load balancer's DNS name.

    DNS name and port -> listener -> the rule that matches -> the target group it
    forwards to now -> the task definition behind that target group -> its
    container. Health checks (the operator's User-Agent) are reported to the
    printer. `world` names the demo's blue and green target groups (answers say
    `blue`/`green` for those) and its service, looked at first; without it every
    service is searched and answers name the target group.
    """

    daemon_threads = True

    def __init__(self, *, world: AwsWorld | None, clients: Callable[[str], Any], tasks: TaskRunner,
                 printer: ProgressPrinter, sweep_seconds: float = SWEEP_SECONDS) -> None:
        super().__init__(('127.0.0.1', 0), _ProxyHandler)
        self.world, self.clients, self.tasks, self.printer = world, clients, tasks, printer
        self.targets = TargetTasks(clients=clients, tasks=tasks,
                                   home=(world.cluster, world.service) if world is not None else None)
        self.split = WeightedSplit()
        self.sweep_seconds = sweep_seconds
        self._stopped = threading.Event()
        # (not `_threads`: ThreadingMixIn's own attribute)
        self._serving = threading.Thread(target=self.serve_forever, name='load-balancer', daemon=True)
        self._sweeping = threading.Thread(target=self._sweep, name='load-balancer-sweep', daemon=True)

    @property
    def url(self) -> str:
        return f'http://127.0.0.1:{self.server_address[1]}'

    def start(self) -> LoadBalancerStandIn:
        self._serving.start()
        self._sweeping.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self.shutdown()
        self.server_close()
        self._sweeping.join(timeout=10)

    def route(self, request: Request, port: int) -> Served | FixedResponse:
        """Where a request to request.host:port goes (or the fixed response it gets); raises LookupError."""
        elb = self.clients('elbv2')
        balancers = [lb for lb in elb.describe_load_balancers()['LoadBalancers'] if lb['DNSName'] == request.host]
        if not balancers:
            raise LookupError(f'no load balancer is named {request.host}')
        listeners = elb.describe_listeners(LoadBalancerArn=balancers[0]['LoadBalancerArn'])['Listeners']
        listener = next((found for found in listeners if found['Port'] == port), None)
        if listener is None:
            raise LookupError(f'no listener on port {port} of {request.host}')
        rules = elb.describe_rules(ListenerArn=listener['ListenerArn'])['Rules']
        rule = matching_rule(rules, request)
        if rule is not None:
            decision = decide(rule.get('Actions') or [], rule=str(rule['RuleArn']), split=self.split)
        else:  # the listener's default actions (CodeDeploy moves these)
            decision = decide(listener.get('DefaultActions') or [], rule=str(listener['ListenerArn']),
                              split=self.split)
        if isinstance(decision, FixedResponse):
            return decision
        group = decision.target_group_arn
        container_port, task_definition = self.targets.serve(group)
        colour = self.world.colour_of(group) if self.world is not None else short_name(group)
        return Served(target_group_arn=group, colour=colour, task_definition_arn=task_definition,
                      port=container_port)

    def _sweep(self) -> None:
        while not self._stopped.wait(self.sweep_seconds):
            try:
                self.targets.sweep()
            except Exception as exc:  # noqa: BLE001 -- the sandbox may be stopping; the next sweep tries again
                self.printer.note(f'[sandbox] Load balancer stand-in: could not look for stopped revisions: {exc}')


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
        request = Request(method=self.command, host=target.hostname, path=target.path or '/', query=target.query,
                          headers=dict(self.headers.items()))
        try:
            served = self.server.route(request, target.port or 80)
        except (LookupError, RuntimeError) as exc:
            self._answer(503, f'{exc}\n')
            return
        if isinstance(served, FixedResponse):
            self._answer(served.status, served.body, content_type=served.content_type)
            return
        path = request.path + (f'?{target.query}' if target.query else '')
        status = self._forward(served, path)
        if self.headers.get('User-Agent') == HEALTH_CHECK_AGENT:
            self.server.printer.check_seen(listener_port=target.port or 80, colour=served.colour, status=status)

    def _forward(self, served: Served, path: str) -> int:
        upstream = http.client.HTTPConnection('127.0.0.1', served.port, timeout=10)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in self.HOP_BY_HOP}
            upstream.request(self.command, path, headers=headers)
            response = upstream.getresponse()
            body = response.read()
        except OSError as exc:
            self._answer(502, f'{served.colour} did not answer: {exc}\n')
            return 502
        finally:
            upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in self.HOP_BY_HOP | {'content-length'}:
                self.send_header(key, value)
        self.send_header('Content-Length', str(len(body)))
        for key, value in served.headers().items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)
        return response.status

    def _answer(self, status: int, text: str, *, content_type: str = 'text/plain') -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)
