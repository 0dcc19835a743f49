"""Any number of AWS worlds behind one load-balancer stand-in: those `panda-deploy sandbox world` creates.

Why: the demo's stack knows its one world when it starts; `sandbox up` starts
before any world exists, and `sandbox world` (another process) then creates
one per service, in any region. So `sandbox world` tags each load balancer
with its world (`tag_world`), and `AnyWorldBalancer` looks the world up for
each request from the load balancer's DNS name (the region is in the name,
`NAME-1.REGION.elb.amazonaws.com`; the rest in its tags) and then routes
exactly as `LoadBalancerStandIn` does for the demo's one world.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from controller.sandbox.stack.loadbalancer import LoadBalancerStandIn, Served
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.routing import FixedResponse, Request
from controller.sandbox.stack.targets import TargetTasks
from controller.sandbox.stack.tasks import TaskRunner
from controller.sandbox.stack.world import REGION as DEFAULT_REGION
from controller.sandbox.stack.world import AwsWorld, sandbox_clients

TAG = 'panda-deploy.sandbox/'  # prefix of the tags that record a world on its load balancer
FIELDS = ('cluster', 'service', 'blue_target_group_arn', 'green_target_group_arn', 'role_arn')
PRODUCTION_PORT, TEST_PORT = 80, 8080  # create_aws_world's listeners


def tag_world(clients: Callable[[str], Any], load_balancer_arn: str, world: AwsWorld) -> None:
    """Record `world` on its load balancer, for `AnyWorldBalancer` (tag values hold up to 256 characters)."""
    clients('elbv2').add_tags(ResourceArns=[load_balancer_arn],
                              Tags=[{'Key': f'{TAG}{field}', 'Value': getattr(world, field)} for field in FIELDS])


def region_of(dns_name: str) -> str:
    """The region in an ALB's DNS name (`NAME-1.REGION.elb.amazonaws.com`); LookupError for other names."""
    parts = dns_name.split('.')
    if len(parts) != 5 or parts[2:] != ['elb', 'amazonaws', 'com']:
        raise LookupError(f'{dns_name} is not a load balancer\'s DNS name')
    return parts[1]


def read_world(clients: Callable[[str], Any], dns_name: str) -> AwsWorld:
    """The world whose load balancer is named `dns_name`, from its tags; LookupError when there is none."""
    elb = clients('elbv2')
    found = [lb for lb in elb.describe_load_balancers()['LoadBalancers'] if lb['DNSName'] == dns_name]
    if not found:
        raise LookupError(f'no load balancer is named {dns_name}')
    arn = found[0]['LoadBalancerArn']
    described = elb.describe_tags(ResourceArns=[arn])['TagDescriptions']
    tags = {t['Key'][len(TAG):]: t['Value'] for d in described for t in d['Tags'] if t['Key'].startswith(TAG)}
    if set(FIELDS) - set(tags):
        raise LookupError(f'{dns_name} was not made by `panda-deploy sandbox world`')
    listeners = {listener['Port']: listener['ListenerArn']
                 for listener in elb.describe_listeners(LoadBalancerArn=arn)['Listeners']}
    return AwsWorld(dns_name=dns_name, production_listener_arn=listeners.get(PRODUCTION_PORT, ''),
                    test_listener_arn=listeners.get(TEST_PORT, ''), **{field: tags[field] for field in FIELDS})


class RegionTargets(TargetTasks):
    """`TargetTasks` for target groups of any region: one per region (the region is in the target group's ARN)."""

    def __init__(self, *, clients_of: Callable[[str], Callable[[str], Any]], tasks: TaskRunner) -> None:
        super().__init__(clients=clients_of(DEFAULT_REGION), tasks=tasks)
        self._clients_of = clients_of
        self._regions: dict[str, TargetTasks] = {}
        self._regions_lock = threading.Lock()

    def serve(self, target_group_arn: str) -> tuple[int, str]:
        return self._of(target_group_arn.split(':')[3]).serve(target_group_arn)

    def sweep(self) -> None:
        with self._regions_lock:
            regions = list(self._regions.values())
        for targets in regions:
            targets.sweep()

    def _of(self, region: str) -> TargetTasks:
        with self._regions_lock:
            if region not in self._regions:
                self._regions[region] = TargetTasks(clients=self._clients_of(region), tasks=self.tasks)
            return self._regions[region]


class AnyWorldBalancer(LoadBalancerStandIn):
    """`LoadBalancerStandIn` for every world `sandbox world` made, in any region.

    The base class reads `self.clients` (one region's) and `self.world` (whose
    target groups are blue and green) while it routes a request; here both are
    per thread (one request a thread), set by `route` from the request's host.
    Target groups are served per region (`RegionTargets`).
    """

    def __init__(self, *, aws_url: str, tasks: TaskRunner, printer: ProgressPrinter) -> None:
        self._aws_url = aws_url
        self._local = threading.local()
        self._regions: dict[str, Callable[[str], Any]] = {}
        self._worlds: dict[str, AwsWorld] = {}
        self._lock = threading.Lock()
        super().__init__(world=None, clients=self._clients_of(DEFAULT_REGION), tasks=tasks, printer=printer)
        self.targets = RegionTargets(clients_of=self._clients_of, tasks=tasks)

    @property
    def world(self) -> AwsWorld | None:
        return getattr(self._local, 'world', None)

    @world.setter
    def world(self, value: AwsWorld | None) -> None:
        """The base class's one world: none here."""

    @property
    def clients(self) -> Callable[[str], Any]:
        found: Callable[[str], Any] = getattr(self._local, 'clients', None) or self._clients_of(DEFAULT_REGION)
        return found

    @clients.setter
    def clients(self, value: Callable[[str], Any]) -> None:
        """The base class's one region's clients: chosen per request here."""

    def route(self, request: Request, port: int) -> Served | FixedResponse:
        self._local.clients = self._clients_of(region_of(request.host))
        self._local.world = self._world_of(request.host)
        return super().route(request, port)

    def _clients_of(self, region: str) -> Callable[[str], Any]:
        with self._lock:
            if region not in self._regions:
                self._regions[region] = sandbox_clients(self._aws_url, region=region)
            return self._regions[region]

    def _world_of(self, host: str) -> AwsWorld | None:
        with self._lock:
            if host in self._worlds:
                return self._worlds[host]
        try:
            known = read_world(self._local.clients, host)
        except LookupError:  # not one of `sandbox world`'s: routed all the same, answers name target groups
            return None
        with self._lock:  # a world never changes once made: remember it
            self._worlds[host] = known
        return known
