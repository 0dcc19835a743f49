"""A run's open deployment as stages 4 and 5 drive it, whichever service deploys: CodeDeploy, or ECS itself.

Verify asks the same four things of either (has traffic already moved, stop
it with rollback, let it go on, follow it to its end), so its check loop is
one. What differs lives here:

- `CodeDeployGate`: the CodeDeploy ECS deployment in
  `status.codeDeployDeploymentId` (CreateDeployment in stage 4, ready-wait,
  ContinueDeployment, StopDeployment with rollback).
- `EcsGate`: the ECS service deployment in `status.serviceDeploymentArn`
  (started by stage 3), held by the operator's PAUSE hook at
  POST_TEST_TRAFFIC_SHIFT: ContinueServiceDeployment CONTINUE to go on,
  ROLLBACK at the hook or StopServiceDeployment ROLLBACK after it. Once it goes
  on, the checks continue through each production step and the bake time (a
  failure rolls back), and the run succeeds only when the deployment ended
  SUCCESSFUL; a rollback, a stop or a replacement ends it Failed with ECS's own
  words (`outcome_failure`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from controller.adapters import Adapters, DeploymentState, ServiceDeploymentState
from controller.errors import HealthCheckFailed, Reason, StageFailed
from controller.models import PandaDeploySpec, PandaDeployStatus
from controller.pipeline.progress import traffic_step
from controller.pipeline.run import Run
from controller.pipeline.stage import Done, StageContext, Wait


class Checked(Protocol):
    """What `EcsGate.follow` needs of Verify's check progress."""
    url: str
    latencies: list[float]
    errors: list[str]


class Gate(Protocol):
    """A run's open deployment, as Verify drives it."""
    id: str

    def moved(self, ctx: StageContext) -> Done | bool:
        """Resumed past the gate: Done when nothing is left to do, True to follow it, False to check first."""

    def stop(self, ctx: StageContext) -> None:
        """Stop it with rollback: production stays (or goes back) where it was."""

    def promote(self, ctx: StageContext) -> None:
        """Let it move production traffic."""

    def follow(self, ctx: StageContext, progress: Checked, *, poll: float) -> Done | Wait:
        """Poll it to its end after `promote`."""


def open_gate(ctx: StageContext) -> Gate | None:
    """The run's deployment whose gate Verify keeps, or None (a first CodeDeploy rollout, an unchanged image)."""
    if ctx.spec.ecs_native:
        arn = ctx.status.service_deployment_arn
        return EcsGate(arn) if arn else None
    deployment_id = ctx.status.code_deploy_deployment_id
    return CodeDeployGate(deployment_id) if deployment_id else None


@dataclasses.dataclass
class CodeDeployGate:
    id: str

    def moved(self, ctx: StageContext) -> Done | bool:
        if ctx.adapters.codedeploy.get_deployment(self.id).traffic_moved:
            return Done(f'Traffic switched (deployment {self.id})')
        return False

    def stop(self, ctx: StageContext) -> None:
        ctx.adapters.codedeploy.stop_deployment(self.id, rollback=True)

    def promote(self, ctx: StageContext) -> None:
        ctx.adapters.codedeploy.continue_deployment(self.id)

    def follow(self, ctx: StageContext, progress: Checked, *, poll: float) -> Done | Wait:
        """Until production traffic moved; a failed or stopped deployment fails the stage."""
        state = ctx.adapters.codedeploy.get_deployment(self.id)
        report_lifecycle(ctx, state)
        if state.failed:
            raise StageFailed(f'CodeDeploy deployment {self.id} {state.status} while shifting traffic'
                              + (f': {state.error}' if state.error else ''), reason=Reason.BLUE_GREEN_FAILED)
        if not state.traffic_moved:
            return Wait(poll)
        colour = ctx.adapters.loadbalancer.traffic(spec=ctx.spec).active_color
        ctx.progress(f'Traffic switched to {colour}')
        return Done(f'Traffic switched to {colour} (deployment {self.id})')


