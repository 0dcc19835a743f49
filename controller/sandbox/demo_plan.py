"""What the demo's rollouts are meant to show, and the checks that they did: the demo's exit code rests on them.

Why apart from the script (`demo`): each rollout has an expected end (the
phase, the colour production is on, for the canary the split its requests
meet, for the broken commit ECS's rollback and production unchanged), and a
demo that printed the right words over a wrong outcome would teach the wrong
thing. Every check here reads what a user could read: the resource's status,
ECS's `DescribeServiceDeployments`, the listener rule, and production's own
answers through the load-balancer stand-in.

Time: ECS counts bake times and hook timeouts in minutes. The sandbox's
simulated minute lasts `MINUTE_SECONDS` here (the only figure shortened on
the AWS side besides the lifecycle steps, `FAST`), so a canary step of one
minute holds for that long; `shortened_time` says so in the output.
"""
from __future__ import annotations

import dataclasses
import re
import time
import urllib.error
import urllib.request
from typing import Any

from controller.models import GROUP, PLURAL, VERSION
from controller.sandbox.stack.canary_split import PAGE_LIMIT, await_weights, count_answers, weights
from controller.sandbox.stack.manifests import NAME, NAMESPACE
from controller.sandbox.stack.native_manifests import STAGE_MINUTES
from controller.sandbox.stack.sandbox import FAST, Sandbox
from controller.sandbox.summary import ready_condition

MINUTE_SECONDS = 10.0  # one simulated AWS minute (bakes, hook timeouts) lasts this long in the demo
TIMINGS = dataclasses.replace(FAST, minute_seconds=MINUTE_SECONDS)
CANARY_PERCENT, CANARY_MINUTES = 10, 1
REQUESTS = 100  # sent to production while the canary step holds
ENDED = ('SUCCESSFUL', 'STOPPED', 'ROLLBACK_SUCCESSFUL', 'ROLLBACK_FAILED')
ROLLED_BACK_TIMEOUT = 30.0


class DemoFailed(Exception):
    """The demo cannot go on, or a rollout did not end as expected; the message says why."""


@dataclasses.dataclass(frozen=True)
class Rollout:
    """One rollout of the demo: the app version committed, the strategy, and how it must end."""
    version: int
    strategy: str
    shows: str
    active: str  # the colour production is on once it ended
    broken: bool = False  # the commit drops /health: the run must fail and be rolled back

    @property
    def canary_percent(self) -> int:
        return CANARY_PERCENT if self.strategy == 'Canary' and not self.broken else 0

    @property
    def rollout(self) -> dict[str, Any]:
        """The spec.rollout fields this rollout sets (merged into the resource's)."""
        if self.strategy == 'Canary':
            return {'strategy': 'Canary', 'canary': {'percent': CANARY_PERCENT, 'bakeMinutes': CANARY_MINUTES}}
        return {'strategy': self.strategy}


PLAN = (
    Rollout(1, 'BlueGreen', 'ECS native blue/green creates the service, on blue', 'blue'),
    Rollout(2, 'BlueGreen', 'ECS native blue/green: checks through the test listener while ECS waits at the '
                            'PAUSE hook, then production moves to green at once', 'green'),
    Rollout(3, 'Canary', f'canary: {CANARY_PERCENT} % of production on the new version for '
                         f'{CANARY_MINUTES} minute, then all', 'blue'),
    Rollout(4, 'Canary', 'a broken commit: its checks fail at the hook, ECS rolls it back, '
                         'production stays on v3', 'blue', broken=True),
)


@dataclasses.dataclass(frozen=True)
class Production:
    """What production's URL answered: status, who served it and the page's heading."""
    status: int
    colour: str
    task_definition: str
    heading: str


def shortened_time() -> str:
    """What the demo shortens, said before it starts."""
    hook = STAGE_MINUTES + 1
    return (f'[demo] Shortened for the demo: a simulated AWS minute lasts {MINUTE_SECONDS:g} s (canary.bakeMinutes '
            f'{CANARY_MINUTES} holds the {CANARY_PERCENT} % step {CANARY_MINUTES * MINUTE_SECONDS:g} s; the PAUSE '
            f'hook\'s timeout, stage timeout + 1 = {hook} minutes, {hook * MINUTE_SECONDS:g} s), each ECS lifecycle '
            f'step {TIMINGS.step_seconds:g} s, health checks 1 s apart; bakeTimeMinutes 0')


def read_production(sandbox: Sandbox) -> Production:
    """GET the production URL through the load balancer stand-in, as a user would reach the app; printed."""
    url = f'http://{sandbox.world.dns_name}/'
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': sandbox.proxy_url}))
    try:
        with opener.open(url, timeout=10) as response:
            page, status = response.read(PAGE_LIMIT).decode(errors='replace'), response.status
            headers = response.headers
    except urllib.error.HTTPError as exc:
        raise DemoFailed(f'production {url} answered HTTP {exc.code}') from exc
    heading = re.search(r'<h1>(.*?)</h1>', page)
    found = Production(status=status, colour=str(headers.get('X-Panda-Demo-Target', '?')),
                       task_definition=str(headers.get('X-Panda-Demo-Task-Definition', '?')),
                       heading=heading.group(1) if heading else page[:60])
    sandbox.printer.note(f'[demo] GET {url} -> HTTP {found.status} from {found.colour} ({found.task_definition}): '
                         f'"{found.heading}"')
    return found


