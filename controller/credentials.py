"""Secret values the run needs, resolved once from the referenced Secrets.

Values are held in objects whose repr hides them, and every message that
leaves the operator (status, events, logs) passes through `redact`, which
blanks the known values and anything that looks like a credential.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from controller.errors import Reason, Stall
from controller.models import PandaDeploySpec, SecretKeyRef

if TYPE_CHECKING:
    from controller.tenancy import AwsIdentity

# Secret name -> its decoded data, or None when the Secret does not exist.
SecretLookup = Callable[[str], Mapping[str, str] | None]

AWS_KEYS = ('accessKeyId', 'secretAccessKey')
AWS_OPTIONAL_KEYS = ('sessionToken',)


@dataclasses.dataclass(frozen=True)
class AwsKeys:
    access_key_id: str = dataclasses.field(repr=False)
    secret_access_key: str = dataclasses.field(repr=False)
    session_token: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What the adapters authenticate with. None means: not configured (anonymous git, default AWS chain)."""
    github_token: str | None = dataclasses.field(default=None, repr=False)
    aws: AwsKeys | None = dataclasses.field(default=None, repr=False)
    aws_identity: AwsIdentity | None = None
    """The roles to assume and the session name (controller/tenancy.py); None: spec.aws.roleArn as given."""
    webhook_key: str | None = dataclasses.field(default=None, repr=False)
    """The HMAC key of spec.notify.webhook (its secretRef)."""

    def values(self) -> list[str]:
        found = [self.github_token, self.webhook_key]
        if self.aws:
            found += [self.aws.access_key_id, self.aws.secret_access_key, self.aws.session_token]
        return [v for v in found if v]


def resolve(spec: PandaDeploySpec, lookup: SecretLookup) -> Credentials:
    """Read the Secrets the spec references; a missing Secret or key is a `Stall` naming the field."""
    ref = spec.source.token_secret_ref
    token = None if ref is None else _secret_key(lookup, ref, 'spec.source.tokenSecretRef')

    aws: AwsKeys | None = None
    aref = spec.aws.credentials_secret_ref
    if aref is not None:
        data = lookup(aref.name)
        if data is None:
            raise Stall(f'spec.aws.credentialsSecretRef: Secret {aref.name!r} not found',
                        reason=Reason.SECRET_NOT_FOUND)
        missing = [key for key in AWS_KEYS if not data.get(key)]
        if missing:
            raise Stall(f'spec.aws.credentialsSecretRef: Secret {aref.name!r} has no key {missing[0]!r}',
                        reason=Reason.SECRET_KEY_NOT_FOUND)
        aws = AwsKeys(data['accessKeyId'].strip(), data['secretAccessKey'].strip(),
                      (data.get('sessionToken') or '').strip() or None)
    return Credentials(github_token=token, aws=aws, webhook_key=_webhook_key(spec, lookup))


def _webhook_key(spec: PandaDeploySpec, lookup: SecretLookup) -> str | None:
    """The signing key of spec.notify.webhook, or None without a webhook."""
    webhook = spec.notify.webhook
    return None if webhook is None else _secret_key(lookup, webhook.secret_ref, 'spec.notify.webhook.secretRef')


def _secret_key(lookup: SecretLookup, ref: SecretKeyRef, field: str) -> str:
    """One key of a Secret; a missing Secret or key is a `Stall` naming the field."""
    data = lookup(ref.name)
    if data is None:
        raise Stall(f'{field}: Secret {ref.name!r} not found', reason=Reason.SECRET_NOT_FOUND)
    if not data.get(ref.key):
        raise Stall(f'{field}: Secret {ref.name!r} has no key {ref.key!r}', reason=Reason.SECRET_KEY_NOT_FOUND)
    return data[ref.key].strip()


def credentials_used(spec: PandaDeploySpec, reason: str) -> str:
    """'; credentials used: …' for a message saying AWS or the git server refused credentials (their errors
    cannot say which ones were sent): the Secret and field they came from. Empty for other reasons."""
    if reason == Reason.INVALID_CREDENTIALS:
        ref = spec.aws.credentials_secret_ref
        used = (f'the keys in Secret {ref.name!r} (spec.aws.credentialsSecretRef)' if ref is not None
                else "the operator's own AWS identity (spec.aws.credentialsSecretRef is not set)")
        if spec.aws.role_arn:
            used += f', to assume spec.aws.roleArn {spec.aws.role_arn}'
    elif reason == Reason.SOURCE_AUTH_FAILED and spec.source.token_secret_ref is not None:
        token = spec.source.token_secret_ref
        used = f'key {token.key!r} of Secret {token.name!r} (spec.source.tokenSecretRef)'
    else:
        return ''
    return f'; credentials used: {used}'


# Shapes of credentials that may turn up in external error text: (pattern, replacement).
_CREDENTIAL_PATTERNS = [
    (re.compile(r'\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})'), '***'),
    (re.compile(r'\b(?:AKIA|ASIA)[0-9A-Z]{16}\b'), '***'),
    (re.compile(r'(?i)\b(authorization:\s*)(?:basic|bearer|token)\s+[^\s,;]+'), r'\1***'),
    (re.compile(r'(?i)\b((?:password|secret|token|signature)["\']?\s*[=:]\s*["\']?)[^\s"\',;&]+'), r'\1***'),
    (re.compile(r'(://[^/\s:@]+:)[^@\s/]+@'), r'\1***@'),
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Blank known secret values and credential-looking strings."""
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, '***')
    for pattern, replacement in _CREDENTIAL_PATTERNS:
        text = pattern.sub(replacement, text)
    return text
