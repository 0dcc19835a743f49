"""Nothing left open, against the sandbox AWS: a run that ends with its CodeDeploy deployment open stops it.

The engine with the real adapters, as in test_rollout.py (whose fixtures and helpers this module uses):
the sandbox's deployment group waits for us before shifting traffic, for as long as the run's total
timeout in simulated minutes (a real minute each here), and refuses a second deployment meanwhile
(`DeploymentLimitExceededException`). A run whose Verify stage times out with green ready and waiting
must stop its deployment with rollback, so that the next run of the same resource is not refused.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3.session

from controller import conditions
from controller.models import PandaDeploySpec, RunResult, StageName
from tests.integration.awsworld import production_target_group, session, world  # noqa: F401 (fixtures)
from tests.integration.test_rollout import (  # noqa: F401 (fixtures)
    Health,
    aws_sandbox,
    aws_url,
    commit,
    deployment_status,
    deployments,
    health,
    rollout,
    rollout_spec,
)


def with_changes(spec: PandaDeploySpec, **changes: Any) -> PandaDeploySpec:
    document = spec.dump()
    for key, value in changes.items():
        document[key] = {**document.get(key, {}), **value}
    return PandaDeploySpec.model_validate(document)


async def test_a_stage_timeout_in_verify_stops_the_deployment_and_the_next_run_succeeds(
        session: boto3.session.Session, health: Callable[..., Health]) -> None:
    found = world(session, group=False)
    spec = rollout_spec(found, health().url)
    first = await rollout(spec, commit('a'))  # creates the service: nothing to switch yet
    assert first.result == RunResult.succeeded, first.sink.lines

    # Manual promotion that never comes: Verify waits, green ready, until the 4 s stage limit.
    waiting = with_changes(spec, blueGreen={'promotion': 'manual'}, timeouts={'stageSeconds': 4})
    timed_out = await rollout(waiting, commit('b'), after=first)

    assert timed_out.result == RunResult.failed, timed_out.sink.lines
    record = timed_out.record(StageName.verify)
    assert record.reason == 'StageTimeout' and record.message.startswith('Stage 5 (Verify) timed out'), record
    deployment_id = timed_out.status.code_deploy_deployment_id
    assert deployment_id
    info = deployment_status(session, deployment_id)
    assert info['status'] == 'Stopped', info
    assert info.get('rollbackInfo', {}).get('rollbackDeploymentId'), info
    assert production_target_group(session, found) == found.blue_arn  # traffic never moved
    assert any(f'CodeDeploy deployment {deployment_id} stopped with rollback' in line
               for line in timed_out.sink.lines), timed_out.sink.lines

    # The next run of the same resource: its deployment is accepted at once, and it goes through.
    # (A 20 s stage limit: refused, it would retry DeploymentLimitExceeded until then.)
    third = await rollout(with_changes(spec, timeouts={'stageSeconds': 20}), commit('c'), after=timed_out)

    assert third.result == RunResult.succeeded, third.sink.lines
    assert not any('already has an active deployment' in line for line in third.sink.lines), third.sink.lines
    assert [d['deploymentId'] for d in deployments(session, spec)] == [
        deployment_id, third.status.code_deploy_deployment_id]
    assert production_target_group(session, found) == found.green_arn
    ready = conditions.get(third.status, 'Ready')
    assert ready is not None and ready.status == 'True'