def check_outcome(sandbox: Sandbox, rollout: Rollout, status: dict[str, Any]) -> None:
    """The run ended as the plan says: Succeeded with production on `active`, or (broken) Failed at the checks."""
    phase, reason = status.get('phase'), _ready_reason(sandbox)
    if rollout.broken:
        if phase != 'Failed' or reason != 'HealthCheckFailed':
            raise DemoFailed(f'rollout {rollout.version} (broken) should fail its health checks, but ended {phase} '
                             f'({reason}): {status.get("message")}')
        sandbox.printer.note(f'[demo] Rollout {rollout.version} Failed as it should ({reason}): '
                             f'{status.get("message")}')
        return
    if phase != 'Succeeded':
        raise DemoFailed(f'rollout {rollout.version} failed: {status.get("message")}')
    if status.get('activeColor') != rollout.active:
        raise DemoFailed(f'rollout {rollout.version} left {status.get("activeColor")} active, not {rollout.active}')


def _ready_reason(sandbox: Sandbox) -> str | None:
    found = sandbox.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
    reason = ready_condition(found).get('reason')
    return str(reason) if reason else None


def await_rolled_back(sandbox: Sandbox, status: dict[str, Any]) -> None:
    """ECS's own word that the failed run's service deployment rolled back (ROLLBACK_SUCCESSFUL); printed."""
    arn = status.get('serviceDeploymentArn')
    if not arn:
        raise DemoFailed('the failed run recorded no ECS service deployment')
    ecs = sandbox.clients('ecs')
    deadline = time.monotonic() + ROLLED_BACK_TIMEOUT
    while True:
        found = ecs.describe_service_deployments(serviceDeploymentArns=[arn])['serviceDeployments'][0]
        if found['status'] in ENDED or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    sandbox.printer.note(f'[demo] ECS service deployment {arn.rsplit("/", 1)[-1]}: {found["status"]} '
                         f'({found.get("statusReason")})')
    if found['status'] != 'ROLLBACK_SUCCESSFUL':
        raise DemoFailed(f'the broken commit\'s service deployment ended {found["status"]}, not ROLLBACK_SUCCESSFUL')


def check_unchanged(sandbox: Sandbox, *, before: Production | None, now: Production) -> None:
    """Production answers from the version it did before the broken rollout; printed."""
    if before is None or (now.status, now.task_definition, now.heading) != \
            (before.status, before.task_definition, before.heading):
        raise DemoFailed(f'after the rollback production answers {now}, not as before: {before}')
    sandbox.printer.note(f'[demo] Production still answers from {now.task_definition} ("{now.heading}") on '
                         f'{now.colour}: the broken commit never reached it')


def check_canary_split(sandbox: Sandbox, rollout: Rollout, *, timeout: float) -> None:
    """While the canary step holds, `REQUESTS` requests to production: counted per target, printed, and
    required to match the canary's percent exactly."""
    spec = sandbox.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)['spec']
    rule = spec['rollout']['loadBalancer']['productionListenerRuleArn']
    percent = rollout.canary_percent
    held = await_weights(sandbox.clients, rule, lambda w: sorted(w.values()) == sorted([percent, 100 - percent]),
                         timeout=timeout,
                         stop=lambda: sandbox.printer.wait_for_outcome(rollout.version, timeout=0) is not None)
    if held is None:
        raise DemoFailed(f'the {percent} % canary step of rollout {rollout.version} was never seen on the '
                         f'production listener rule')
    url = f'http://{sandbox.world.dns_name}/'
    started = time.monotonic()
    counts = count_answers(proxy_url=sandbox.proxy_url, url=url, requests=REQUESTS)
    took = time.monotonic() - started
    still = weights(sandbox.clients, rule) == held
    shares = ', '.join(f'{sandbox.world.colour_of(arn)} {weight}' for arn, weight in held.items())
    answers = ', '.join(f'{n} from {a.colour} ({a.task_definition})' for a, n in counts.most_common())
    sandbox.printer.note(f'[demo] {REQUESTS} requests to {url} while the {percent} % canary step holds '
                         f'(production rule weights: {shares}), in {took:.1f} s: {answers}')
    by_colour = {sandbox.world.colour_of(arn): weight * REQUESTS // 100 for arn, weight in held.items()}
    found = {a.colour: n for a, n in counts.items()}
    if not still:
        raise DemoFailed(f'the canary step ended before the {REQUESTS} requests were answered; make '
                         f'MINUTE_SECONDS longer on this machine')
    if found != {colour: n for colour, n in by_colour.items() if n}:
        raise DemoFailed(f'production answered {found}, not the canary\'s split {by_colour}')
