"""The predefined ECS deployment configurations and how each moves production traffic."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrafficRouting:
    """How AllowTraffic moves production traffic: all at once, or canary/linear steps of percent per minutes."""

    kind: str = 'AllAtOnce'  # AllAtOnce | TimeBasedCanary | TimeBasedLinear
    percent: int = 100
    minutes: int = 0

    def steps(self) -> list[tuple[int, int]]:
        """(green weight in percent, minutes to hold it) in order; the last step is (100, 0)."""
        if self.kind == 'TimeBasedCanary':
            return [(self.percent, self.minutes), (100, 0)]
        if self.kind == 'TimeBasedLinear':
            weights = list(range(self.percent, 100, self.percent))
            return [(w, self.minutes) for w in weights] + [(100, 0)]
        return [(100, 0)]

    def serialise(self) -> dict[str, Any]:
        """The ``trafficRoutingConfig`` of GetDeploymentConfig."""
        if self.kind == 'TimeBasedCanary':
            return {'type': self.kind, 'timeBasedCanary': {'canaryPercentage': self.percent,
                                                           'canaryInterval': self.minutes}}
        if self.kind == 'TimeBasedLinear':
            return {'type': self.kind, 'timeBasedLinear': {'linearPercentage': self.percent,
                                                           'linearInterval': self.minutes}}
        return {'type': 'AllAtOnce'}


#: The predefined ECS deployment configurations (custom ones are not simulated).
ECS_DEPLOYMENT_CONFIGS: Mapping[str, TrafficRouting] = {
    'CodeDeployDefault.ECSAllAtOnce': TrafficRouting(),
    'CodeDeployDefault.ECSLinear10PercentEvery1Minutes': TrafficRouting(kind='TimeBasedLinear', percent=10, minutes=1),
    'CodeDeployDefault.ECSLinear10PercentEvery3Minutes': TrafficRouting(kind='TimeBasedLinear', percent=10, minutes=3),
    'CodeDeployDefault.ECSCanary10Percent5Minutes': TrafficRouting(kind='TimeBasedCanary', percent=10, minutes=5),
    'CodeDeployDefault.ECSCanary10Percent15Minutes': TrafficRouting(kind='TimeBasedCanary', percent=10, minutes=15),
}
DEFAULT_ECS_CONFIG = 'CodeDeployDefault.ECSAllAtOnce'
#: moto gives every deployment group this default, whatever its compute platform.
MOTO_DEFAULT_CONFIG = 'CodeDeployDefault.OneAtATime'
