"""Undo and retry (controller/reruns.py): which values start a run, and the runs they start, with fake adapters.

The operator's side (annotations on the watch stream, values handled once, Events for refusals) is in
tests/e2e/test_kubectl_pd.py, through `kubectl pd`.
"""
from __future__ import annotations

from controller import reruns
from controller.errors import Reason
from controller.models import PandaDeployStatus, RunResult, StageName, StageResult, TriggerKind
from tests.unit.test_pipeline import SPEC, engine_for, make_run, new, pool, world  # noqa: F401 (fixtures)


async def rollout(world, pool, status: PandaDeployStatus | None = None, *, generation: int = 1,
                  request: reruns.Request | None = None, spec: dict = SPEC) -> tuple[RunResult, PandaDeployStatus]:
    """One run to its end, from `status` (a copy), as the reconciler starts it."""
    start = PandaDeployStatus.model_validate(status.dump()) if status is not None else None
    run, _ = make_run(spec, status=start, generation=generation)
    new(run)
    reruns.begin(run.status, request, generation=generation)
    return await engine_for(world, pool).drive(run), run.status


def judged(kind: TriggerKind, value: str, status: PandaDeployStatus, in_flight: str | None = None):
    return reruns.judge(kind, value, status, in_flight=in_flight)


async def test_an_undo_deploys_the_earlier_runs_image_and_task_definition_without_a_build(world, pool):
    _, first = await rollout(world, pool)
    world.set_script(commit='two')
    _, second = await rollout(world, pool, first, generation=2)
    assert second.task_definition_arn != first.task_definition_arn
    builds, registered = len(world.calls('docker.build')), len(world.calls('ecs.register_task_definition'))
    resolves = len(world.calls('git.resolve'))
    target = second.history[1]
    assert target.image_digest == first.image.digest and target.task_definition_arn == first.task_definition_arn

    request = judged(TriggerKind.undo, target.deployment_id, second)
    assert isinstance(request, reruns.Request)
    result, undone = await rollout(world, pool, second, generation=2, request=request)

    assert result == RunResult.succeeded
    assert len(world.calls('docker.build')) == builds and len(world.calls('docker.push')) == 2
    assert len(world.calls('git.resolve')) == resolves, 'no branch lookup'
    assert len(world.calls('ecs.register_task_definition')) == registered, 'the recorded one, as it was'
    deployment = world.state()['deployments'][undone.code_deploy_deployment_id]
    assert deployment['taskdef'] == first.task_definition_arn and deployment['run_id'] == undone.deployment_id
    assert [r.result for r in undone.stages[:2]] == [StageResult.skipped] * 2
    assert undone.stage_record(StageName.verify).result == StageResult.succeeded, 'through the same health gate'
    assert undone.revision == first.revision and undone.image.digest == first.image.digest
    entry = undone.history[0]
    assert (entry.trigger.kind, entry.trigger.of) == (TriggerKind.undo, target.deployment_id)
    assert undone.last_handled_undo == target.deployment_id
    assert [h.trigger.kind for h in undone.history[1:]] == [TriggerKind.build] * 2


async def test_a_retry_runs_the_failed_run_again_at_its_revision(world, pool):
    world.set_script(health=[503])
    result, failed = await rollout(world, pool)
    assert result == RunResult.failed
    world.set_script(health=[200], commit='moved-on')  # the branch moved meanwhile: a retry does not follow it
    request = judged(TriggerKind.retry, failed.deployment_id, failed)
    assert isinstance(request, reruns.Request)

    result, retried = await rollout(world, pool, failed, request=request)

    assert result == RunResult.succeeded and retried.revision == failed.revision
    assert len(world.calls('git.resolve')) == 1, 'the failed run resolved the branch; the retry did not'
    assert retried.deployment_id != failed.deployment_id
    assert (retried.history[0].trigger.kind, retried.history[0].trigger.of) == (TriggerKind.retry,
                                                                              failed.deployment_id)
    assert retried.last_handled_retry == failed.deployment_id
    # Now the newest run succeeded: retrying the failed one again is refused.
    refused = judged(TriggerKind.retry, failed.deployment_id, retried)
    assert isinstance(refused, reruns.Refusal) and refused.reason == Reason.RETRY_NOT_APPLICABLE


async def test_values_that_start_no_run_are_refused_with_their_reason(world, pool):
    world.set_script(health=[503])
    _, failed = await rollout(world, pool)
    failed_id = failed.deployment_id
    world.set_script(health=[200])
    _, status = await rollout(world, pool, failed, generation=2)
    ok_id = status.deployment_id
    cases = [
        (TriggerKind.undo, 'true', Reason.REQUEST_MALFORMED, "names no run: it takes a deploymentId"),
        (TriggerKind.undo, 'dep_0ther0run0', Reason.UNDO_TARGET_NOT_FOUND, f'no such run in status.history '
                                                                            f'(newest: {ok_id}, {failed_id})'),
        (TriggerKind.undo, failed_id, Reason.UNDO_TARGET_UNUSABLE, 'that run ended Failed'),
        (TriggerKind.retry, ok_id, Reason.RETRY_NOT_APPLICABLE, 'that run ended Succeeded'),
        (TriggerKind.retry, failed_id, Reason.RETRY_NOT_APPLICABLE, f'a later run ({ok_id}) came after it'),
        (TriggerKind.retry, 'x' * 5000, Reason.REQUEST_MALFORMED, "'" + 'x' * 64 + "'"),
    ]
    for kind, value, reason, words in cases:
        verdict = judged(kind, value, status)
        assert isinstance(verdict, reruns.Refusal), (kind, value)
        assert verdict.reason == reason and words in verdict.message, verdict.message
        assert len(verdict.message) < 400
    in_flight = judged(TriggerKind.retry, failed_id, failed, in_flight='dep_inflight00')
    assert isinstance(in_flight, reruns.Refusal) and 'dep_inflight00 is in flight' in in_flight.message
    # An entry from before undo recorded what it deployed cannot be undone to.
    old = PandaDeployStatus.model_validate(status.dump())
    old.history[0].task_definition_arn = None
    assert judged(TriggerKind.undo, ok_id, old).reason == Reason.UNDO_TARGET_UNUSABLE


def test_a_value_is_handled_once_and_status_keeps_it_bounded():
    status = PandaDeployStatus(last_handled_undo='dep_aaaaaaaaaa')
    annotations = {'deploy.panda.dev/undo': 'dep_aaaaaaaaaa', 'deploy.panda.dev/retry': 'dep_bbbbbbbbbb'}
    assert reruns.new_values(annotations, status, {}) == [(TriggerKind.retry, 'dep_bbbbbbbbbb')]
    assert reruns.new_values(annotations, status, {TriggerKind.retry: 'dep_bbbbbbbbbb'}) == []
    long = 'dep_' + 'a' * 300_000
    token = reruns.handled_token(long)
    assert token.startswith('sha256:') and len(token) == 71
    status.last_handled_retry = token  # the model takes it (the CRD's maxLength is 71)
    assert reruns.new_values({'deploy.panda.dev/retry': long}, status, {}) == []
    assert reruns.handled_token('dep_\x1b[31m') != 'dep_\x1b[31m', 'no control characters in status'
