"""`panda-deploy demo`: the operator end to end on one machine, with nothing but a Docker engine.

Why this exists: a newcomer should see a whole rollout happen -- and a second
and third one switch production traffic between the colours -- without an AWS
account, a GitHub repository or a cluster. The stack it runs on
(`controller.sandbox.stack`: the Kubernetes API emulator, the AWS sandbox, a
registry, the operator, a stand-in for the load balancer and one container
per task definition) is started in this process group and stopped on exit,
error or Ctrl-C; this module is only the script that drives it.

Rollouts: the first deploys branch main (the operator creates the service on
blue; nothing to switch); each further one commits to the sample repository
and pins the new commit with `spec.source.revision` -- a spec change, so a
new generation -- and CodeDeploy switches production blue -> green -> blue.
Progress is printed from the resource's status and Events as they happen
(`controller.sandbox.stack.progress`).
"""
from __future__ import annotations

import argparse
import contextlib
import re
import time
import urllib.request
from typing import Any

import docker
import kubernetes

from controller.models import GROUP, PLURAL, VERSION
from controller.sandbox.stack.engine import run_with_engine
from controller.sandbox.stack.manifests import NAME, NAMESPACE, demo_manifests
from controller.sandbox.stack.operator import log_tail
from controller.sandbox.stack.progress import ProgressPrinter, health_summary
from controller.sandbox.stack.sandbox import Sandbox, start_sandbox

ROLLOUTS = 3  # blue (new service), then blue -> green, then green -> blue
ROLLOUT_TIMEOUT = 120.0


class DemoFailed(Exception):
    """The demo cannot go on; the message says why."""


def apply_manifests(sandbox: Sandbox) -> None:
    """The first commit, then the sample Secrets and the PandaDeploy, through the Kubernetes API."""
    repository, printer = sandbox.repository, sandbox.printer
    sha, subject = repository.commit(1)
    printer.note(f'[sandbox] Sample app repository {repository.url}: {sha[:7]} "{subject}"')
    secrets, resource = demo_manifests(repo_url=repository.url, base_image=sandbox.base_image, world=sandbox.world)
    printer.checks_total = int(resource['spec']['healthCheck']['checks'])
    core = kubernetes.client.CoreV1Api(sandbox.api)
    for secret in secrets:
        core.create_namespaced_secret(NAMESPACE, secret)
    printer.note(f'Applied Secrets {", ".join(s["metadata"]["name"] for s in secrets)} (sandbox values) and '
                 f'PandaDeploy {NAMESPACE}/{NAME} (examples/, filled in for the sandbox)')
    printer.note(f'\n== Rollout 1/{ROLLOUTS}: branch main at {sha[:7]} "{subject}" (generation 1) ==')
    sandbox.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, resource)


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
                             f'{log_tail(sandbox.operator_log)}')
    sandbox.printer.settle()
    if status is None:
        raise DemoFailed(f'rollout for generation {generation} did not finish within {ROLLOUT_TIMEOUT:.0f}s; '
                         f'operator log:\n{log_tail(sandbox.operator_log)}')
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
        lines.append(f'  health check  {health_summary(status["healthCheck"])}')
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
    apply_manifests(sandbox)
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


def main(argv: list[str] | None = None) -> int:
    """Run the demo; 0 when the resource is Ready after the last rollout, 1 on failure, 2 without Docker."""
    parser = argparse.ArgumentParser(prog='panda-deploy demo', description=__doc__.split('\n')[0])
    parser.parse_args(argv)
    return run_with_engine('panda-deploy demo', run_demo, failures=(DemoFailed,))
