"""Kopf's per-object log without a line for every watch event.

Why: Kopf logs "Handler 'NAME' succeeded." at INFO after every call of every
handler. For a watch-event handler (`handlers.annotated`, called on each event
of each resource, and each status write of a run is one) that is one line per
event: about 14 a rollout, 14,000 for 1,000 new resources, each made into a
record, formatted and written for nothing. A cProfile of the operator under
bench/operator_cost.py's 1,000-resource ramp put Kopf's logging of these calls
among the largest costs on its event loop. `WatchHandlerLog` drops exactly those
lines; every other line (Kopf's own, the stages' progress, a failing
handler's error) passes as before.
"""
from __future__ import annotations

import logging

KOPF_OBJECT_LOGGER = 'kopf.objects'  # Kopf's per-object logger, whose lines carry [namespace/name]


class WatchHandlerLog(logging.Filter):
    """Drops Kopf's "Handler 'NAME' succeeded." for the named (watch-event) handlers, nothing else."""

    def __init__(self, *handler_ids: str) -> None:
        super().__init__()
        self.dropped = frozenset(f"Handler '{handler_id}' succeeded." for handler_id in handler_ids)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg in self.dropped)


def quiet_watch_handlers(*handler_ids: str) -> WatchHandlerLog:
    """Install (once per process) the filter on Kopf's per-object logger; the filter in place."""
    logger = logging.getLogger(KOPF_OBJECT_LOGGER)
    for found in logger.filters:
        if isinstance(found, WatchHandlerLog) and found.dropped == WatchHandlerLog(*handler_ids).dropped:
            return found
    installed = WatchHandlerLog(*handler_ids)
    logger.addFilter(installed)
    return installed
