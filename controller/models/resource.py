"""The whole PandaDeploy object, and validation errors told as field paths."""
from __future__ import annotations

import re
from typing import Any, Literal

import pydantic
from pydantic import ConfigDict

from controller.models.base import API_VERSION, KIND, Model
from controller.models.spec import PandaDeploySpec
from controller.models.status import PandaDeployStatus


class PandaDeploy(Model):
    """Builds a git repository's Dockerfile, pushes to ECR and rolls it out on ECS with a CodeDeploy Blue/Green switch."""
    model_config = ConfigDict(extra='ignore')
    api_version: Literal['deploy.panda.dev/v1alpha1'] = API_VERSION  # type: ignore[assignment]
    kind: Literal['PandaDeploy'] = KIND  # type: ignore[assignment]
    metadata: dict[str, Any] = {}
    spec: PandaDeploySpec
    status: PandaDeployStatus | None = None


_UNION_TAG = re.compile(r'^(int|str|float|bool|constrained-\w+|function-\w+.*|.*\[.*\])$')


def describe_validation_error(exc: pydantic.ValidationError, *, root: str = 'spec') -> str:
    """'spec.timeouts.stageSeconds: ...; spec.source: ...' from a pydantic error, one entry per field."""
    by_path: dict[str, list[str]] = {}
    for error in exc.errors():
        location = [str(p) for p in error['loc'] if not _UNION_TAG.match(str(p))]
        path = '.'.join([root, *location]) if location else root
        message = error['msg'].removeprefix('Value error, ')
        if message.startswith(f'{root}.') and ' ' in message:  # a model-level check that names its own field
            path, message = message.split(' ', 1)
        if message not in by_path.setdefault(path, []):
            by_path[path].append(message)
    return '; '.join(f'{path}: {" or ".join(messages)}' for path, messages in by_path.items())