@dataclasses.dataclass
class EcsGate:
    id: str

    def moved(self, ctx: StageContext) -> Done | bool:
        state = ecs_state(ctx, self.id)
        return state.ended or state.past_gate

    def stop(self, ctx: StageContext) -> None:
        deployments = ctx.adapters.ecs_deployments
        state = deployments.get(self.id)
        if state.paused_hook:  # at the operator's hook: answer it, as AWS intends
            deployments.continue_deployment(self.id, hook_id=state.paused_hook, rollback=True)
        elif state.open:
            deployments.stop(self.id)

    def promote(self, ctx: StageContext) -> None:
        state = ecs_state(ctx, self.id)
        if state.paused_hook:
            ctx.adapters.ecs_deployments.continue_deployment(self.id, hook_id=state.paused_hook)

    def follow(self, ctx: StageContext, progress: Checked, *, poll: float) -> Done | Wait:
        """Until the deployment ends; while production moves and bakes, one check per poll (a failure rolls
        back). Succeeded only when it ended SUCCESSFUL."""
        state = ecs_state(ctx, self.id)
        if state.ended:
            if not state.succeeded:
                raise outcome_failure(ctx, state)
            colour = ctx.adapters.loadbalancer.traffic(spec=ctx.spec).active_color
            ctx.progress(f'Traffic switched to {colour}')
            more = f'; {len(progress.latencies)} checks in all' if progress.url else ''
            return Done(f'Traffic switched to {colour}: {ecs_name(ctx.spec)} service deployment '
                        f'{short(self.id)} SUCCESSFUL{more}')
        if state.past_gate and progress.url:
            self._check_while_moving(ctx, progress, state)
        return Wait(max(poll, float(ctx.spec.health_check.interval_seconds)))

    def _check_while_moving(self, ctx: StageContext, progress: Checked, state: ServiceDeploymentState) -> None:
        check = ctx.spec.health_check
        probe = ctx.adapters.http.get(progress.url, timeout=check.timeout_seconds)
        progress.latencies.append(probe.seconds)
        if probe.status == check.expected_status and not probe.denied:
            return
        error = probe.error or f'HTTP {probe.status}'
        progress.errors.append(error)
        self.stop(ctx)
        share = f'{state.production_percent:g}% of production on the new revision' \
            if state.production_percent is not None else state.lifecycle_stage or 'production moving'
        ctx.progress(f'Check failed at {share}; service deployment stopped with rollback')
        raise HealthCheckFailed(url=progress.url, failed=len(progress.errors), total=len(progress.latencies),
                                detail=f'{error}, at {share}; rolled back')


# -- what a deployment did, published once: CodeDeploy's lifecycle events, ECS's stages -----

@dataclasses.dataclass
class ReportedLifecycle:
    """The lifecycle events (name, status) already published for the run; shared by stages 4 and 5."""
    seen: set[tuple[str, str]] = dataclasses.field(default_factory=set)


_REPORTED = 'lifecycle'  # the key of ReportedLifecycle in the run's scratch


def report_lifecycle(ctx: StageContext, state: DeploymentState) -> None:
    """Publish each lifecycle event of the deployment target once, as it happens (stages 4 and 5)."""
    reported = ctx.run.scratch.setdefault(_REPORTED, ReportedLifecycle())
    assert isinstance(reported, ReportedLifecycle)
    for event in state.events:
        if (event.name, event.status) not in reported.seen and event.started:
            reported.seen.add((event.name, event.status))
            ctx.progress(f'Lifecycle {event.name}: {event.status}')




@dataclasses.dataclass
class ReportedStages:
    """The (lifecycle stage, status, share) of the ECS deployment already published; shared by stages 4-5."""
    seen: set[tuple[str, str, str]] = dataclasses.field(default_factory=set)


