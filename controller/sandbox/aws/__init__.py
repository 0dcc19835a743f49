"""The AWS stand-in: moto's server, with CodeDeploy ECS blue/green and ECS service deployments simulated.

Why this exists: stages 3 to 6 of a rollout talk to ECS, ELBv2, ECR, STS and
CodeDeploy, and neither the tests nor ``panda-deploy demo`` can reach AWS.
moto serves ECS, ELBv2, ECR, STS, IAM, Logs and CodeDeploy's *resources*
(applications, deployment groups) faithfully enough, but its CodeDeploy
*deployments* are inert records: they stay ``Created`` for ever, have no
lifecycle events or targets, and cannot be continued or stopped, so the very
part of the operator that decides whether production traffic moves -- wait for
``Ready``, health-check green, ``ContinueDeployment`` or ``StopDeployment`` with
rollback -- could not be exercised at all.

So the sandbox serves moto's whole application with CodeDeploy's deployment
operations answered by a simulator that acts on moto's ECS and ELBv2 backends.
Split the way moto splits a service, one job per module:

- ``server``: :class:`AwsSandbox` (serves from a background thread) and ``main``
  (``python -m controller.sandbox.aws``, ``panda-deploy sandbox aws``);
- ``wsgi``: :class:`SandboxApp`, which sends CodeDeploy deployment operations to
  the simulator and everything else to moto unchanged;
- ``responses``: the wire layer of those operations (AWS JSON 1.1 in and out);
- ``simulator``: :class:`DeploymentSimulator`, one method per operation, and the clock;
- ``lifecycle``: one deployment's lifecycle events, the state machine, as a
  generator paused on what it waits for (``effects``); ``driver`` resumes it;
- ``task_sets`` and ``backends``: the ECS task sets and ELBv2 listeners it acts
  on in moto; ``deployment_groups``: what AWS checks of an ECS deployment group;
- ``appspec``, ``deployment_configs``, ``events``, ``models``, ``exceptions``,
  ``timings``: the revision, the predefined configurations, the lifecycle
  events and hook runs, the state, the errors, and how fast time moves.

ECS's own deployments (service ``deploymentConfiguration.strategy``
``BLUE_GREEN``, ``CANARY``, ``LINEAR``, since July 2025) are likewise beyond
moto, which drops the strategy. The same split, ``ecs_`` modules:

- ``ecs_responses``: CreateService/UpdateService/DeleteService completed on
  the way through moto; DescribeServiceDeployments, ListServiceDeployments,
  StopServiceDeployment, ContinueServiceDeployment, DescribeServiceRevisions;
- ``ecs_simulator``: :class:`EcsDeploymentSimulator`, one method per operation,
  the driver and the clock; ``ecs_lifecycle``: the state machine;
  ``ecs_hooks``: Lambda and PAUSE hooks; ``ecs_traffic``: the listener rules;
  ``ecs_services``: what moto's service shows; ``ecs_config``: the request's
  strategy and load balancers, checked; ``ecs_models``, ``ecs_documents``: the
  state and its JSON.

Out of scope: EC2/on-premises and Lambda deployments (passed through to moto,
inert as before), custom deployment configurations, S3 and GitHub revisions,
alarms, triggers, and CodeDeploy pagination (everything comes in one page); for
ECS, ROLLING deployments (moto's, inert), alarms, Service Connect, VPC Lattice,
the Lambda hooks ECS runs again during a rollback, and stopped tasks.  moto's state
is process-global: two sandboxes in one process share their AWS resources.
``python -m controller.sandbox.aws --port PORT`` serves it standalone.
"""
from controller.sandbox.aws.appspec import AppSpec, parse_appspec
from controller.sandbox.aws.deployment_configs import ECS_DEPLOYMENT_CONFIGS, TrafficRouting
from controller.sandbox.aws.ecs_hooks import LambdaInvocation
from controller.sandbox.aws.ecs_lifecycle import EcsCallbacks
from controller.sandbox.aws.ecs_simulator import EcsDeploymentSimulator
from controller.sandbox.aws.events import HOOK_EVENTS, LIFECYCLE_EVENTS, HookExecution, LifecycleEvent
from controller.sandbox.aws.exceptions import CodeDeployError, EcsError
from controller.sandbox.aws.models import Deployment, TaskSetRecord
from controller.sandbox.aws.responses import CodeDeployResponses
from controller.sandbox.aws.server import AwsSandbox, main
from controller.sandbox.aws.simulator import DeploymentSimulator
from controller.sandbox.aws.timings import Timings
from controller.sandbox.aws.wsgi import SIMULATED_OPERATIONS, SandboxApp

__all__ = [
    'AwsSandbox', 'DeploymentSimulator', 'SandboxApp', 'CodeDeployResponses', 'CodeDeployError',
    'Timings', 'AppSpec', 'parse_appspec', 'Deployment', 'LifecycleEvent', 'HookExecution', 'TaskSetRecord',
    'TrafficRouting', 'ECS_DEPLOYMENT_CONFIGS', 'LIFECYCLE_EVENTS', 'HOOK_EVENTS', 'SIMULATED_OPERATIONS', 'main',
    'EcsDeploymentSimulator', 'EcsCallbacks', 'EcsError', 'LambdaInvocation',
]
