"""The reconciler's run handles: one per run in flight, told apart by the resource's uid.

The reconciler with the engine and fake adapters of test_pipeline.py and an in-memory stand-in for
`controller.kube.Kube` (objects by namespace and name, status merge patches, Events). A resource deleted
while the operator did not see it (its finalizer removed by hand, say) and created again under the same
name is a new resource: its run starts cleanly, from its own status, and a run of the old one still in
flight is stopped without writing to the new one.
"""
from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any

from controller import conditions
from controller.kube import ObjectGone
from controller.models import PandaDeployStatus
from controller.reconciler import Reconciler
from controller.sandbox.kube.patches import merge_patch
from controller.tenancy import ALLOW_OPERATOR_IDENTITY
from tests.unit.test_pipeline import SPEC, engine_for, pool, world  # noqa: F401 (fixtures)

LOGGER = logging.getLogger('test.reconciler')
KEY = ('default', 'app')


class MemoryKube:
    """What the reconciler asks of `controller.kube.Kube`, in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []  # (uid, type, reason)
        self.patches: list[tuple[str, dict[str, Any]]] = []  # (uid of the object written, patch)

    def put(self, uid: str, *, generation: int = 1, spec: Mapping[str, Any] = SPEC) -> dict[str, Any]:
        body = {'metadata': {'namespace': KEY[0], 'name': KEY[1], 'uid': uid, 'generation': generation},
                'spec': copy.deepcopy(dict(spec))}
        self.objects[KEY] = body
        return copy.deepcopy(body)

    def get(self, *, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((namespace, name)))

    def patch_status(self, *, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        obj = self.objects.get((namespace, name))
        if obj is None:
            raise ObjectGone('not found')
        obj['status'] = merge_patch(obj.get('status') or {}, dict(patch))
        self.patches.append((obj['metadata']['uid'], dict(patch)))
        return copy.deepcopy(obj)

    def post_event(self, *, ref: Mapping[str, str], type: str, reason: str, message: str) -> None:
        self.events.append((ref['uid'], type, reason))

    def read_secret(self, *, namespace: str, name: str) -> dict[str, str] | None:
        return None

    def namespace_annotations(self, name: str) -> dict[str, str]:
        return {ALLOW_OPERATOR_IDENTITY: 'true'}  # SPEC has no credentialsSecretRef

    def status(self) -> PandaDeployStatus:
        return PandaDeployStatus.model_validate(self.objects[KEY].get('status') or {})


async def until(predicate: Any, *, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError('timed out')


def ready(kube: MemoryKube) -> bool:
    found = conditions.get(kube.status(), 'Ready')
    return found is not None and found.status == 'True'


async def test_a_finished_run_leaves_no_handle(world, pool):
    kube = MemoryKube()
    reconciler = Reconciler(kube=kube, engine=engine_for(world, pool), workers=2)  # type: ignore[arg-type]
    await reconciler.reconcile(body=kube.put('uid-a'), logger=LOGGER)
    await until(lambda: ready(kube))
    await until(lambda: not reconciler._handles)
    assert not reconciler.running(KEY)


async def test_a_resource_made_again_after_its_run_ended_runs_from_its_own_status(world, pool):
    kube = MemoryKube()
    reconciler = Reconciler(kube=kube, engine=engine_for(world, pool), workers=2)  # type: ignore[arg-type]
    await reconciler.reconcile(body=kube.put('uid-a'), logger=LOGGER)
    await until(lambda: ready(kube))
    old = kube.status()

    # Deleted unseen and created again: same name, generation 1 again, no status.
    await reconciler.reconcile(body=kube.put('uid-b'), logger=LOGGER)
    await until(lambda: ready(kube))

    new = kube.status()
    assert new.deployment_id != old.deployment_id
    assert [entry.deployment_id for entry in new.history] == [new.deployment_id], 'nothing of the old resource'


async def test_a_resource_made_again_while_its_old_run_is_in_flight_starts_cleanly(world, pool):
    world.set_script(delay={'docker.build': 30})
    kube = MemoryKube()
    reconciler = Reconciler(kube=kube, engine=engine_for(world, pool), workers=2)  # type: ignore[arg-type]
    await reconciler.reconcile(body=kube.put('uid-a'), logger=LOGGER)
    await until(lambda: kube.status().stage_name is not None)
    old = kube.status().deployment_id
    world.set_script()

    await reconciler.reconcile(body=kube.put('uid-b'), logger=LOGGER)
    await until(lambda: ready(kube))

    assert world.calls('docker.build:cancelled'), 'the old run was stopped'
    status = kube.status()
    assert status.deployment_id != old and [entry.deployment_id for entry in status.history] == [status.deployment_id]
    written_to_b = [patch for uid, patch in kube.patches if uid == 'uid-b']
    assert old not in repr(written_to_b), 'the old run wrote nothing to the new resource'
    assert [reason for uid, _, reason in kube.events if uid == 'uid-b' and reason in ('Cancelled', 'Superseded')] == []
    await until(lambda: not reconciler._handles)
