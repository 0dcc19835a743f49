"""`panda-deploy demo`: the operator end to end on one machine, with nothing but a Docker engine.

Why this exists: a newcomer should see whole rollouts happen the way AWS now
recommends -- ECS's own blue/green, a canary whose split users really meet,
and a broken commit caught and rolled back -- without an AWS account, a
GitHub repository or a cluster. The stack it runs on
(`controller.sandbox.stack`: the Kubernetes API emulator, the AWS sandbox, a
registry, the operator, a stand-in for the load balancer and one container
per task definition) is started in this process group and stopped on exit,
error or Ctrl-C; this module is only the script that drives it.

Rollouts (`PLAN`, in `demo_plan`): the first deploys branch main (the
operator creates the service with ECS native blue/green, on blue); each
further one commits to the sample repository and pins the new commit with
`spec.source.revision` -- a spec change, so a new generation. The second
moves production to green; the third switches the strategy to `Canary` and,
while its 10 % step holds, sends 100 requests to production and counts who
answered; the fourth commits an app without `/health`: its checks fail at
the test listener, the operator answers ECS's PAUSE hook with ROLLBACK, and
production keeps answering from the third. Simulated AWS minutes are
shortened (`MINUTE_SECONDS`), and the output says so. Progress is printed
from the resource's status and Events as they happen
(`controller.sandbox.stack.progress`). Exit 0 only when every rollout ended
as `PLAN` expects.
"""
from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

import docker
import kubernetes

from controller.models import GROUP, PLURAL, VERSION
from controller.sandbox.demo_plan import (
    MINUTE_SECONDS,
    PLAN,
    TIMINGS,
    DemoFailed,
    Production,
    Rollout,
    await_rolled_back,
    check_canary_split,
    check_outcome,
    check_unchanged,
    read_production,
    shortened_time,
)
from controller.sandbox.stack.engine import run_with_engine
from controller.sandbox.stack.manifests import NAME, NAMESPACE
from controller.sandbox.stack.native_manifests import native_demo_manifests
from controller.sandbox.stack.operator import log_tail
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.sandbox import Sandbox, start_sandbox
from controller.sandbox.summary import summary
from controller.sandbox.world import ecs_rollout

ROLLOUTS = len(PLAN)
ROLLOUT_TIMEOUT = 120.0


def apply_manifests(sandbox: Sandbox) -> None:
    """The ECS wiring, the first commit, then the sample Secrets and the PandaDeploy, through the Kubernetes API."""
    repository, printer, world = sandbox.repository, sandbox.printer, sandbox.world
    rollout = ecs_rollout(sandbox.clients, world, PLAN[0].strategy)
    printer.note(f'[sandbox] ECS native wiring: production and test listener rules forwarding to '
                 f'{NAME}-blue/{NAME}-green (weights 100/0), role {world.service}-ecs-infrastructure for ECS')
    sha, subject = repository.commit(1)
    printer.note(f'[sandbox] Sample app repository {repository.url}: {sha[:7]} "{subject}"')
    secrets, resource = native_demo_manifests(repo_url=repository.url, base_image=sandbox.base_image, world=world,
                                              rollout=rollout)
    printer.checks_total = int(resource['spec']['healthCheck']['checks'])
    core = kubernetes.client.CoreV1Api(sandbox.api)
    for secret in secrets:
        core.create_namespaced_secret(NAMESPACE, secret)
    printer.note(f'Applied Secrets {", ".join(s["metadata"]["name"] for s in secrets)} (sandbox values) and '
                 f'PandaDeploy {NAMESPACE}/{NAME} (examples/, filled in for the sandbox; spec.rollout.strategy '
                 f'{rollout["strategy"]})')
    printer.note(f'\n== Rollout 1/{ROLLOUTS}: branch main at {sha[:7]} "{subject}" (generation 1): '
                 f'{PLAN[0].shows} ==')
    sandbox.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, resource)


