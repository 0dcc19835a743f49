"""Kopf logs no line for each watch event the operator's `annotated` handler took, and every other line as before.

The line is the one Kopf writes after each successful handler call
(`Handler 'annotated' succeeded.`), made here through Kopf's own per-object
logger class for watch handlers, as Kopf makes it.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

import kopf
import pytest
from kopf._core.actions.loggers import LocalObjectLogger  # the class Kopf logs watch handlers' outcomes with

from controller import handlers
from controller.handler_log import KOPF_OBJECT_LOGGER, WatchHandlerLog, quiet_watch_handlers

BODY = kopf.Body({'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
                  'metadata': {'name': 'app', 'namespace': 'default', 'uid': 'u-1'}})


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def kept() -> Iterator[Kept]:
    logger = logging.getLogger(KOPF_OBJECT_LOGGER)
    handler, level, filters = Kept(), logger.level, list(logger.filters)
    logger.filters[:] = [f for f in filters if not isinstance(f, WatchHandlerLog)]  # one an operator left, say
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.filters[:] = filters


def kopf_logger() -> LocalObjectLogger:
    return LocalObjectLogger(body=BODY, settings=kopf.OperatorSettings())


def test_the_watch_handlers_success_line_is_dropped_and_nothing_else(kept: Kept) -> None:
    quiet_watch_handlers(handlers.ANNOTATED)
    logger = kopf_logger()
    logger.info("Handler 'annotated' succeeded.")
    logger.info("Handler 'reconcile' succeeded.")
    logger.info('[Stage 1] Build started')
    logger.error("Handler 'annotated' failed with an exception and will try again in 60 seconds: boom")
    logger.warning("Handler 'annotated' succeeded.")  # not Kopf's line (Kopf says it at INFO): kept
    assert kept.messages == ["Handler 'reconcile' succeeded.", '[Stage 1] Build started',
                             "Handler 'annotated' failed with an exception and will try again in 60 seconds: boom",
                             "Handler 'annotated' succeeded."]


def test_without_the_filter_kopf_logs_the_line(kept: Kept) -> None:
    kopf_logger().info("Handler 'annotated' succeeded.")
    assert kept.messages == ["Handler 'annotated' succeeded."]


def test_installed_once_however_often_the_operator_starts(kept: Kept) -> None:
    first = quiet_watch_handlers(handlers.ANNOTATED)
    assert quiet_watch_handlers(handlers.ANNOTATED) is first
    assert sum(isinstance(f, WatchHandlerLog) for f in logging.getLogger(KOPF_OBJECT_LOGGER).filters) == 1


def test_the_filter_names_the_handler_kopf_registered() -> None:
    """What Kopf prints before ' succeeded.' is str(handler): the filter's line is the registered handler's."""
    watching = kopf.get_default_registry()._watching.get_all_handlers()
    assert [str(h) for h in watching] == [f"Handler '{handlers.ANNOTATED}'"]
    assert WatchHandlerLog(handlers.ANNOTATED).dropped == {f'{watching[0]} succeeded.'}
