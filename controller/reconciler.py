"""One run per resource at a time: start, resume, queue, supersede, cancel.

Kopf calls `reconcile` on create, on resume (operator start) and on spec changes; the reconciler decides from
the generation and the recorded status whether a run is due, and drives it in a background task so Kopf's
handler returns at once. Runs take one of `workers` slots in arrival order; the ones that wait are shown as
Pending/Queued. A new generation supersedes the run in flight; deletion cancels it. Preflight problems
(invalid spec, missing Secret) stall the resource with a reason and are retried with backoff, so it recovers
by itself once fixed.

The promote and abort annotations each name the run they are for (its `deploymentId`). Annotations bump no
generation, so Kopf hands every watch event to `annotated`: it keeps the promote value for the waiting run to
read and aborts the run in flight that the abort value names. A value naming another run does nothing; when it
is new, one Warning Event says so. The undo and retry annotations start a run at the same generation, each
value once (controller/reruns.py). controller.follow asks for a run at the branch head (`wanted`).

Nothing stuck: a handle exists only while a run is in flight, and knows the resource's uid (a resource deleted
unseen and made again under its name starts afresh). A run whose status cannot be written (`StatusNotSaved`)
says so (log, Event) and is picked up again with backoff from the status last written, as after a restart.
`spec.suspend` starts no run and lets the one in flight end.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import pydantic

from controller import conditions, credentials, reruns, tenancy
from controller.adapters.notices import Notifier, Silent
from controller.egress import GitHosts, SourceNotAllowed
from controller.errors import Aborted, NotificationNotAllowed, Reason, SecretForbidden, Stall, StatusNotSaved
from controller.kube import Forbidden, Kube, KubeError, ObjectGone, merge_diff
from controller.models import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    Logger,
    PandaDeploySpec,
    PandaDeployStatus,
    Phase,
    RunResult,
    TriggerKind,
    describe_validation_error,
)
from controller.pipeline import Engine, Recorder, Run
from controller.pipeline.recorder import DEPLOYMENT_ID
from controller.slots import Slots

Key = tuple[str, str]
STALL_BACKOFF = (2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
NOT_SAVED_BACKOFF = (2.0, 5.0, 10.0, 30.0, 60.0)  # before a run whose status was not saved is picked up again
RECENT_STATUSES = 256  # the last saved status of recently finished runs, kept by uid


class KubeSink:
    """Reports a run to the Kubernetes API: status patches with only the changes, Events."""

    def __init__(self, *, kube: Kube, ref: Mapping[str, str], saved: Mapping[str, Any],
                 logger: Logger) -> None:
        self.kube, self.ref, self.saved, self.logger = kube, dict(ref), dict(saved), logger
        self.detached = False  # the resource it reported to is gone (made again under its name): write nothing

    async def save(self, status: PandaDeployStatus) -> None:
        """Write the changes; `StatusNotSaved` when the API server refuses them after the client's retries."""
        new = status.dump()
        patch = merge_diff(self.saved, new)
        if not patch or self.detached:
            return
        try:
            await asyncio.to_thread(self.kube.patch_status, namespace=self.ref['namespace'], name=self.ref['name'],
                                    patch=patch)
        except ObjectGone:
            raise
        except KubeError as exc:
            raise StatusNotSaved(str(exc)) from exc
        self.saved = new

    async def event(self, *, type: str, reason: str, message: str) -> None:
        if self.detached:
            return
        try:
            await asyncio.to_thread(self.kube.post_event, ref=self.ref, type=type, reason=reason, message=message)
        except KubeError as exc:  # an Event is worth a log line, not a failed run
            self.logger.warning('Could not post event %s: %s', reason, exc)

    def progress(self, line: str) -> None:
        self.logger.info(line)


@dataclasses.dataclass
class Handle:
    """A run in flight for one resource (its uid: a resource made again under the same name is another)."""
    uid: str
    generation: int
    task: asyncio.Task[None]
    run: Run | None = None
    sink: KubeSink | None = None


