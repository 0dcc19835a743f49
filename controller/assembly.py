"""The engine as this process runs it, built in one place for the operator and `panda-deploy run`.

Both drive runs with the same six stages, the adapters the config names and
the config's poll interval; only the worker pool differs (the operator's is
shared by all its runs, `run`'s has one thread), so the caller brings it.
This module sits above the pipeline (it reads `Config`), which keeps the
pipeline free of settings and environment.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import pathlib

from controller.adapters.git_changes import BranchWatcher
from controller.adapters.notify import Notifications
from controller.config import Config
from controller.follow import Follower, Runs
from controller.kube import Kube
from controller.pipeline import Engine, default_stages
from controller.webhooks import Webhooks, secret_from_file


def build_engine(*, config: Config, pool: concurrent.futures.ThreadPoolExecutor) -> Engine:
    """The six stages, polled every `config.poll_seconds`, with the config's adapters, on `pool`."""
    return Engine(stages=default_stages(poll_seconds=config.poll_seconds), adapters=config.adapter_factory(),
                  pool=pool)


def build_notifier(*, config: Config) -> Notifications:
    """The run notifications (GitHub commit statuses, webhooks) within the config's allowances."""
    return Notifications(settings=config.notify)


def build_follower(*, config: Config, kube: Kube, runs: Runs) -> Follower:
    """The operator's one follower of branches: real git (ls-remote), tokens only to PANDA_DEPLOY_GIT_HOSTS."""
    return Follower(kube=kube, runs=runs, heads=BranchWatcher(token_hosts=config.git_hosts),
                    min_interval=config.min_interval_seconds)


def build_webhooks(*, config: Config, follower: Follower) -> Webhooks | None:
    """The webhooks the webhook port serves (None: PANDA_DEPLOY_WEBHOOK_SECRET_FILE unset); they wake `follower`
    on the running event loop (the HTTP server answers from threads of its own)."""
    if config.webhook_secret_file is None:
        return None
    loop = asyncio.get_running_loop()

    def wake(repository: str, branch: str) -> None:
        loop.call_soon_threadsafe(functools.partial(follower.wake, repository=repository, branch=branch))
    return Webhooks(secret=secret_from_file(pathlib.Path(config.webhook_secret_file)), wake=wake)
