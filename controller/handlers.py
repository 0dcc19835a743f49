"""Kopf glue: every handler in one thin file; each guards and delegates to the reconciler.

Kopf keeps its progress and diff-base in `deploy.panda.dev/…` annotations and
uses our own finalizer, so `status` holds only our fields. Kopf's own
log-to-Event posting is off: the reconciler posts the Events, on transitions;
nor does Kopf log a line for each watch event `annotated` handled (`handler_log`).
"""
from __future__ import annotations

import concurrent.futures
import copy
from typing import Any

import kopf

from controller import http, tempdirs
from controller.assembly import build_engine, build_follower, build_notifier, build_webhooks
from controller.config import Config
from controller.handler_log import quiet_watch_handlers
from controller.kube import Kube
from controller.models import GROUP, PLURAL, VERSION
from controller.reconciler import Reconciler

RESOURCE = (GROUP, VERSION, PLURAL)
FINALIZER = f'{GROUP}/finalizer'
ANNOTATED = 'annotated'  # the watch-event handler's id (its name, as Kopf would call it)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key='last-handled-configuration',
        ignored_fields=['metadata.labels', 'metadata.annotations'])  # only the spec starts runs
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = False
    quiet_watch_handlers(ANNOTATED)
    config = Config.from_env()
    for stale in tempdirs.remove_stale():  # left by an operator that was killed mid-clone
        logger.info('Removed %s, left by a process that is gone', stale)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix='deployment-worker')
    engine = build_engine(config=config, pool=pool)
    memo.pool = pool
    memo.reconciler = Reconciler(kube=Kube(logger=logger), engine=engine, workers=config.workers,
                                 git_hosts=config.git_hosts, notifier=build_notifier(config=config))
    memo.follower = build_follower(config=config, kube=memo.reconciler.kube, runs=memo.reconciler)
    memo.follower.start()
    memo.http = await http.serve(host=config.http_host, port=config.http_port, pool=pool,
                                 hooks=build_webhooks(config=config, follower=memo.follower),
                                 hooks_port=config.webhook_port)
    hooks = f'webhooks on port {memo.http.hooks_port}' if memo.http.hooks_port is not None else 'no webhooks'
    logger.info('panda-deploy: %d workers, metrics on %s:%d, %s', config.workers, config.http_host,
                config.http_port, hooks)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await memo.follower.stop()
    await memo.reconciler.shutdown()
    await memo.http.cleanup()
    memo.pool.shutdown(wait=False, cancel_futures=True)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field='spec')
async def reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    await memo.reconciler.reconcile(body=copy.deepcopy(dict(body)), logger=logger)


@kopf.daemon(*RESOURCE, cancellation_timeout=60)
async def follow_peering(*, body: kopf.Body, memo: Any, logger: Any, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """With Kopf peering, a replica that Kopf pauses for a peer stops its daemons: it drops its runs then (the
    active peer resumes them); back to active, the daemon starts again and picks them up."""
    await memo.reconciler.reconcile(body=copy.deepcopy(dict(body)), logger=logger)
    await stopped.wait()
    if stopped.reason is not None and kopf.DaemonStoppingReason.OPERATOR_PAUSING in stopped.reason:
        await memo.reconciler.pause(body=dict(body), logger=logger)
        memo.follower.forget(body=dict(body))  # nor does it follow the branch (the watch tells it again)


@kopf.on.event(*RESOURCE, id=ANNOTATED)
async def annotated(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Every watch event: annotations bump no generation (and the diff-base ignores them), so the promote and
    abort annotations reach the reconciler here, and requestedAt and the branch to follow the follower."""
    await memo.reconciler.annotated(body=dict(body), deleted=event['type'] == 'DELETED', logger=logger)
    await memo.follower.observe(body=dict(body), deleted=event['type'] == 'DELETED', logger=logger)


@kopf.on.delete(*RESOURCE)
async def delete(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    await memo.reconciler.forget(body=dict(body), logger=logger)
