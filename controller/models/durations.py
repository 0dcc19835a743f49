"""Durations in a spec: whole seconds, or Go's duration syntax (`10m`, `1h30m`), as the CRD's CEL
`duration()` reads them."""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated

from pydantic import Field

# Go's time.ParseDuration syntax, which the CRD's CEL rule parses with duration(); at most three decimals,
# so that every value is a whole number of microseconds and no parser rounds it differently.
_DURATION = r'^([0-9]+(\.[0-9]{1,3})?(ms|s|m|h))+$'
_DURATION_UNITS = {'ms': Fraction(1, 1000), 's': Fraction(1), 'm': Fraction(60), 'h': Fraction(3600)}


def duration_seconds(value: int | str) -> float:
    """Seconds of an integer or a Go-style duration such as '10m' or '1h30m'."""
    return float(exact_seconds(value))


def exact_seconds(value: int | str) -> Fraction:
    """Seconds as an exact fraction (float sums such as 0.1h + 0.2h land beside a bound, not on it)."""
    if isinstance(value, int):
        return Fraction(value)
    return sum((Fraction(n) * _DURATION_UNITS[u] for n, u in re.findall(r'([0-9.]+)(ms|s|m|h)', value)),
               Fraction(0))


_MAX_DURATION_SECONDS = 7 * 86400
_DURATION_INT = Annotated[int, Field(ge=1, le=_MAX_DURATION_SECONDS, strict=True)]
_DURATION_STR = Annotated[str, Field(pattern=_DURATION, max_length=32)]
_INT_OR_STRING = Field(json_schema_extra={'x-kubernetes-int-or-string': True})
Duration = Annotated[_DURATION_INT | _DURATION_STR, _INT_OR_STRING]
OptionalDuration = Annotated[_DURATION_INT | _DURATION_STR | None, _INT_OR_STRING]  # one anyOf, as the CRD needs
