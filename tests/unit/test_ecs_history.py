"""Each run's ECS service deployment id in its history entry: what tells a later run's own deployment apart from
an earlier run's of the same task definition (controller.pipeline.rollouts.earlier_deployments), bounded in size
whatever ECS answered."""
from __future__ import annotations

import json

from controller.models import PandaDeployStatus, RunResult
from controller.models.status import DEPLOYMENT_ID_LIMIT
from controller.pipeline import Recorder
from controller.pipeline.rollouts import earlier_deployments
from tests.fakes import MemorySink

ARN = 'arn:aws:ecs:ap-northeast-2:123456789012:service-deployment/cluster/svc/'


async def ended(arn: str | None, *, status: PandaDeployStatus | None = None) -> PandaDeployStatus:
    recorder = Recorder(sink=MemorySink(), status=status or PandaDeployStatus(), generation=1)
    recorder.begin()
    recorder.status.service_deployment_arn = arn
    await recorder.finish(RunResult.failed, reason='DeploymentRolledBack', message='rolled back', history_limit=10)
    return recorder.status


async def test_each_run_keeps_its_deployment_id_and_later_runs_leave_those_alone() -> None:
    status = await ended(ARN + 'k8Q3ZlOeYvQjYt0vXRAv2m')
    status = await ended(None, status=status)  # a run that deployed nothing (an unchanged image)
    status = await ended(ARN + 'TqB-4kXy4YkEvQ7P7V7x1a', status=status)

    assert [entry.service_deployment_id for entry in status.history] == [
        'TqB-4kXy4YkEvQ7P7V7x1a', None, 'k8Q3ZlOeYvQjYt0vXRAv2m']
    assert earlier_deployments(status) == {'TqB-4kXy4YkEvQ7P7V7x1a', 'k8Q3ZlOeYvQjYt0vXRAv2m'}
    assert 'serviceDeploymentId' in status.dump()['history'][0]


async def test_a_huge_deployment_arn_from_the_server_is_cut_in_history() -> None:
    # The ARN is ECS's answer: a hostile or broken endpoint may send anything.
    status = await ended(ARN + 'x' * 200_000)

    kept = status.history[0].service_deployment_id
    assert kept is not None and len(kept) <= DEPLOYMENT_ID_LIMIT
    assert len(json.dumps(status.dump()['history'])) < 2_000
    reloaded = PandaDeployStatus.model_validate(status.dump())  # as read back from the API server
    assert reloaded.history[0].service_deployment_id == kept
