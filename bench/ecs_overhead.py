"""ECS's own rollouts in the overhead benchmark (issue 13), and the Kubernetes API writes of every timed rollout.

bench/deploy_overhead.py times one blue/green rollout through the operator
against a plain script doing the same external work. This module adds the
same measure for the ECS native strategies (spec.rollout BlueGreen, Canary),
in the same sandbox: one more AWS world per strategy, made as
`panda-deploy sandbox world --strategy S` makes it (`controller.sandbox.world.make_world`: cluster, ALB,
listeners, production and test listener rules forwarding to both target
groups, the role ECS uses), behind the same load-balancer stand-in (it routes
any load balancer's DNS name by its rules). The canary holds 10 % of
production with no bake (`bakeMinutes: 0`): a bake of a simulated minute is a
real minute in the demo's timings, and would time the clock, not the operator.

  operator: a commit is pushed and the resource's `spec.source.revision` patched to it; timed from just
            before the PATCH to the status write that makes Ready True (the Observer), as for CodeDeploy.
  script:   clone, docker build and push as for CodeDeploy (`Plain.build_push`), RegisterTaskDefinition,
            UpdateService to it (the service already carries the strategy and the PAUSE hook, as after any
            first rollout), DescribeServiceDeployments every POLL s until the PAUSE hook awaits action,
            the same health checks on the test listener, ContinueServiceDeployment CONTINUE, then
            DescribeServiceDeployments until SUCCESSFUL; while production moves, one health check per
            poll at max(POLL, the check interval): the operator's own end condition and its own checks
            (controller/pipeline/rollouts.py, EcsGate.follow).

API writes per rollout: every mutating request the API emulator recorded for the resource (its PATCHes,
status PATCHes, and the Events named after it) from the benchmark's PATCH until the run's last Event,
less the benchmark's own PATCH; counted for each timed rollout, CodeDeploy's included.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

from controller.models import GROUP, PLURAL, VERSION, PandaDeploySpec
from controller.pipeline.service import task_definition
from controller.sandbox.stack.manifests import NAMESPACE
from controller.sandbox.stack.sandbox import Sandbox
from controller.sandbox.stack.world import REGION, AwsWorld
from controller.sandbox.world import make_world

STRATEGIES = ('BlueGreen', 'Canary')
SETTLE_SECONDS = 2.0  # after the last Ready: the run's last Event follows its last status write
ENDED = frozenset({'SUCCESSFUL', 'STOPPED', 'ROLLBACK_SUCCESSFUL', 'ROLLBACK_FAILED'})
PAST_THE_GATE = frozenset({'PRODUCTION_TRAFFIC_SHIFT', 'POST_PRODUCTION_TRAFFIC_SHIFT', 'BAKE_TIME', 'CLEAN_UP'})


def ecs_resource(sandbox: Sandbox, spec_body: dict[str, Any], strategy: str) -> tuple[dict[str, Any], AwsWorld]:
    """A PandaDeploy like the CodeDeploy one (`spec_body`) but for its own service with an ECS `strategy`, and
    the world made for it in the sandbox."""
    service = f'bench-{strategy.lower()}'
    made, world = make_world(sandbox.clients, service=service, cluster=f'{service}-cluster', region=REGION,
                             strategy=strategy, namespace=NAMESPACE)
    spec = copy.deepcopy(spec_body)
    spec.pop('blueGreen', None)
    spec['rollout'] = made['spec']['rollout']
    if strategy == 'Canary':
        spec['rollout']['canary'] = {'percent': 10, 'bakeMinutes': 0}
    spec['ecs'].update(cluster=world.cluster, service=world.service)
    spec['image'] = {'repository': service}
    return {'apiVersion': f'{GROUP}/{VERSION}', 'kind': 'PandaDeploy',
            'metadata': {'name': service, 'namespace': NAMESPACE}, 'spec': spec}, world


def rollout_writes(writes: list[Any], name: str) -> dict[str, int]:
    """The API writes for resource `name` in `writes` (the benchmark's own first PATCH left out), by kind."""
    counts = {'status': 0, 'patch': 0, 'event': 0}
    own = True
    for w in writes:
        if w.plural == PLURAL and w.name == name and w.method == 'PATCH':
            if w.subresource == 'status':
                counts['status'] += 1
            elif own:
                own = False  # the benchmark's spec PATCH
            else:
                counts['patch'] += 1
        elif w.plural == PLURAL and w.name == name and w.method == 'POST':
            continue  # the benchmark's create
        elif w.plural == 'events' and w.method == 'POST' and (w.name or '').startswith(f'{name}.'):
            counts['event'] += 1
    counts['total'] = sum(counts.values())
    return counts


def count_writes(rounds: list[dict[str, Any]], writes: list[Any], name: str) -> None:
    """Each round's API writes ('writes'): from its 'writes_from' to the next round's (the script's rounds in
    between write nothing to Kubernetes), the last one's until SETTLE_SECONDS from now."""
    time.sleep(SETTLE_SECONDS)
    ends = [r['writes_from'] for r in rounds[1:]] + [len(writes)]
    for found, end in zip(rounds, ends, strict=True):
        found['writes'] = rollout_writes(writes[found['writes_from']:end], name)


def writes_summary(rounds: list[dict[str, Any]]) -> str:
    """'16 (status 8 / patch 1 / event 7)', or fewest–most ('16–18') where the rounds differ."""
    def one(key: str) -> str:
        values = sorted(r['writes'][key] for r in rounds)
        return f'{values[0]}' if values[0] == values[-1] else f'{values[0]}–{values[-1]}'
    return f'{one("total")} (status {one("status")} / patch {one("patch")} / event {one("event")})'


def fewest_writes(rounds: list[dict[str, Any]]) -> int:
    """The fewest API writes of the rounds: the writes every rollout makes. A round makes one more for each
    stage call that runs over a second (the engine then saves that the stage is running, SHOW_RUNNING_AFTER),
    which Push and Service do only on a loaded machine."""
    return min(int(r['writes']['total']) for r in rounds)


def writes_verdict(one: dict[str, Any], codedeploy: dict[str, Any]) -> str:
    """Issue 13's target for an ECS strategy: no more API writes a rollout than CodeDeploy's (fewest to fewest,
    so that a slow call in one round does not decide)."""
    ours, theirs = fewest_writes(one['operator']), fewest_writes(codedeploy['operator'])
    return f'fewest {ours} ≤ CodeDeploy\'s fewest {theirs}: {"met" if ours <= theirs else "MISSED"}'


# ---------------------------------------------------------------------------------------------
# The plain script's ECS rollout.


@dataclasses.dataclass
class EcsScript:
    """What a script does for one ECS native rollout (`plain` is deploy_overhead's Plain: clone, build, push,
    clients, checks)."""
    plain: Any
    world: AwsWorld

    def rollout(self, timer: Any, *, branch: str, spec: PandaDeploySpec) -> Any:
        """One rollout of the head of `branch`, timed into `timer` (deploy_overhead's Timer)."""
        plain = self.plain
        image = plain.build_push(timer, branch=branch, spec=spec, name=spec.ecs.service)
        ecs = plain.clients().client('ecs', endpoint_url=plain.aws_url)
        with timer.part('register'):
            arn = ecs.register_task_definition(**task_definition(spec, image_uri=image))['taskDefinition'][
                'taskDefinitionArn']
        with timer.part('deploy'):
            service = ecs.update_service(cluster=spec.ecs.cluster, service=spec.ecs.service,
                                         taskDefinition=arn)['service']
            deployment = str(service['currentServiceDeployment'])
            hook = self._until_paused(ecs, deployment)
        check = spec.health_check
        url = f'http://{self.world.dns_name}:8080{check.path}'
        plain.checks(timer, url=url, count=check.checks, interval=check.interval_seconds,
                     timeout=check.timeout_seconds, proxy=True)
        with timer.part('shift'):
            ecs.continue_service_deployment(serviceDeploymentArn=deployment, hookId=hook, action='CONTINUE')
            self._until_successful(ecs, deployment, spec, url, timer)
        timer.parts['total'] = time.perf_counter() - timer.start
        return timer

    def _describe(self, ecs: Any, deployment: str) -> dict[str, Any]:
        found = ecs.describe_service_deployments(serviceDeploymentArns=[deployment])['serviceDeployments'][0]
        if found.get('status') in ENDED - {'SUCCESSFUL'}:
            raise SystemExit(f'plain script: service deployment {deployment} {found["status"]}: '
                             f'{found.get("statusReason")}')
        return dict(found)

    def _until_paused(self, ecs: Any, deployment: str) -> str:
        """Poll until the PAUSE hook awaits action; its hookId."""
        while True:
            found = self._describe(ecs, deployment)
            for hook in found.get('lifecycleHookDetails') or []:
                if hook.get('targetType') == 'PAUSE' and hook.get('status') == 'AWAITING_ACTION':
                    return str(hook['hookId'])
            time.sleep(self.plain.poll)

    def _until_successful(self, ecs: Any, deployment: str, spec: PandaDeploySpec, url: str, timer: Any) -> None:
        """Poll until SUCCESSFUL, one health check per poll while production moves, at a fixed rate (a wait
        counts from the start of the previous poll), as the operator does."""
        check = spec.health_check
        period = max(self.plain.poll, float(check.interval_seconds))
        while True:
            started = time.perf_counter()
            found = self._describe(ecs, deployment)
            if found.get('status') == 'SUCCESSFUL':
                return
            if found.get('lifecycleStage') in PAST_THE_GATE:  # timed within 'shift', as the operator's are
                self.plain.checks(timer, url=url, count=1, interval=0, timeout=check.timeout_seconds, proxy=True,
                                  part='checks while moving')
            time.sleep(max(0.0, period - (time.perf_counter() - started)))
