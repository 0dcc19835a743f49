"""A signed JSON notification of a run's start or end, POSTed to the URL of `spec.notify.webhook` (chat tools).

The body is JSON (see `payload`); the header `X-Panda-Signature-256:
sha256=HEX` is the HMAC-SHA256 of the exact body bytes with the key in
`spec.notify.webhook.secretRef`, as GitHub signs its own webhooks, so a
receiver checks it the same way (constant-time compare). `timestamp` in the
body and the `X-Panda-Delivery` id let it refuse replays.

The URL is the tenant's, and the operator connects from inside the cluster, so
where it may go is the operator's configuration (read by `controller.config`):
PANDA_DEPLOY_WEBHOOK_HOSTS lists the allowed origins, in PANDA_DEPLOY_GIT_HOSTS'
syntax (`host` for https on 443, `https://host:port`, `http://host:port`, a
port of `*` for any); empty by default, so no webhook goes anywhere until a
cluster admin allows a host. Whatever the list says, no address in the
health-check deny-list or link-local (169.254.0.0/16, where cloud metadata
answers) is ever connected to.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping

from controller.adapters.post import judge, post
from controller.egress import DeniedNetworks

WEBHOOK_HOSTS_VARIABLE = 'PANDA_DEPLOY_WEBHOOK_HOSTS'
SIGNATURE_HEADER = 'X-Panda-Signature-256'
MESSAGE_LIMIT = 1024


def signature(key: str, body: bytes) -> str:
    """The X-Panda-Signature-256 value of `body`: `sha256=` and the hex HMAC-SHA256 with `key`."""
    return 'sha256=' + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


@dataclasses.dataclass(frozen=True)
class Webhook:
    """The webhook of one resource: its URL and signing key."""
    url: str
    key: str = dataclasses.field(repr=False)
    denied: DeniedNetworks = dataclasses.field(default_factory=DeniedNetworks.default)
    deadline: float = 10.0

    def send(self, payload: Mapping[str, object], *, event: str) -> None:
        """POST `payload` signed; `PostFailed` (retryable or not) unless the receiver answers 2xx."""
        body = json.dumps(payload, separators=(',', ':')).encode()
        headers = {'Content-Type': 'application/json', 'User-Agent': 'panda-deploy',
                   'X-Panda-Event': event, 'X-Panda-Delivery': str(uuid.uuid4()),
                   SIGNATURE_HEADER: signature(self.key, body)}
        judge(post(self.url, body=body, headers=headers, denied=self.denied, deadline=self.deadline),
              what='webhook')
