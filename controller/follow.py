"""Continuous delivery: follow the branch, deploy only what touches `spec.source.paths`, redeploy on request.

Why it is built this way:

- One scheduler for the whole operator, not a Kopf timer or daemon per
  resource: a resource costs an entry in a heap and, at its interval, one
  `git ls-remote` (controller.adapters.git_changes) on a small pool of its
  own, so runs' workers and the event loop never wait for it. It learns the
  resources from the watch stream (`observe`, from the `on.event` handler
  that already sees every event) and forgets them on deletion.
- Resources following the same branch of the same repository (a monorepo's
  services, told apart by `spec.source.paths`) share one `ls-remote`: a look
  takes an answer still under way or asked less than a tenth of its interval
  (at most 5 s) ago. A look a webhook asked for always asks the server itself.
- Each look is jittered (±10% of the interval, the first one anywhere in the
  first interval) so that a thousand resources made at once do not ask the
  git server at once; the interval is never below the operator's floor
  (PANDA_DEPLOY_MIN_INTERVAL_SECONDS), whatever a tenant writes.
- Nothing is written while nothing changes. A head that is the commit of the
  last run, or that was already decided on (`status.branchHead`, and this
  process's memory, since the watch's copy of the status may lag), costs no
  API call at all; a new head is written once with what was decided: a run
  (Event BranchMoved) or nothing (NoPathChanged, when it changes no file
  under `spec.source.paths` since the last commit that succeeded). A run
  that fails is not retried for the same head, as after a spec change.
- Only settled resources are looked at (the last run Succeeded or Failed,
  for this generation, no run in flight): a new spec's run comes first.
- A webhook only wakes the resources that follow that repository and branch
  (`wake`): it carries no trust, the head is still asked of the git server.
- `deploy.panda.dev/requestedAt`: any value not handled yet (not the one in
  `status.lastHandledRequestedAt`) starts a run at the branch head, paths or
  not; while a run is in flight the request waits for its end.
- A look that fails (the git server refuses or does not answer, the token's
  Secret is missing) writes no status: one Warning Event with the adapter's
  reason (SourceAuthFailed, SourceUnavailable, RevisionNotFound …) when the
  failure is new, and the next look tries again.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import heapq
import itertools
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

import pydantic

from controller import conditions, metrics
from controller.errors import PandaDeployError, Reason
from controller.kube import Kube, KubeError
from controller.models import (
    REQUESTED_AT_ANNOTATION,
    BranchHead,
    Logger,
    PandaDeploySpec,
    PandaDeployStatus,
    Phase,
    RunResult,
)
from controller.repository_identity import identity

Key = tuple[str, str]
JITTER = 0.1
CONCURRENCY = 4  # git calls at once (each a short ls-remote)
REQUEST_RETRY_SECONDS = 1.0  # a requestedAt that waits for the run in flight is looked at again this often
REQUESTED_AT_LIMIT = 256  # characters of the annotation's value kept in status
SHARE_SECONDS, SHARE_FRACTION = 5.0, 0.1  # how recent an answer for the same branch another look may take
SHARE_SWEEP = 4096  # answers kept before the old ones are dropped



class Heads(Protocol):
    """The git calls following needs (controller.adapters.git_changes.BranchWatcher)."""

    def head(self, *, url: str, branch: str, token: str | None) -> str: ...

    def touches(self, *, url: str, old: str, new: str, patterns: list[str], token: str | None) -> bool | None: ...


class Runs(Protocol):
    """What following needs of the reconciler: whether a run is in flight, and starting one."""

    def running(self, key: Key) -> bool: ...

    async def reconcile(self, *, body: Mapping[str, Any], logger: Logger, wanted: bool = False) -> None: ...


@dataclasses.dataclass
class Followed:
    """What the follower knows of one resource (its uid: one made again under its name starts afresh)."""
    uid: str
    body: Mapping[str, Any]
    logger: Logger
    spec: PandaDeploySpec | None = None
    interval: float | None = None  # seconds between looks; None: the branch is not followed
    due: float | None = None  # when it is looked at next (the clock's time); None: not scheduled
    seen: str | None = None  # the head last decided on by this process
    handled: str | None = None  # the requestedAt value last handled by this process
    identity: str = ''  # the repository, as webhooks name it
    branch: str = ''
    looking: bool = False  # a look is under way: another waits for its end (`again`), never runs beside it
    again: bool = False
    fresh: bool = False  # woken by a webhook: its look asks the git server itself, sharing no earlier answer
    failure: str | None = None  # what the last look's failure said (a Warning Event only when it changes)


class Follower:
    def __init__(self, *, kube: Kube, runs: Runs, heads: Heads, min_interval: float,
                 clock: Callable[[], float] = time.monotonic, concurrency: int = CONCURRENCY) -> None:
        self.kube, self.runs, self.heads, self.min_interval, self.clock = kube, runs, heads, min_interval, clock
        self.entries: dict[Key, Followed] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._order = itertools.count()
        self._wakeup = asyncio.Event()
        self._limit = asyncio.Semaphore(concurrency)
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix='follow-git')
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.looks = 0  # heads asked of git servers
        self._answers: dict[tuple[str, str, str], tuple[float, asyncio.Future[str]]] = {}  # shared answers

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._schedule(), name='panda-deploy follower')

    async def stop(self) -> None:
        tasks = [task for task in (self._loop_task, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- what the watch stream and webhooks tell -------------------------------------------------

    async def observe(self, *, body: Mapping[str, Any], deleted: bool, logger: Logger) -> None:
        """A watch event: keep the resource's latest body, (re)schedule its looks, handle a new requestedAt."""
        key = (body['metadata']['namespace'], body['metadata']['name'])
        uid = str(body['metadata'].get('uid') or '')
        if deleted:
            self.entries.pop(key, None)
            return
        entry = self.entries.get(key)
        if entry is None or entry.uid != uid:
            entry = self.entries[key] = Followed(uid=uid, body=body, logger=logger)
        entry.body, entry.logger = body, logger
        try:
            entry.spec = PandaDeploySpec.model_validate(body.get('spec') or {})
        except pydantic.ValidationError:  # the reconciler says what is wrong; nothing to follow meanwhile
            entry.spec, entry.interval, entry.due = None, None, None
            return
        source = entry.spec.source
        entry.identity, entry.branch = identity(source.clone_url), source.effective_branch or ''
        interval = source.interval_seconds
        interval = None if interval is None else max(interval, self.min_interval)
        if interval != entry.interval:
            entry.interval = interval
            self._schedule_at(key, entry, None if interval is None else self.clock() + random.uniform(0, interval))
        try:
            await self._requested(key, entry)
        except (PandaDeployError, KubeError) as exc:  # looked at again soon
            entry.logger.warning('%s: %s', REQUESTED_AT_ANNOTATION, getattr(exc, 'message', exc))
            self._soon(key, entry)

    def forget(self, *, body: Mapping[str, Any]) -> None:
        """Stop following the resource until the watch shows it again (Kopf paused this replica for a peer)."""
        self.entries.pop((body['metadata']['namespace'], body['metadata']['name']), None)

    def wake(self, *, repository: str, branch: str) -> list[Key]:
        """Look now at the resources that follow `repository` (any URL of it) and `branch`; those woken."""
        wanted = identity(repository)
        woken = [key for key, entry in self.entries.items()
                 if entry.interval is not None and entry.identity == wanted and entry.branch == branch]
        for key in woken:
            self.entries[key].fresh = True
            self._schedule_at(key, self.entries[key], self.clock())
        return woken

    # -- scheduling ---------------------------------------------------------------------------------

    def _schedule_at(self, key: Key, entry: Followed, when: float | None) -> None:
        entry.due = when
        if when is not None:
            heapq.heappush(self._heap, (when, next(self._order), key))
            self._wakeup.set()

    def _soon(self, key: Key, entry: Followed) -> None:
        """Look again within REQUEST_RETRY_SECONDS (a requestedAt waits), the interval's look coming after."""
        soon = self.clock() + REQUEST_RETRY_SECONDS
        if entry.due is None or entry.due > soon:
            self._schedule_at(key, entry, soon)

    def _next_look(self, key: Key, entry: Followed) -> None:
        if self.entries.get(key) is not entry:
            return
        if entry.spec is not None and not entry.spec.suspend and self._request_waiting(entry):
            self._soon(key, entry)
        elif entry.interval is not None and entry.due is None:
            jitter = random.uniform(-JITTER, JITTER) * entry.interval
            self._schedule_at(key, entry, self.clock() + entry.interval + jitter)

    async def _schedule(self) -> None:
        while True:
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                when, _, key = heapq.heappop(self._heap)
                entry = self.entries.get(key)
                if entry is None or entry.due != when:
                    continue  # deleted, or scheduled again since
                entry.due = None
                if entry.looking:
                    entry.again = True
                    continue
                entry.looking = True
                task = asyncio.create_task(self._look(key, entry), name=f'follow {key[0]}/{key[1]}')
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._wakeup.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass

    async def _look(self, key: Key, entry: Followed) -> None:
        async with self._limit:
            try:
                await self._requested(key, entry)
                await self._follow(key, entry)
                entry.failure = None
            except PandaDeployError as exc:
                await self._failed(key, entry, exc)
            except KubeError as exc:
                entry.logger.info('Following %s: %s', entry.branch, exc)
            except Exception:
                entry.logger.exception('Following %s failed', entry.branch)
            finally:
                entry.looking = False
                if entry.again:
                    entry.again = False
                    self._schedule_at(key, entry, self.clock())
                self._next_look(key, entry)

    # -- decisions ----------------------------------------------------------------------------------

    def _request_waiting(self, entry: Followed) -> bool:
        value = _requested_value(entry.body)
        return bool(value) and value not in (entry.handled, _status(entry.body).last_handled_requested_at)

    async def _requested(self, key: Key, entry: Followed) -> None:
        """A requestedAt value not handled yet starts a run at the branch head (after the run in flight)."""
        if entry.spec is None or entry.spec.suspend or not self._request_waiting(entry):
            return
        if self.runs.running(key):
            self._soon(key, entry)
            return
        value = _requested_value(entry.body)
        await self._write(key, entry, {'lastHandledRequestedAt': value})
        entry.handled = value
        await self._event(key, entry, Reason.REDEPLOY_REQUESTED,
                          f'{REQUESTED_AT_ANNOTATION}={value}: a run starts at the head of the branch')
        await self.runs.reconcile(body=entry.body, logger=entry.logger, wanted=True)

    async def _follow(self, key: Key, entry: Followed) -> None:
        """Ask the git server for the branch head; decide on a new one (a run, or nothing for its paths)."""
        spec, body = entry.spec, entry.body
        if spec is None or entry.interval is None or spec.suspend or not self._settled(key, body):
            return
        source = spec.source
        token = await asyncio.to_thread(self._token, key[0], spec)
        fresh, entry.fresh = entry.fresh, False
        head = await self._head(source.clone_url, entry.branch, token, fresh=fresh, interval=entry.interval)
        status = _status(entry.body)
        if head in (entry.seen, status.branch_head.revision if status.branch_head else None, status.revision):
            metrics.BRANCH_LOOKS.labels('unchanged').inc()  # decided on, or the last run is at it: nothing to write
            entry.seen = head
            return
        deployed = _last_succeeded(status)
        message = f'Branch {entry.branch} moved to {head[:7]}: a run starts'
        if source.paths and deployed is not None:
            touched = await self._in_pool(self.heads.touches, url=source.clone_url, old=deployed, new=head,
                                          patterns=list(source.paths), token=token)
            if touched is False:
                metrics.BRANCH_LOOKS.labels('no_path_changed').inc()
                await self._decided(key, entry, head, 'NoPathChanged', Reason.NO_PATH_CHANGED,
                                    f'{head[:7]} changes no file under spec.source.paths since {deployed[:7]}, '
                                    'the commit deployed: nothing to deploy')
                return
            if touched is None:
                message += f' ({deployed[:7]}, the commit deployed, is no longer on the server to compare with)'
        if not self._settled(key, entry.body):  # a spec change started a run meanwhile: it is at the head
            return
        metrics.BRANCH_LOOKS.labels('moved').inc()
        await self._decided(key, entry, head, 'Deploy', Reason.BRANCH_MOVED, message)
        await self.runs.reconcile(body=entry.body, logger=entry.logger, wanted=True)

    async def _failed(self, key: Key, entry: Followed, error: PandaDeployError) -> None:
        """A look that failed (the git server refused or did not answer, a Secret is missing): logged, and a
        Warning Event when the failure is new, not at every interval; the next look tries again."""
        message = f'Following branch {entry.branch}: {error.message}'
        metrics.BRANCH_LOOKS.labels('failed').inc()
        entry.logger.info('%s', message)
        if message != entry.failure:
            entry.failure = message
            await self._event(key, entry, error.reason, message, type='Warning')

    async def _decided(self, key: Key, entry: Followed, head: str, decision: Literal['Deploy', 'NoPathChanged'], reason: str,
                       message: str) -> None:
        entry.seen = head
        record = BranchHead(revision=head, seen_at=conditions.now(), decision=decision, message=message)
        await self._write(key, entry, {'branchHead': record.dump()})
        await self._event(key, entry, reason, message)
        entry.logger.info('%s', message)

    def _settled(self, key: Key, body: Mapping[str, Any]) -> bool:
        """The last run for this generation is over and none is in flight (a new spec's run comes first)."""
        status = _status(body)
        generation = int(body['metadata'].get('generation') or 1)
        return (not self.runs.running(key) and status.observed_generation == generation
                and status.phase in (Phase.succeeded, Phase.failed))

    def _token(self, namespace: str, spec: PandaDeploySpec) -> str | None:
        """The token of spec.source.tokenSecretRef (None without one); a missing one stops this look."""
        ref = spec.source.token_secret_ref
        if ref is None:
            return None
        data = self.kube.read_secret(namespace=namespace, name=ref.name)
        if data is None or not data.get(ref.key):
            raise PandaDeployError(f'spec.source.tokenSecretRef: Secret {ref.name!r} or its key {ref.key!r} '
                                   'not found', reason=Reason.SECRET_NOT_FOUND)
        return data[ref.key].strip()

    async def _head(self, url: str, branch: str, token: str | None, *, fresh: bool, interval: float) -> str:
        """The branch head; resources following the same branch (with the same token) share one `ls-remote`
        asked less than SHARE_FRACTION of their interval (at most SHARE_SECONDS) ago or still under way."""
        key = (url, branch, hashlib.sha256((token or '').encode()).hexdigest())
        now, found = self.clock(), self._answers.get(key)
        if found is not None and not fresh:
            asked, answer = found
            if not answer.done() or now - asked < min(SHARE_SECONDS, interval * SHARE_FRACTION):
                return await asyncio.shield(answer)
        answer = asyncio.get_running_loop().create_future()
        self._answers[key] = (now, answer)
        if len(self._answers) > SHARE_SWEEP:
            self._answers = {k: v for k, v in self._answers.items() if now - v[0] < SHARE_SECONDS}
        try:
            answer.set_result(await self._in_pool(self.heads.head, url=url, branch=branch, token=token))
        except BaseException as exc:
            if isinstance(exc, Exception):
                answer.set_exception(exc)
                answer.exception()  # retrieved: whoever shares it has it raised; nobody is warned of it
            else:
                answer.cancel()
            if self._answers.get(key, (0.0, None))[1] is answer:
                del self._answers[key]  # a failure is not shared with later looks
            raise
        self.looks += 1
        return answer.result()

    async def _in_pool(self, call: Callable[..., Any], **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: call(**kwargs))

    async def _write(self, key: Key, entry: Followed, patch: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self.kube.patch_status, namespace=key[0], name=key[1], patch=patch)
        status = dict(entry.body.get('status') or {})
        entry.body = {**entry.body, 'status': {**status, **patch}}

    async def _event(self, key: Key, entry: Followed, reason: str, message: str, *, type: str = 'Normal') -> None:
        ref = {'namespace': key[0], 'name': key[1], 'uid': entry.uid}
        try:
            await asyncio.to_thread(self.kube.post_event, ref=ref, type=type, reason=reason, message=message)
        except KubeError as exc:
            entry.logger.warning('Could not post event %s: %s', reason, exc)


def _status(body: Mapping[str, Any]) -> PandaDeployStatus:
    return PandaDeployStatus.model_validate(body.get('status') or {})


def _requested_value(body: Mapping[str, Any]) -> str:
    annotations = body['metadata'].get('annotations') or {}
    return str(annotations.get(REQUESTED_AT_ANNOTATION) or '')[:REQUESTED_AT_LIMIT]


def _last_succeeded(status: PandaDeployStatus) -> str | None:
    """The commit of the newest run that succeeded: what is deployed."""
    return next((entry.revision for entry in status.history
                 if entry.result == RunResult.succeeded and entry.revision), None)