class Reconciler:
    def __init__(self, *, kube: Kube, engine: Engine, workers: int, git_hosts: GitHosts | None = None,
                 notifier: Notifier | None = None) -> None:
        self.kube = kube
        self.notifier = notifier if notifier is not None else Silent()  # spec.notify: commit status, webhook
        self.engine = engine
        self.git_hosts = git_hosts if git_hosts is not None else GitHosts.default()  # PANDA_DEPLOY_GIT_HOSTS
        self.slots = Slots(workers)
        self._handles: dict[Key, Handle] = {}  # runs in flight only
        self._recent: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()  # uid -> saved
        self._annotations: dict[Key, dict[str, str]] = {}  # promote and abort, as last seen on the watch stream
        self._handled: dict[Key, dict[TriggerKind, str]] = {}  # undo and retry values handled, not yet saved

    @staticmethod
    def key_of(body: Mapping[str, Any]) -> Key:
        return body['metadata']['namespace'], body['metadata']['name']

    @staticmethod
    def uid_of(body: Mapping[str, Any]) -> str:
        return str(body['metadata'].get('uid') or '')

    def running(self, key: Key) -> bool:
        handle = self._handles.get(key)
        return handle is not None and not handle.task.done()

    async def reconcile(self, *, body: Mapping[str, Any], logger: Logger, wanted: bool = False,
                        request: reruns.Request | None = None) -> None:
        """A run when one is due, or asked for: `wanted`, at the branch head (controller.follow) even if this
        generation ran; `request`, an undo or retry (controller/reruns.py)."""
        key, uid = self.key_of(body), self.uid_of(body)
        generation = int(body['metadata'].get('generation') or 1)
        # What this operator last wrote is newer than the body Kopf handed us (its watch may lag behind).
        status_raw: Mapping[str, Any] = self._recent.get(uid) or body.get('status') or {}
        handle = self._handles.get(key)
        if handle is not None and handle.uid != uid:
            logger.info('The resource with uid %s was deleted and made again; its run stops', handle.uid)
            await self._stop(handle, RunResult.cancelled, detach=True)
            handle = None
        if handle is not None and not handle.task.done():
            if handle.generation == generation and request is None:
                return  # already on it
            if (body.get('spec') or {}).get('suspend'):
                logger.info('spec.suspend: the run for generation %d goes on to its end; no new run starts',
                            handle.generation)
                return
            logger.info('%s supersedes the run for generation %d', f'Generation {generation}' if request is None
                        else f'{reruns.ANNOTATIONS[request.kind]}={request.value}', handle.generation)
            await self._stop(handle, RunResult.superseded)
            if handle.sink is not None:
                status_raw = handle.sink.saved
        status = PandaDeployStatus.model_validate(status_raw)
        wanted = wanted and not (body.get('spec') or {}).get('suspend')
        if request is None and not wanted and not self._due(status, generation, body):
            return
        task = asyncio.create_task(self._drive(key, body, generation, status, dict(status_raw), logger, request),
                                   name=f'panda-deploy run {key[0]}/{key[1]} gen {generation}')
        self._handles[key] = Handle(uid=uid, generation=generation, task=task)

    @staticmethod
    def _due(status: PandaDeployStatus, generation: int, body: Mapping[str, Any]) -> bool:
        if (body.get('spec') or {}).get('suspend'):
            return False
        if status.observed_generation != generation:
            return True
        stalled = conditions.get(status, conditions.STALLED)
        if stalled is not None and stalled.status == 'True':
            return stalled.reason != Reason.INVALID_SPEC  # an invalid spec waits for a new generation
        return status.phase in (None, Phase.pending, Phase.progressing)

    # -- the promote and abort annotations ------------------------------------------------

    def approval(self, key: Key) -> str | None:
        """The promote annotation's value now: the deploymentId it approves (read while a run waits for it)."""
        return self._annotations.get(key, {}).get(PROMOTE_ANNOTATION)

    async def annotated(self, *, body: Mapping[str, Any], deleted: bool, logger: Logger) -> None:
        """A watch event: keep the resource's promote and abort values; abort the run the abort value names."""
        key = self.key_of(body)
        if deleted:
            self._annotations.pop(key, None)
            self._handled.pop(key, None)
            return
        found = body['metadata'].get('annotations') or {}
        values = {name: str(found[name]) for name in (PROMOTE_ANNOTATION, ABORT_ANNOTATION) if found.get(name)}
        before = self._annotations.get(key)
        self._annotations[key] = values
        await self._reruns(body, found, logger)
        abort = values.get(ABORT_ANNOTATION)
        if abort is None:
            return
        handle = self._handles.get(key)
        run = handle.run if handle is not None and not handle.task.done() else None
        in_flight = run.status.deployment_id if run is not None else None
        if handle is not None and run is not None and abort == in_flight:
            await self._abort(handle, run, logger)
        elif before is not None and before.get(ABORT_ANNOTATION) != abort:  # new (not just seen at start-up)
            await self._abort_ignored(body, abort, in_flight, logger)

    async def _abort(self, handle: Handle, run: Run, logger: Logger) -> None:
        """Stop the run as a supersede does (an open CodeDeploy deployment stopped with rollback), ending it
        Failed with reason Aborted."""
        status = run.status
        where = 'while queued' if status.phase == Phase.pending else f'at stage {status.stage or "start"}'
        run.abort = Aborted(run_id=status.deployment_id or '', where=where)
        logger.info('%s', run.abort.message)
        await self._stop(handle, RunResult.failed)
        if status.phase == Phase.pending:  # it was queued: the engine never had it, so its end is recorded here
            await run.recorder.finish(RunResult.failed, reason=run.abort.reason, message=run.abort.message,
                                      history_limit=run.spec.history_limit)

    async def _abort_ignored(self, body: Mapping[str, Any], value: str, in_flight: str | None,
                             logger: Logger) -> None:
        if in_flight is None:
            message = f'{ABORT_ANNOTATION} names {value[:64]}, but no run is in flight; nothing aborted'
        elif DEPLOYMENT_ID.fullmatch(value):
            message = (f'{ABORT_ANNOTATION} names {value}, not the run in flight {in_flight}; '
                       f'annotate with {in_flight} to abort it')
        else:
            message = (f'{ABORT_ANNOTATION}={value[:64]} names no run (it takes a deploymentId); '
                       f'annotate with {in_flight} to abort the run in flight')
        logger.info('%s', message)
        namespace, name = self.key_of(body)
        ref = {'namespace': namespace, 'name': name, 'uid': body['metadata'].get('uid', '')}
        await KubeSink(kube=self.kube, ref=ref, saved={}, logger=logger).event(
            type='Warning', reason=Reason.ABORT_IGNORED, message=message)

    async def _reruns(self, body: Mapping[str, Any], found: Mapping[str, Any], logger: Logger) -> None:
        """Undo and retry values not handled yet: start the run each asks for, or say once why not (reruns.py)."""
        key = self.key_of(body)
        handle = self._handles.get(key)
        run = handle.run if handle is not None and self.running(key) else None
        saved = handle.sink.saved if handle is not None and handle.sink is not None else None
        status = PandaDeployStatus.model_validate(saved or self._recent.get(self.uid_of(body)) or body.get('status')
                                                  or {})
        seen = self._handled.setdefault(key, {})
        for kind, value in reruns.new_values(found, status, seen):
            seen[kind] = reruns.handled_token(value)
            in_flight = (run.status.deployment_id if run is not None else 'starting') if self.running(key) else None
            verdict = reruns.judge(kind, value, status, in_flight=in_flight)
            if isinstance(verdict, reruns.Request):
                await self.reconcile(body=body, logger=logger, request=verdict)
                continue
            logger.info('%s', verdict.message)
            field = reruns.HANDLED_FIELDS[kind]
            try:
                if run is not None:  # the run's recorder is the one writer of its status
                    await run.recorder.record({field: verdict.token})
                else:
                    patch = {reruns.HANDLED_KEYS[kind]: verdict.token}
                    await asyncio.to_thread(self.kube.patch_status, namespace=key[0], name=key[1], patch=patch)
                    self._recent.get(self.uid_of(body), {}).update(patch)
            except KubeError as exc:
                logger.warning('Could not record %s as handled: %s', reruns.ANNOTATIONS[kind], exc)
            ref = {'namespace': key[0], 'name': key[1], 'uid': self.uid_of(body)}
            await KubeSink(kube=self.kube, ref=ref, saved={}, logger=logger).event(
                type='Warning', reason=verdict.reason, message=verdict.message)

    async def forget(self, *, body: Mapping[str, Any], logger: Logger) -> None:
        """The resource is being deleted: cancel its run (AWS resources stay)."""
        key = self.key_of(body)
        handle = self._handles.pop(key, None)
        if handle is not None and not handle.task.done():
            logger.info('Deleted: cancelling the run for generation %d', handle.generation)
            await self._stop(handle, RunResult.cancelled)
        self._recent.pop(self.uid_of(body), None)

    async def pause(self, *, body: Mapping[str, Any], logger: Logger) -> None:
        """Kopf peering paused this replica: stop driving the run as at shutdown; the active peer resumes it."""
        handle = self._handles.pop(self.key_of(body), None)
        if handle is not None and not handle.task.done():
            logger.info('Paused for a peer: the active operator takes over the run for generation %d',
                        handle.generation)
            handle.task.cancel('operator paused')
            await asyncio.gather(handle.task, return_exceptions=True)
        self._recent.pop(self.uid_of(body), None)  # the active peer writes next: its status is the newer

    async def shutdown(self) -> None:
        """Operator exit: stop waiting on runs; their status says where to resume."""
        tasks = [h.task for h in self._handles.values() if not h.task.done()]
        for task in tasks:
            task.cancel('operator shutdown')
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop(self, handle: Handle, result: RunResult, *, detach: bool = False) -> None:
        """Cancel the run, recorded as `result` (`detach`: its resource is gone, so nothing is written; its
        CodeDeploy deployment is still stopped)."""
        if handle.run is not None:
            handle.run.cancel_result = result
        if detach and handle.sink is not None:
            handle.sink.detached = True
        handle.task.cancel()
        await asyncio.gather(handle.task, return_exceptions=True)

    async def _drive(self, key: Key, body: Mapping[str, Any], generation: int, status: PandaDeployStatus,
                     saved: dict[str, Any], logger: Logger, request: reruns.Request | None = None) -> None:
        """The run to its end. One whose status cannot be written is picked up again with backoff, from the
        status last written, while the resource is the same one at the same generation; then the handle goes."""
        await asyncio.sleep(0)  # let reconcile() register the handle
        handle = self._handles[key]
        try:
            for attempt in itertools.count():
                sink = KubeSink(kube=self.kube, ref={'namespace': key[0], 'name': key[1], 'uid': handle.uid},
                                saved=saved, logger=logger)
                handle.sink = sink
                try:
                    await self._run(key, handle, body, generation, status, sink, logger, request)
                    return
                except StatusNotSaved as exc:
                    body = await self._pick_up_again(key, body, sink, exc, attempt, logger)
                    request = None  # picked up from what status says
                saved = dict(body.get('status') or {})
                status = PandaDeployStatus.model_validate(saved)
                same = self.uid_of(body) == handle.uid and int(body['metadata'].get('generation') or 1) == generation
                if not same or not self._due(status, generation, body):  # gone, made again, or changed: Kopf's
                    return
        finally:
            self._finished(key, handle)

    async def _run(self, key: Key, handle: Handle, body: Mapping[str, Any], generation: int,
                   status: PandaDeployStatus, sink: KubeSink, logger: Logger, request: reruns.Request | None) -> None:
        recorder = Recorder(sink=sink, status=status, generation=generation)  # the run's one writer of status
        try:
            try:
                spec = PandaDeploySpec.model_validate(body.get('spec') or {})
                self.git_hosts.check_source(spec.source)  # a token only for an allowed host: before anything
                self.notifier.check(spec)
            except pydantic.ValidationError as exc:
                await recorder.stalled(Stall(describe_validation_error(exc), reason=Reason.INVALID_SPEC))
                return
            except (SourceNotAllowed, NotificationNotAllowed) as refused:  # until the spec or operator config changes
                await recorder.stalled(refused)
                return
            creds = await self._credentials(recorder, spec, key[0], key[1])
            run = Run(spec=spec, credentials=creds, recorder=recorder, logger=logger,
                      approval=lambda: self.approval(key))
            handle.run = run
            recorder.notices = self.notifier.for_run(namespace=key[0], name=key[1], spec=spec, credentials=creds)
            # A run that had started for this generation when the operator stopped: pick it up.
            resuming = (request is None and status.observed_generation == generation
                        and status.deployment_id is not None and status.phase == Phase.progressing
                        and status.started_at is not None)
            if not resuming:
                recorder.begin()
                reruns.begin(recorder.status, request, generation=generation)
            async with self.slots.take(on_queued=lambda ahead: recorder.queued(ahead=ahead)):
                await self.engine.drive(run)
        except (asyncio.CancelledError, StatusNotSaved):
            raise
        except ObjectGone:
            logger.info('The resource is gone; the run stops')
        except Exception:
            logger.exception('The run for generation %d stopped on an operator error', generation)

    async def _pick_up_again(self, key: Key, body: Mapping[str, Any], sink: KubeSink, error: StatusNotSaved,
                             attempt: int, logger: Logger) -> Mapping[str, Any]:
        """Say where it is seen that the run stopped (an error logged, an Event if the API server takes one),
        wait, and read the resource again (gone: no uid, so the run is not picked up)."""
        delay = NOT_SAVED_BACKOFF[min(attempt, len(NOT_SAVED_BACKOFF) - 1)]
        message = (f'The run for generation {body["metadata"].get("generation")} stopped: its status could not be '
                   f'written ({error.message}); picked up again in {delay:.0f}s from the status last written')
        logger.error('%s', message)
        await sink.event(type='Warning', reason=Reason.STATUS_NOT_SAVED, message=message)
        await asyncio.sleep(delay)
        try:
            return await asyncio.to_thread(self.kube.get, namespace=key[0], name=key[1]) or {'metadata': {}}
        except KubeError:  # still failing: go on from what was last written; its first write will tell
            return {**body, 'status': sink.saved}

    def _finished(self, key: Key, handle: Handle) -> None:
        """The run is over: its handle goes, its last saved status is kept (a few, by uid) for the next run."""
        if self._handles.get(key) is handle:
            del self._handles[key]
        if handle.sink is None or handle.sink.detached:
            return
        self._recent[handle.uid] = handle.sink.saved
        self._recent.move_to_end(handle.uid)
        while len(self._recent) > RECENT_STATUSES:
            self._recent.popitem(last=False)

    async def _credentials(self, recorder: Recorder, spec: PandaDeploySpec, namespace: str,
                           name: str) -> credentials.Credentials:
        """Resolve the Secrets; while one is missing, stay Stalled and look again with backoff."""
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(  # the Namespace says which AWS identity it allows: tenancy.py
                    tenancy.resolve, spec, namespace=namespace, name=name,
                    annotations=lambda: self.kube.namespace_annotations(namespace),
                    lookup=lambda n: self.kube.read_secret(namespace=namespace, name=n))
            except Stall as stall:
                await recorder.stalled(stall)
            except Forbidden as exc:  # RBAC: the namespaced-secrets install without this namespace's RoleBinding
                await recorder.stalled(SecretForbidden(namespace=namespace, name=exc.name))
            await asyncio.sleep(STALL_BACKOFF[min(attempt, len(STALL_BACKOFF) - 1)])
            attempt += 1
