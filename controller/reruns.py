"""Undo and retry: two annotations that start a run at the same generation, each handled once.

`deploy.panda.dev/undo=<deploymentId>[@<when>]` goes back to that run of
`status.history`: its image (by digest) and its task definition, deployed
again through stages 3 to 6 (the same rollout strategy and health gate) with
no clone, build or push (Build and Push are recorded as skipped), superseding
a run in flight. `deploy.panda.dev/retry=<deploymentId>[@<when>]` runs the newest run
again at its revision when it failed (no branch lookup; its image is reused
when it was pushed). The run is recorded as what it was
(`status.trigger`, and each history entry's `trigger`: Build, Undo of X,
Retry of Y).

`@<when>` (kubectl pd adds the time) makes asking for the same run again a
new value. A value is handled once, as Flux handles `requestedAt`: the last value handled
is kept in status (`lastHandledUndo`, `lastHandledRetry`), so a restarted
operator or the next watch event does not act on it again. A value that
starts no run (malformed, naming no run of the history, a run that did not
succeed or recorded no image digest and task definition, a retry of a run
that did not fail or is not the newest) is handled too: one Warning Event
with its own reason says why. Annotation values are a user's text: status
keeps a value of up to 64 printable characters as it is, a longer or odd one
as `sha256:` and its hash, and messages quote at most 64 characters of it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from typing import Any

from controller import conditions
from controller.errors import Reason
from controller.models import (
    DEPLOYMENT_ID,
    RETRY_ANNOTATION,
    UNDO_ANNOTATION,
    HistoryEntry,
    ImageStatus,
    PandaDeployStatus,
    Phase,
    RunResult,
    StageName,
    StageRecord,
    StageResult,
    Trigger,
    TriggerKind,
)

ANNOTATIONS = {TriggerKind.undo: UNDO_ANNOTATION, TriggerKind.retry: RETRY_ANNOTATION}
HANDLED_FIELDS = {TriggerKind.undo: 'last_handled_undo', TriggerKind.retry: 'last_handled_retry'}
HANDLED_KEYS = {TriggerKind.undo: 'lastHandledUndo', TriggerKind.retry: 'lastHandledRetry'}  # in status, on the wire
STAMPED = 64  # characters of a value: a deploymentId, '@' and a time (kubectl pd writes RFC 3339, 32)
_PLAIN = re.compile(r'[\x20-\x7e]{1,64}')  # kept as it is in status; longer ones as their sha256
QUOTED = 64  # characters of a value quoted in a message


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What one undo or retry value asks for."""
    kind: TriggerKind
    value: str

    @property
    def token(self) -> str:
        """The value as status keeps it once handled."""
        return handled_token(self.value)


@dataclasses.dataclass(frozen=True)
class Request(Verdict):
    """An undo or retry to act on: the run it names."""
    target: HistoryEntry


@dataclasses.dataclass(frozen=True)
class Refusal(Verdict):
    """A value that starts no run, and why (a Warning Event)."""
    reason: str
    message: str


def handled_token(value: str) -> str:
    """What status keeps of a value: itself when short and printable, else `sha256:<hex>` (bounded, no control
    characters, and still tells a new value from the one handled)."""
    if _PLAIN.fullmatch(value):
        return value
    return 'sha256:' + hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()


def last_handled(status: PandaDeployStatus, kind: TriggerKind) -> str | None:
    value: str | None = getattr(status, HANDLED_FIELDS[kind])
    return value


def new_values(annotations: Mapping[str, Any], status: PandaDeployStatus,
               seen: Mapping[TriggerKind, str]) -> list[tuple[TriggerKind, str]]:
    """The undo and retry values not handled yet (neither in status nor by this process since)."""
    found = []
    for kind, name in ANNOTATIONS.items():
        value = annotations.get(name)
        if not isinstance(value, str) or not value:
            continue
        token = handled_token(value)
        if token != last_handled(status, kind) and token != seen.get(kind):
            found.append((kind, value))
    return found


