"""kstatus conditions, set in one place.

`Ready` is computed from the phase in `summarise`; `Reconciling` and `Stalled`
are abnormal-true: present with status True while they hold, removed when they
do not, and never both at once. `lastTransitionTime` moves only when a
condition's status changes (Flux's `conditions.Set`).
"""
from __future__ import annotations

import datetime
from typing import Literal

from controller.models import Condition, PandaDeployStatus, Phase, StageName

READY = 'Ready'
RECONCILING = 'Reconciling'
STALLED = 'Stalled'
STAGE_TYPES = tuple(name.value for name in StageName)

Status = Literal['True', 'False', 'Unknown']


def now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.timezone.utc).replace(microsecond=0)


def get(status: PandaDeployStatus, type: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type), None)


def set_condition(status: PandaDeployStatus, *, type: str, value: Status, reason: str, message: str,
                  generation: int | None) -> None:
    """Add or update one condition; keep lastTransitionTime unless the status flips."""
    old = get(status, type)
    since = old.last_transition_time if old is not None and old.status == value else now()
    new = Condition(type=type, status=value, reason=reason, message=message,
                    observed_generation=generation, last_transition_time=since)
    others = [c for c in status.conditions if c.type != type]
    status.conditions = _ordered(others + [new])


def remove(status: PandaDeployStatus, *types: str) -> None:
    status.conditions = [c for c in status.conditions if c.type not in types]


def _ordered(conditions: list[Condition]) -> list[Condition]:
    order = {t: i for i, t in enumerate((READY, RECONCILING, STALLED) + STAGE_TYPES)}
    return sorted(conditions, key=lambda c: order.get(c.type, len(order)))


def summarise(status: PandaDeployStatus, *, reason: str, message: str, generation: int | None,
              stalled: bool = False) -> None:
    """Set Ready, Reconciling and Stalled from the phase (the one place that computes Ready)."""
    phase = status.phase
    if stalled:
        remove(status, RECONCILING)
        set_condition(status, type=STALLED, value='True', reason=reason, message=message, generation=generation)
        set_condition(status, type=READY, value='False', reason=reason, message=message, generation=generation)
        return
    remove(status, STALLED)
    if phase in (Phase.pending, Phase.progressing):
        set_condition(status, type=RECONCILING, value='True', reason=reason, message=message, generation=generation)
        set_condition(status, type=READY, value='Unknown', reason=reason, message=message, generation=generation)
    else:
        remove(status, RECONCILING)
        value: Status = 'True' if phase == Phase.succeeded else 'False'
        set_condition(status, type=READY, value=value, reason=reason, message=message, generation=generation)
