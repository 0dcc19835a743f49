"""The sample's PandaDeploy with an ECS native rollout (`spec.rollout`) instead of CodeDeploy (`spec.blueGreen`).

Why apart from `manifests.demo_manifests`: that one keeps the sample as
`examples/pandadeploy.yaml` has it (CodeDeploy), which the benchmark and
other drivers of the stack compare against. This one takes the same Secrets
and resource and swaps `spec.blueGreen` for the `spec.rollout` that
`panda-deploy sandbox world` would print for the stack's world (the listener
rules and the role ECS uses to move them, created in the sandbox's AWS).

The stage timeout is longer than the CodeDeploy sample's: the operator's
PAUSE hook times out after the stage timeout plus a minute *in simulated
minutes*, which a sandbox that runs minutes fast makes seconds; four minutes
keep the hook open well past the checks on a busy machine.
"""
from __future__ import annotations

from typing import Any

from controller.sandbox.stack.manifests import demo_manifests
from controller.sandbox.stack.world import AwsWorld

STAGE_MINUTES = 4  # spec.timeouts.stageSeconds; totalSeconds twice that


def native_demo_manifests(*, repo_url: str, base_image: str, world: AwsWorld,
                          rollout: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(Secrets, PandaDeploy) as `demo_manifests` makes them, rolled out by ECS itself with `rollout`."""
    secrets, resource = demo_manifests(repo_url=repo_url, base_image=base_image, world=world)
    del resource['spec']['blueGreen']
    resource['spec']['rollout'] = rollout
    resource['spec']['timeouts'] = {'stageSeconds': f'{STAGE_MINUTES}m', 'totalSeconds': f'{2 * STAGE_MINUTES}m'}
    return secrets, resource
