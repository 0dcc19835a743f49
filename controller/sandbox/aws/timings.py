"""How fast simulated time moves.

Time moves on its own: a background thread advances every deployment; each
step lasts :attr:`Timings.step_seconds` (0.5 s by default) and a "minute" of
``waitTimeInMinutes`` and friends lasts :attr:`Timings.minute_seconds`: for ECS
service deployments too (``bakeTimeInMinutes``, ``canaryBakeTimeInMinutes``,
``stepBakeTimeInMinutes``, a hook's ``timeoutInMinutes``; a Lambda hook's
``callBackDelay`` seconds are sixtieths of it).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timings:
    """How fast simulated time moves."""

    step_seconds: float = 0.5  # Created -> InProgress, and each lifecycle event without a hook
    minute_seconds: float = 60.0  # one minute of waitTimeInMinutes, terminationWaitTimeInMinutes, canary/linear
    hook_timeout_minutes: float = 60.0  # AWS fails a hook that does not report within an hour
    auto_hook_seconds: float = 0.5  # with auto_hooks (or no on_lambda_hook), how long a hook takes to succeed
    tick_seconds: float = 0.02  # how often the background thread advances deployments