def bump(sandbox: Sandbox, rollout: Rollout) -> None:
    """A new commit, pinned with spec.source.revision (and the rollout's strategy): a new generation and run."""
    if rollout.broken:  # the app no longer serves /health: every check gets a 404
        (sandbox.repository.work / 'www' / 'health').unlink()
    sha, subject = sandbox.repository.commit(rollout.version, change='broken: no /health' if rollout.broken else '')
    patch: dict[str, Any] = {'spec': {'source': {'branch': None, 'revision': sha}, 'rollout': rollout.rollout}}
    found = sandbox.custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME, patch)
    generation = found['metadata']['generation']
    sandbox.printer.note(f'\n== Rollout {rollout.version}/{ROLLOUTS}: commit {sha[:7]} "{subject}" pinned with '
                         f'spec.source.revision, strategy {rollout.strategy} (generation {generation}): '
                         f'{rollout.shows} ==')


def await_rollout(sandbox: Sandbox, generation: int) -> dict[str, Any]:
    """The status that ends the run for `generation` Succeeded, once its last lines are printed; DemoFailed
    otherwise (a Failed run included)."""
    status = await_outcome(sandbox, generation)
    if status.get('phase') != 'Succeeded':
        raise DemoFailed(f'rollout for generation {generation} failed: {status.get("message")}')
    return status


def await_outcome(sandbox: Sandbox, generation: int) -> dict[str, Any]:
    """The status that ends the run for `generation` (Succeeded or Failed), once its last lines are printed;
    DemoFailed when there is none in time."""
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    status = None
    while status is None and time.monotonic() < deadline:
        status = sandbox.printer.wait_for_outcome(generation, timeout=1.0)
        if status is None and sandbox.operator.poll() is not None:
            raise DemoFailed(f'the operator exited with code {sandbox.operator.returncode}; its log:\n'
                             f'{log_tail(sandbox.operator_log)}')
    sandbox.printer.settle()
    if status is None:
        raise DemoFailed(f'rollout for generation {generation} did not finish within {ROLLOUT_TIMEOUT:.0f}s; '
                         f'operator log:\n{log_tail(sandbox.operator_log)}')
    return status


def run_rollouts(sandbox: Sandbox) -> None:
    """Each rollout of `PLAN`, checked as it ends; DemoFailed at the first that does not end as expected."""
    production: Production | None = None
    for rollout in PLAN:
        if rollout.version > 1:
            bump(sandbox, rollout)
        if rollout.canary_percent:
            check_canary_split(sandbox, rollout, timeout=ROLLOUT_TIMEOUT)
        status = await_outcome(sandbox, rollout.version)
        check_outcome(sandbox, rollout, status)
        if rollout.broken:
            await_rolled_back(sandbox, status)
        now = read_production(sandbox)
        if rollout.broken:
            check_unchanged(sandbox, before=production, now=now)
        production = now


def run_demo(stack: contextlib.ExitStack, client: docker.DockerClient) -> int:
    printer = ProgressPrinter()
    stack.callback(printer.close)
    printer.note('panda-deploy demo: the operator against local stand-ins for Kubernetes, AWS and GitHub')
    printer.note(shortened_time())
    sandbox = start_sandbox(stack, client, printer, timings=TIMINGS)
    apply_manifests(sandbox)
    run_rollouts(sandbox)
    printer.close()
    found = sandbox.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
    print(summary(found), flush=True)
    print(f'\npanda-deploy demo: all {ROLLOUTS} rollouts ended as expected (simulated AWS minutes lasted '
          f'{MINUTE_SECONDS:g} s)', flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when every rollout ended as expected, 1 otherwise, 2 without Docker."""
    parser = argparse.ArgumentParser(prog='panda-deploy demo', description=__doc__.split('\n')[0])
    parser.parse_args(argv)
    return run_with_engine('panda-deploy demo', run_demo, failures=(DemoFailed,))
