"""Names of the resource, the patterns its fields obey, and the base of every model."""
from __future__ import annotations

import logging
import re
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

# What logs a run: Kopf hands each handler a LoggerAdapter that tags lines with the object.
Logger = logging.Logger | logging.LoggerAdapter[Any]

GROUP = 'deploy.panda.dev'
VERSION = 'v1alpha1'
KIND = 'PandaDeploy'
PLURAL = 'pandadeploys'
SINGULAR = 'pandadeploy'
SHORT_NAMES = ('pd',)
API_VERSION = f'{GROUP}/{VERSION}'
PROMOTE_ANNOTATION = f'{GROUP}/promote'  # value: the deploymentId of the one run whose manual promotion may go on
REQUESTED_AT_ANNOTATION = f'{GROUP}/requestedAt'  # any new value: a run now at the branch head
ABORT_ANNOTATION = f'{GROUP}/abort'  # value: the deploymentId of the run to stop with rollback (Failed, Aborted)
UNDO_ANNOTATION = f'{GROUP}/undo'  # value: the deploymentId of a succeeded run in status.history to go back to
RETRY_ANNOTATION = f'{GROUP}/retry'  # value: the deploymentId of the failed run to run again at its revision
DEPLOYMENT_ID = re.compile(r'dep_[a-z0-9]{10}')  # a run's id (status.deploymentId), as the recorder makes them

# Kubernetes object names (DNS-1123 subdomain) and Secret keys.
_DNS_NAME = r'^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$'
_SECRET_KEY = r'^[-._a-zA-Z0-9]+$'
_GITHUB_REPO = r'^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$'
# What no URL, branch or path may contain: any Unicode space or separator and any control character.
# Spelt out rather than \s, which is [\t\n\f\r ] in Go's RE2 (the API server) but every Unicode space in
# pydantic's Rust regex: with \s a no-break space passed admission and was refused by the operator.
# \p{Z} is the same class in both engines; \x7f-\x9f adds DEL and the C1 controls (U+0085 among them).
_NO_SPACE = r'\p{Z}\x00-\x20\x7f-\x9f'
# A user name may appear (ssh://git@host/...), a password may not: tokens belong in tokenSecretRef.
_GIT_URL = rf'^(https?|file|ssh|git)://(?:[^/:@{_NO_SPACE}]+@)?[^@{_NO_SPACE}]+$'
_SHA = r'^[0-9a-f]{7,40}$'
_BRANCH = rf'^[^~^:?*\[\\{_NO_SPACE}]+$'
_ECR_REPO = r'^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$'
_ECR_REPO_LENGTH = (2, 256)
_AWS_REGION = r'^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]+$'
_ROLE_ARN = r'^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$'
_ARN_LENGTH = 2048  # IAM's and Elastic Load Balancing's limit on an ARN
_HTTP_URL = rf'^https?://[^{_NO_SPACE}]+$'
_HTTP_PATH = rf'^/[^{_NO_SPACE}]*$'
# Free text that reaches files, AWS names, logs and terminals: no control characters.
_TEXT = r'^[^\x00-\x1f\x7f]*$'


MESSAGE_LIMIT = 1024
"""Characters of any message in status, conditions and Events (Kubernetes cuts Event messages at 1 KiB too)."""
_CONTROL = re.compile(r'[\x00-\x08\x0b-\x1f\x7f]')


def cap_message(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` in at most `limit` characters: its beginning (what failed) and its end (the last words of a
    log) around a note of what was cut; control characters other than newline and tab become spaces."""
    text = _CONTROL.sub(' ', text)
    if len(text) <= limit:
        return text
    marker = f' … [{len(text) - limit} characters cut] … '
    marker = f' … [{len(text) - limit + len(marker)} characters cut] … '
    keep = max(0, limit - len(marker))
    head = keep * 2 // 5
    return text[:head] + marker + text[len(text) - (keep - head):]


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields refused, names in Python."""
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra='forbid',
        use_attribute_docstrings=True,
        validate_assignment=True,
    )

    def dump(self) -> dict[str, Any]:
        """The wire form: camelCase keys, no unset or None values."""
        return self.model_dump(mode='json', by_alias=True, exclude_none=True)
