"""Stage 3, Service: register the task definition, create the ECS service when missing.

With an ECS strategy (spec.rollout BlueGreen, Canary, Linear) the service
deploys itself: it is created with the strategy, the load balancer's
advancedConfiguration and the operator's PAUSE hook, or updated to the new
task definition, and either starts the run's service deployment
(`_ecs_rollout`). The rest of this docstring is about CodeDeploy.

An existing service is not updated here: a CodeDeploy-controlled service
refuses UpdateService with a task definition, so the new revision rolls out
through stage 4.

The task definition names the image by digest (`repository@sha256:…`), not
by tag: what runs is exactly what Push recorded, even if the tag is moved
later (a repository created with mutable tags, or deleted and re-created).
The same image again is the same definition, so no new revision.

An undo (controller/reruns.py) deploys the task definition its run recorded,
as it was, without registering one from today's spec.
"""
from __future__ import annotations

from typing import Any

from controller.models import ImageStatus, PandaDeploySpec, StageName, TriggerKind
from controller.pipeline.rollouts import earlier_deployments
from controller.pipeline.stage import Done, StageContext


def pinned_image(image: ImageStatus) -> str:
    """`registry/repository@sha256:…`: the pushed image by digest (a port in the registry host is no tag)."""
    assert image.uri and image.digest, 'Push records the image URI and digest before Service runs'
    repository, _, tag = image.uri.rpartition(':')
    return f'{repository if repository and "/" not in tag else image.uri}@{image.digest}'


def task_definition(spec: PandaDeploySpec, *, image_uri: str) -> dict[str, Any]:
    """The RegisterTaskDefinition request for the spec and the pushed image."""
    ecs = spec.ecs
    container: dict[str, Any] = {
        'name': ecs.container_name,
        'image': image_uri,
        'essential': True,
        'portMappings': [{'containerPort': ecs.container_port, 'protocol': 'tcp'}],
        'logConfiguration': {
            'logDriver': 'awslogs',
            'options': {
                'awslogs-group': f'/ecs/{ecs.service}',
                'awslogs-region': spec.aws.region,
                'awslogs-stream-prefix': ecs.container_name,
            },
        },
    }
    definition: dict[str, Any] = {
        'family': ecs.service,
        'networkMode': 'awsvpc',
        'requiresCompatibilities': [ecs.launch_type],
        'cpu': ecs.cpu,
        'memory': ecs.memory,
        'containerDefinitions': [container],
    }
    if ecs.execution_role_arn:
        definition['executionRoleArn'] = ecs.execution_role_arn
    if ecs.task_role_arn:
        definition['taskRoleArn'] = ecs.task_role_arn
    return definition


class Service:
    name = StageName.service

    def run(self, ctx: StageContext) -> Done:
        spec, ecs = ctx.spec, ctx.adapters.ecs
        image = ctx.status.image
        assert image is not None, 'Push records the image before Service runs'
        trigger = ctx.status.trigger
        if trigger is not None and trigger.kind == TriggerKind.undo and ctx.status.task_definition_arn:
            arn, registered = ctx.status.task_definition_arn, False  # the undone-to run's, as it was
            ctx.progress(f'Undo to {trigger.of}: its task definition {arn}')
        else:
            arn, registered = ecs.register_task_definition(task_definition(spec, image_uri=pinned_image(image)))
        if spec.ecs_native:
            return _ecs_rollout(ctx, arn, registered=registered)
        if registered:  # a new revision: saved before the service may be created with it
            ctx.record(task_definition_arn=arn)
        ctx.progress(('Task definition registered: ' if registered else 'Task definition unchanged: ') + arn)
        state = ecs.ensure_service(spec=spec, task_definition_arn=arn)
        verb = 'created' if state.created else 'found'
        ctx.progress(f'ECS service {state.service} {verb} in cluster {state.cluster}')
        revision = arn.rsplit('/', 1)[-1]
        if not registered and not state.created:
            return Done(f'Service {state.service} found; task definition {revision} unchanged', skipped=True,
                        record={'task_definition_arn': arn})
        return Done(f'Service {state.service} {verb}; task definition {revision}', record={'task_definition_arn': arn})


def _ecs_rollout(ctx: StageContext, arn: str, *, registered: bool) -> Done:
    """ECS's own deployment: the service created with the strategy and the operator's PAUSE hook, or updated to
    the task definition; either starts a service deployment, whose ARN is saved with the stage's end (nothing
    happens between: the run's one write for both ids). A restarted stage finds the deployment it started."""
    revision = arn.rsplit('/', 1)[-1]
    ctx.progress(('Task definition registered: ' if registered else 'Task definition unchanged: ') + arn)
    rollout = ctx.adapters.ecs_deployments.deploy(spec=ctx.spec, task_definition_arn=arn,
                                                  since=ctx.status.started_at, earlier=earlier_deployments(ctx.status))
    verb = 'created' if rollout.created else 'updated' if rollout.started else 'found'
    ctx.progress(f'ECS service {rollout.service} {verb} in cluster {rollout.cluster} '
                 f'({ctx.spec.strategy.value}, PAUSE hook at POST_TEST_TRAFFIC_SHIFT)')
    record: dict[str, Any] = {'task_definition_arn': arn}
    if rollout.deployment_arn:
        record['service_deployment_arn'] = rollout.deployment_arn
        ctx.progress(f'Service deployment {rollout.deployment_arn.rsplit("/", 1)[-1]} '
                     f'{"started" if rollout.started else "found"}')
    if not registered and rollout.deployment_arn is None:
        return Done(f'Service {rollout.service} found; task definition {revision} unchanged', skipped=True,
                    record=record)
    return Done(f'Service {rollout.service} {verb}; task definition {revision}', record=record)