def judge(kind: TriggerKind, value: str, status: PandaDeployStatus, *, in_flight: str | None) -> Request | Refusal:
    """The run a value asks for, or why it asks for none."""
    name = ANNOTATIONS[kind]
    run_id = value.split('@', 1)[0]  # `dep_x@<when>`: the same run asked for again is a new value
    if not DEPLOYMENT_ID.fullmatch(run_id) or len(value) > STAMPED:
        return Refusal(kind, value, Reason.REQUEST_MALFORMED,
                       f'{name}={value[:QUOTED]!r} names no run: it takes a deploymentId (dep_ and 10 characters) '
                       'from status.history')
    entry = next((h for h in status.history if h.deployment_id == run_id), None)
    if entry is None:
        kept = ', '.join(h.deployment_id for h in status.history[:5]) or 'none'
        return Refusal(kind, value, Reason.UNDO_TARGET_NOT_FOUND if kind == TriggerKind.undo
                       else Reason.RETRY_NOT_APPLICABLE,
                       f'{name}={value}: no such run in status.history (newest: {kept})')
    if kind == TriggerKind.undo:
        return _judge_undo(value, entry)
    return _judge_retry(value, entry, status, in_flight=in_flight)



def _judge_undo(value: str, entry: HistoryEntry) -> Request | Refusal:
    if entry.result != RunResult.succeeded:
        return Refusal(TriggerKind.undo, value, Reason.UNDO_TARGET_UNUSABLE,
                       f'{UNDO_ANNOTATION}={value}: that run ended {entry.result.value}; undo goes back to a run '
                       'that succeeded')
    if not (entry.image_uri and entry.image_digest and entry.task_definition_arn):
        return Refusal(TriggerKind.undo, value, Reason.UNDO_TARGET_UNUSABLE,
                       f'{UNDO_ANNOTATION}={value}: that run recorded no image digest and task definition '
                       '(an operator before undo recorded them); nothing to deploy again')
    return Request(TriggerKind.undo, value, entry)


def _judge_retry(value: str, entry: HistoryEntry, status: PandaDeployStatus, *,
                 in_flight: str | None) -> Request | Refusal:
    if in_flight is not None:
        return Refusal(TriggerKind.retry, value, Reason.RETRY_NOT_APPLICABLE,
                       f'{RETRY_ANNOTATION}={value}: run {in_flight} is in flight; retry a failed run once it ends')
    if entry.result != RunResult.failed:
        return Refusal(TriggerKind.retry, value, Reason.RETRY_NOT_APPLICABLE,
                       f'{RETRY_ANNOTATION}={value}: that run ended {entry.result.value}; only a failed run is '
                       'retried')
    if status.history[0].deployment_id != entry.deployment_id or status.phase != Phase.failed:
        return Refusal(TriggerKind.retry, value, Reason.RETRY_NOT_APPLICABLE,
                       f'{RETRY_ANNOTATION}={value}: a later run ({status.history[0].deployment_id}) came after it; '
                       'only the newest run is retried')
    return Request(TriggerKind.retry, value, entry)


def begin(status: PandaDeployStatus, request: Request | None, *, generation: int) -> None:
    """A new run's trigger (after `Recorder.begin`); for an undo, what Build and Push would have made."""
    if request is None:  # Recorder.begin made it a Build
        return
    target = request.target
    status.trigger = Trigger(kind=request.kind, of=target.deployment_id)
    setattr(status, HANDLED_FIELDS[request.kind], request.token)
    status.set_revision(target.revision)  # Build pins it: no branch lookup
    if request.kind != TriggerKind.undo:
        return
    status.image = ImageStatus(uri=target.image_uri, digest=target.image_digest)
    status.task_definition_arn = target.task_definition_arn
    now = conditions.now()
    for name, message in ((StageName.build, f'Undo to {target.deployment_id}: revision '
                           f'{(target.revision or "unknown")[:7]}, no build'),
                          (StageName.push, f'Undo to {target.deployment_id}: image {target.image_uri}@'
                           f'{target.image_digest}, already in the registry')):
        status.stages = [*status.stages, StageRecord(number=name.number, name=name, result=StageResult.skipped,
                                                     started_at=now, completed_at=now, message=message,
                                                     reason='Undo')]
        conditions.set_condition(status, type=name.value, value='True', reason='Skipped', message=message,
                                 generation=generation)


