"""The progress printer: watch streams, load balancer observations and notes, in one order.

Why this way: progress is shown by watching the resource and its Events
through the Kubernetes API, as `kubectl get -w` would, never the operator's
log. The two watch streams are merged in resourceVersion order (the
emulator's is global, like etcd's revision). Per-check progress reaches the
status only within the operator's write budget (not every check when there
are many: controller/pipeline/progress.py), so here "HealthCheck in progress
- Check k/N" lines are the health checks as the load balancer stand-in sees
them arrive.
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import queue
import sys
import threading
import time
from typing import Any, TextIO

from controller.models import StageName
from controller.plugin.lines import health_summary as health_summary  # one wording, shared with kubectl pd watch


@dataclasses.dataclass
class _RunView:
    """What has been printed of one run (one status.deploymentId)."""
    deployment_id: str
    revision: bool = False
    dockerfile: bool = False
    code_deploy: bool = False
    health: bool = False
    verifying: bool = False
    completed: bool = False
    checks: int = 0


class ProgressPrinter:
    """Prints lines from several threads in one order, in the original progress stream's style.

    Watch items carry the emulator's global resourceVersion; they are held for
    `HOLD` seconds and printed in that order, so a status write and the Event
    posted just before it never swap. Items without one (notes, checks) sort
    after everything received before them. Check lines wait until the status
    shows stage 5 running, since a check can arrive before that write does.
    """

    HOLD = 0.3

    def __init__(self, *, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.checks_total = 5  # spec.healthCheck.checks, set when the resource is applied
        self._queue: queue.Queue[tuple[int | None, str, Any]] = queue.Queue()
        self._order = itertools.count()
        self._idle = threading.Event()
        self._stop = threading.Event()
        self._outcomes: dict[int, dict[str, Any]] = {}
        self._outcome_seen = threading.Condition()
        self._run: _RunView | None = None
        self.deployment_ids: set[str] = set()
        self._held_checks: list[str] = []
        self._thread = threading.Thread(target=self._loop, name='demo-printer', daemon=True)
        self._thread.start()

    # -- producers (any thread) --

    def note(self, line: str) -> None:
        self._queue.put((None, 'note', line))

    def watched_object(self, obj: dict[str, Any]) -> None:
        self._queue.put((_rv(obj), 'status', obj))

    def watched_event(self, event: dict[str, Any]) -> None:
        self._queue.put((_rv(event), 'event', event))

    def check_seen(self, *, listener_port: int, colour: str, status: int) -> None:
        self._queue.put((None, 'check', (listener_port, colour, status)))

    # -- the main thread --

    def wait_for_outcome(self, generation: int, *, timeout: float) -> dict[str, Any] | None:
        """The status that ended the run for `generation` (phase Succeeded or Failed), or None."""
        with self._outcome_seen:
            self._outcome_seen.wait_for(lambda: generation in self._outcomes, timeout=timeout)
            return self._outcomes.get(generation)

    def settle(self, quiet: float = 0.8) -> None:
        """Wait until nothing has been printed or queued for `quiet` seconds (the run's last Event)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self._idle.clear()
            if not self._idle.wait(quiet) and self._queue.empty():
                return

    def close(self) -> None:
        self.settle(0.5)
        self._stop.set()
        self._thread.join(timeout=5)

    # -- the printing thread --

    def _loop(self) -> None:
        pending: list[tuple[tuple[int, int, int], float, str, Any]] = []
        newest = 0
        while not (self._stop.is_set() and not pending and self._queue.empty()):
            try:
                rv, kind, payload = self._queue.get(timeout=0.05)
                newest = max(newest, rv or 0)
                key = (rv, 0, next(self._order)) if rv is not None else (newest, 1, next(self._order))
                heapq.heappush(pending, (key, time.monotonic(), kind, payload))
            except queue.Empty:
                pass
            while pending and (pending[0][1] + self.HOLD <= time.monotonic() or self._stop.is_set()):
                _, _, kind, payload = heapq.heappop(pending)
                self._idle.set()
                self._handle(kind, payload)

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == 'note':
            self._print(payload)
        elif kind == 'status':
            self._status(payload.get('status') or {}, payload)
        elif kind == 'event':
            self._event(payload)
        elif kind == 'check':
            self._check(*payload)

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _status(self, status: dict[str, Any], obj: dict[str, Any]) -> None:
        deployment_id = status.get('deploymentId')
        if not deployment_id:
            return
        if self._run is None or self._run.deployment_id != deployment_id:
            self._run, self._held_checks = _RunView(deployment_id), []
            self.deployment_ids.add(deployment_id)
        self._print_build(self._run, status, obj)
        self._print_rollout(self._run, status)
        self._record_outcome(status)

    def _print_build(self, run: _RunView, status: dict[str, Any], obj: dict[str, Any]) -> None:
        """Stage 1's revision and Dockerfile, each once a run."""
        if status.get('revision') and not run.revision:
            run.revision = True
            source = (obj.get('spec') or {}).get('source') or {}
            where = f'branch {source["branch"]}' if source.get('branch') else 'spec.source.revision'
            self._print(f'[Stage 1] Revision {status["revision"][:7]} ({where})')
        if (status.get('image') or {}).get('dockerfile') and not run.dockerfile:
            run.dockerfile = True
            self._print(f'[Stage 1] Dockerfile found: {status["image"]["dockerfile"]}')

    def _print_rollout(self, run: _RunView, status: dict[str, Any]) -> None:
        """Stages 4 to 6: the CodeDeploy deployment, the held checks, the health summary, the end; each once."""
        if status.get('codeDeployDeploymentId') and not run.code_deploy:
            run.code_deploy = True
            self._print(f'[Stage 4] CodeDeploy deployment {status["codeDeployDeploymentId"]} created')
        if status.get('stageNumber') == StageName.verify.number and not run.verifying:
            run.verifying = True
            for line in self._held_checks:
                self._print(line)
            self._held_checks = []
        if status.get('healthCheck') and not run.health:
            run.health = True
            self._print(f'[Stage 5] {health_summary(status["healthCheck"])}')
        stages: list[dict[str, Any]] = status.get('stages') or []
        complete = next((s for s in stages if s.get('name') == StageName.complete.value), {})
        if complete.get('result') == 'Succeeded' and not run.completed:  # its Event is the run's final one
            run.completed = True
            self._print(f'[Stage 6] {complete.get("message") or "Succeeded"}')

    def _record_outcome(self, status: dict[str, Any]) -> None:
        if status.get('phase') in ('Succeeded', 'Failed') and status.get('observedGeneration'):
            with self._outcome_seen:
                self._outcomes[int(status['observedGeneration'])] = status
                self._outcome_seen.notify_all()

    def _event(self, event: dict[str, Any]) -> None:
        reason, message = str(event.get('reason') or ''), str(event.get('message') or '')
        stage = _stage_of_reason(reason)
        if stage is not None:
            detail = message.split(': ', 1)[1] if ': ' in message else reason
            self._print(f'[Stage {stage.number}] {detail}')
        elif reason in ('Started', 'Resumed'):
            self._print(message)
        elif event.get('type') == 'Warning':
            self._print(f'Warning {reason}: {message}')
        else:
            run = f'Run {self._run.deployment_id} ' if self._run else ''
            self._print(f'{run}{reason}: {message}')

    def _check(self, listener_port: int, colour: str, status: int) -> None:
        if self._run is None:
            return
        self._run.checks += 1
        line = (f'[Stage 5] HealthCheck in progress - Check {self._run.checks}/{self.checks_total} '
                f'(listener :{listener_port} -> {colour}, HTTP {status})')
        if self._run.health:  # the checks' verdict is in: an ECS rollout is checked on while production moves
            line = (f'[Stage 5] Check while production moves (listener :{listener_port} -> {colour}, '
                    f'HTTP {status})')
        if self._run.verifying:
            self._print(line)
        else:
            self._held_checks.append(line)


def _rv(obj: dict[str, Any]) -> int:
    return int((obj.get('metadata') or {}).get('resourceVersion') or 0)


def _stage_of_reason(reason: str) -> StageName | None:
    """The stage of an Event reason such as BuildSucceeded or BlueGreenSkipped."""
    for name in StageName:
        if reason in (f'{name.value}Succeeded', f'{name.value}Skipped'):
            return name
    return None