def ecs_state(ctx: StageContext, arn: str) -> ServiceDeploymentState:
    """The deployment now; each new lifecycle stage (and production share) published once."""
    state = ctx.adapters.ecs_deployments.get(arn)
    reported = ctx.run.scratch.setdefault('ecs_stages', ReportedStages())
    assert isinstance(reported, ReportedStages)
    share = f'{state.production_percent:g}' if state.production_percent is not None else ''
    key = (state.lifecycle_stage or '', state.status, share)
    if key not in reported.seen:
        reported.seen.add(key)
        where = f' {state.lifecycle_stage}' if state.lifecycle_stage else ''
        on = f', {share}% of production on the new revision' if share and state.status == 'IN_PROGRESS' else ''
        ctx.progress(f'Service deployment {state.status}{where}{on}')
        if on and state.production_percent:  # a traffic step, shown in status while it happens (progress.py)
            ctx.show(traffic_step(ctx.spec, state.production_percent))
    return state


def outcome_failure(ctx: StageContext, state: ServiceDeploymentState) -> StageFailed:
    """Why a service deployment that ended without SUCCESSFUL fails the run, in ECS's own words."""
    words = ctx.adapters.ecs_deployments.explain(spec=ctx.spec, state=state)
    if state.replaced_by:
        return StageFailed(f'Another deployment ({short(state.replaced_by)}) replaced this run\'s: {words}',
                           reason=Reason.DEPLOYMENT_REPLACED)
    if state.status.startswith('ROLLBACK'):
        return StageFailed(f'Rolled back, production stays on the previous revision: {words}',
                           reason=Reason.DEPLOYMENT_ROLLED_BACK)
    return StageFailed(f'Stopped before it finished: {words}', reason=Reason.DEPLOYMENT_STOPPED)


def earlier_deployments(status: PandaDeployStatus) -> frozenset[str]:
    """The ids of the service deployments earlier runs recorded: never this run's, even of the same task
    definition (a rolled-back image retried at once)."""
    return frozenset(entry.service_deployment_id for entry in status.history if entry.service_deployment_id)


def ecs_name(spec: PandaDeploySpec) -> str:
    return spec.strategy.value


def short(arn: str) -> str:
    return arn.rsplit('/', 1)[-1]


# -- a run that ends with its deployment open stops it (engine.py) ------------------------------------

def stop_codedeploy_if_open(run: Run, adapters: Callable[[], Adapters], *, find: bool) -> str | None:
    """Stop the run's CodeDeploy deployment with rollback when it is open (in the worker pool); its id, or None.
    `find`: look it up by the run's id when status does not have it (it was being created as the run ended)."""
    codedeploy = adapters().codedeploy
    deployment_id = run.status.code_deploy_deployment_id
    if not deployment_id and find and run.status.deployment_id:
        deployment_id = codedeploy.find_deployment(spec=run.spec, run_id=run.status.deployment_id)
    if not deployment_id:
        return None
    state = codedeploy.get_deployment(deployment_id)
    if state.succeeded or state.failed:  # ended already (stopped by Verify's rollback, or done)
        return None
    codedeploy.stop_deployment(deployment_id, rollback=True)
    return deployment_id


def stop_service_deployment_if_open(run: Run, adapters: Callable[[], Adapters], *, find: bool) -> str | None:
    """Stop the run's ECS service deployment with rollback when it is open (in the worker pool); its ARN, or None.
    `find`: look it up by the run's task definition when status does not have it (stages 3 and 4)."""
    deployments = adapters().ecs_deployments
    status = run.status
    arn = status.service_deployment_arn
    if not arn and find and status.task_definition_arn:
        arn = deployments.find_deployment(spec=run.spec, task_definition_arn=status.task_definition_arn,
                                          since=status.started_at, earlier=earlier_deployments(status))
    if not arn:
        return None
    state = deployments.get(arn)
    if not state.open:  # ended already (rolled back at the gate, or done), or its rollback is under way
        return None
    if state.paused_hook:
        deployments.continue_deployment(arn, hook_id=state.paused_hook, rollback=True)
    else:
        deployments.stop(arn)
    return arn
