"""The engine as this process runs it, built in one place for the operator and `panda-deploy run`.

Both drive runs with the same six stages, the adapters the config names and
the config's poll interval; only the worker pool differs (the operator's is
shared by all its runs, `run`'s has one thread), so the caller brings it.
This module sits above the pipeline (it reads `Config`), which keeps the
pipeline free of settings and environment.
"""
from __future__ import annotations

import concurrent.futures

from controller.adapters.notify import Notifications
from controller.config import Config
from controller.pipeline import Engine, default_stages


def build_engine(*, config: Config, pool: concurrent.futures.ThreadPoolExecutor) -> Engine:
    """The six stages, polled every `config.poll_seconds`, with the config's adapters, on `pool`."""
    return Engine(stages=default_stages(poll_seconds=config.poll_seconds), adapters=config.adapter_factory(),
                  pool=pool)


def build_notifier(*, config: Config) -> Notifications:
    """The run notifications (GitHub commit statuses, webhooks) within the config's allowances."""
    return Notifications(settings=config.notify)
