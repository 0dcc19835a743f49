"""Progress in status while it happens (issue 14 item 7), within the write budget (controller/pipeline/progress.py).

The budget: a successful rollout makes at most 25 Kubernetes API writes. Without progress it makes 17 (8
status patches, 7 Events, 2 of Kopf's); progress alone spends at most PROGRESS_WRITES (6) status patches,
so a rollout stays within 23 whatever the number of checks (up to 100) or traffic steps (a 3% linear: 34).
Each test counts the writes a run made through its sink, as the operator makes them.
"""
from __future__ import annotations

import pytest

from controller.models import PandaDeploySpec, RunResult
from controller.pipeline.progress import PROGRESS_WRITES, ProgressBudget, expected_points, traffic_step
from tests.unit.test_ecs_rollout import ecs_spec
from tests.unit.test_pipeline import SPEC, engine_for, make_run, new, pool, world  # noqa: F401 (fixtures)

KOPF_WRITES = 2  # Kopf's finalizer and its last-handled-configuration annotation on a new resource
BUDGET = 25


def writes(sink) -> int:
    return len(sink.saves) + len(sink.events) + KOPF_WRITES


def shown(sink, word: str) -> list[str]:
    """The progress messages the status showed, in the order they were written."""
    return [s['message'] for s in sink.saves if word in s.get('message', '')]


def with_checks(spec: dict, checks: int) -> dict:
    return {**spec, 'healthCheck': {**spec['healthCheck'], 'checks': checks}}


async def test_each_of_five_checks_shows_in_status_and_the_rollout_writes_20_times(world, pool):
    run, sink = make_run(with_checks(SPEC, 5))
    assert await engine_for(world, pool).drive(new(run)) == RunResult.succeeded

    assert shown(sink, 'Check') == [f'HealthCheck in progress - Check {k}/5' for k in range(1, 6)]
    reconciling = [next(c for c in s['conditions'] if c['type'] == 'Reconciling')['message']
                   for s in sink.saves if 'Check' in s.get('message', '')]
    assert reconciling[2] == 'HealthCheck in progress - Check 3/5', 'kubectl wait/describe users see it too'
    assert writes(sink) == 20 <= BUDGET  # 17 + checks 2, 3 and 4 (1 and 5 ride writes made anyway)


async def test_a_hundred_checks_stay_within_the_budget_and_show_every_seventeenth(world, pool):
    run, sink = make_run(with_checks(SPEC, 100))
    assert await engine_for(world, pool).drive(new(run)) == RunResult.succeeded

    assert len(sink.saves) <= 8 + PROGRESS_WRITES and writes(sink) == 22 <= BUDGET, writes(sink)
    checks = [int(m.split()[-1].split('/')[0]) for m in shown(sink, 'Check')]
    assert checks == [1, 17, 34, 51, 68, 85, 100], checks  # spread over the run, not spent on its start


async def test_a_canary_shows_its_traffic_steps_within_the_budget(world, pool):
    world.set_script(steps=[10, 100], shift_after=1.0)
    run, sink = make_run(ecs_spec(strategy='Canary', canary={'percent': 10, 'bakeMinutes': 1}))
    assert await engine_for(world, pool).drive(new(run)) == RunResult.succeeded

    assert shown(sink, 'step') == ['Canary step 1/2: 10% of production on the new revision',
                                   'Canary step 2/2: 100% of production on the new revision']
    assert writes(sink) <= BUDGET, writes(sink)


async def test_a_linear_rollout_with_many_steps_and_checks_stays_within_the_budget(world, pool):
    steps = [3 * k for k in range(1, 34)] + [100]
    world.set_script(steps=steps, shift_after=3.0)
    run, sink = make_run(with_checks(ecs_spec(strategy='Linear', linear={'stepPercent': 3, 'stepBakeMinutes': 0}),
                                     100))
    assert await engine_for(world, pool).drive(new(run)) == RunResult.succeeded

    assert len(sink.saves) <= 8 + PROGRESS_WRITES and writes(sink) <= 23, writes(sink)
    assert shown(sink, 'Check') and shown(sink, 'Linear step'), [s.get('message') for s in sink.saves]


@pytest.mark.parametrize(('spec', 'percent', 'line'), [
    (ecs_spec(strategy='Canary'), 10, 'Canary step 1/2: 10% of production on the new revision'),
    (ecs_spec(strategy='Canary'), 100, 'Canary step 2/2: 100% of production on the new revision'),
    (ecs_spec(strategy='Linear'), 40, 'Linear step 2/5: 40% of production on the new revision'),
    (ecs_spec(strategy='Linear', linear={'stepPercent': 30}), 100, 'Linear step 4/4: 100% of production on the '
                                                                     'new revision'),
    (ecs_spec(), 100, 'BlueGreen: 100% of production on the new revision'),
])
def test_the_traffic_step_is_named_from_the_share(spec, percent, line):
    assert traffic_step(PandaDeploySpec.model_validate(spec), percent) == line


def test_the_budget_spreads_its_writes_over_the_points_it_expects():
    assert expected_points(PandaDeploySpec.model_validate(ecs_spec(strategy='Linear'))) == 3 + 5
    budget = ProgressBudget(expected=20)
    taken = [k for k in range(1, 21) if budget.take()]
    assert taken == [4, 8, 12, 16, 20] and budget.spent <= PROGRESS_WRITES
    budget = ProgressBudget(expected=3)
    assert [budget.take() for _ in range(10)] == [True] * PROGRESS_WRITES + [False] * 4  # more than expected
