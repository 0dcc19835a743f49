"""Production's answers counted per target while a canary step holds: the split a user's requests meet.

Why: the canary's percent is only a number in the spec, the service
deployment and the listener rule until requests show it. This reads the
production listener rule's weights from the sandbox's ELBv2 (what ECS set),
waits until they show the canary step, then sends requests to the production
URL through the load-balancer stand-in, as users would, and counts who
answered (`X-Panda-Demo-Target` and `X-Panda-Demo-Task-Definition`). The
stand-in splits a weighted forward exactly (any `sum(weights)` requests in a
row meet each target group `weight` times), so 100 requests to a 90/10 rule
are answered 90 and 10 times -- provided the step still holds when the last
one is sent, which `weights` read again afterwards tells.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

WORKERS = 4  # requests in flight at once: the step holds for a few seconds only
PAGE_LIMIT = 64 * 1024  # bytes of an answer read (the sample's page is a few hundred)


@dataclasses.dataclass(frozen=True)
class Answerer:
    """Who answered a request: the colour of its target group and the task definition (`family:revision`)."""
    colour: str
    task_definition: str


def weights(clients: Callable[[str], Any], rule_arn: str) -> dict[str, int]:
    """The rule's forward weights by target group ARN (empty when it forwards to none)."""
    rules = clients('elbv2').describe_rules(RuleArns=[rule_arn])['Rules']
    for action in rules[0]['Actions'] if rules else []:
        if action.get('Type') == 'forward':
            groups = (action.get('ForwardConfig') or {}).get('TargetGroups') or []
            return {str(g['TargetGroupArn']): int(g.get('Weight', 1)) for g in groups}
    return {}


def await_weights(clients: Callable[[str], Any], rule_arn: str, wanted: Callable[[dict[str, int]], bool], *,
                  timeout: float, stop: Callable[[], bool] = lambda: False) -> dict[str, int] | None:
    """The rule's weights once `wanted` holds for them; None after `timeout` seconds or once `stop()` says so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop():
        found = weights(clients, rule_arn)
        if wanted(found):
            return found
        time.sleep(0.05)
    return None


def count_answers(*, proxy_url: str, url: str, requests: int) -> collections.Counter[Answerer]:
    """GET `url` `requests` times through the stand-in; how many answers each (colour, task definition) gave.
    An answer other than 200 counts under colour `HTTP <status>`."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({'http': proxy_url}))

    def one(_: int) -> Answerer:
        try:
            with opener.open(url, timeout=10) as response:
                response.read(PAGE_LIMIT)
                return Answerer(str(response.headers.get('X-Panda-Demo-Target', '?')),
                                str(response.headers.get('X-Panda-Demo-Task-Definition', '?')))
        except urllib.error.HTTPError as exc:
            return Answerer(f'HTTP {exc.code}', '-')

    with concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix='canary-request') as pool:
        return collections.Counter(pool.map(one, range(requests)))
