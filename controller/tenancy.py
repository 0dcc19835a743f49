"""Which AWS identity a run may act as: decided from what a cluster admin set on the Namespace.

Tenants can edit their own PandaDeploys and Secrets; only cluster admins can
edit Namespaces and the operator's Deployment. So the operator's own AWS
identity (IRSA, or whatever the default chain finds) is power a tenant was
never given: a resource without `spec.aws.credentialsSecretRef` may use it
only where a cluster admin said so on the Namespace, as ACK's cross-account
resource management lets an admin's Namespace annotation pick the role for
every resource in it:

- `deploy.panda.dev/allow-operator-identity: "true"`: resources here may act
  as the operator itself (and assume `spec.aws.roleArn` from it).
- `deploy.panda.dev/aws-role-arn: <role ARN>`: the namespace is pinned to
  that role. Every resource here assumes it first, from the operator's
  identity; `spec.aws.roleArn` is then assumed from the pinned role (role
  chaining), never from the operator. A resource that brings its own keys
  (`credentialsSecretRef`) stalls: the pin wins, as in ACK, where the
  namespace's role applies to every resource in it and nothing on a resource
  overrides it, and a Secret is never silently ignored.

Elsewhere such a resource stalls with `OperatorIdentityNotAllowed`. Role
sessions are named `panda-deploy@<namespace>.<name>`, so CloudTrail tells
tenants apart. `panda-deploy run` has no cluster and no Namespace: it runs
with the credentials of whoever starts it, so it may use them (`annotations`
None). The decision is made once, before a run; an annotation changed later
applies to the next run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Mapping

from controller import credentials
from controller.errors import Reason, Stall
from controller.models import Aws, PandaDeploySpec

ALLOW_OPERATOR_IDENTITY = 'deploy.panda.dev/allow-operator-identity'
ROLE_ARN = 'deploy.panda.dev/aws-role-arn'
SESSION_PREFIX = 'panda-deploy@'
SESSION_NAME_LIMIT = 64  # STS RoleSessionName: 2-64 characters of [\w+=,.@-]
_ROLE_ARN_PATTERN = re.compile(r'arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}', re.ASCII)
_NOT_IN_SESSION_NAME = re.compile(r'[^\w+=,.@-]', re.ASCII)


@dataclasses.dataclass(frozen=True)
class AssumedRole:
    arn: str
    source: str
    """Who asked for it, for messages: `spec.aws.roleArn`, or the Namespace annotation."""


@dataclasses.dataclass(frozen=True)
class AwsIdentity:
    """Who a run acts as in AWS: its base credentials (the Secret's keys, else the operator's own),
    then each role in `roles` assumed in turn from the one before, in sessions named `session_name`."""
    roles: tuple[AssumedRole, ...]
    session_name: str


@dataclasses.dataclass(frozen=True)
class NamespaceSettings:
    """What a cluster admin set on the resource's Namespace."""
    namespace: str
    allow_operator_identity: bool = False
    role_arn: str | None = None

    @classmethod
    def from_annotations(cls, namespace: str, annotations: Mapping[str, str]) -> NamespaceSettings:
        """Read the annotations; a pin that is not an IAM role ARN stalls (fail closed)."""
        allow = str(annotations.get(ALLOW_OPERATOR_IDENTITY, '')).strip().lower() == 'true'
        role = str(annotations.get(ROLE_ARN, '')).strip() or None
        if role is not None and not _ROLE_ARN_PATTERN.fullmatch(role):
            raise Stall(f'Namespace {namespace!r}: annotation {ROLE_ARN} is {role[:200]!r}, not an IAM role ARN '
                        f'(arn:aws:iam::<account>:role/<name>); a cluster admin must correct it',
                        reason=Reason.NAMESPACE_ROLE_INVALID)
        return cls(namespace=namespace, allow_operator_identity=allow, role_arn=role)


def session_name(namespace: str, name: str) -> str:
    """`panda-deploy@<namespace>.<name>`, within STS's 64 characters and character set; a longer one is cut
    and ends in a hash of the whole, so long names of two resources still differ."""
    full = _NOT_IN_SESSION_NAME.sub('-', f'{SESSION_PREFIX}{namespace}.{name}')
    if len(full) <= SESSION_NAME_LIMIT:
        return full
    digest = hashlib.sha256(f'{namespace}/{name}'.encode()).hexdigest()[:10]
    return f'{full[:SESSION_NAME_LIMIT - len(digest) - 1]}-{digest}'


def aws_identity(aws: Aws, settings: NamespaceSettings | None, *, name: str, namespace: str) -> AwsIdentity:
    """The identity a resource's runs act as in AWS, or a `Stall` saying why it may have none.

    `settings` None: no cluster (`panda-deploy run`), so the caller's own credentials are allowed.
    """
    own_keys = aws.credentials_secret_ref is not None
    spec_role = (AssumedRole(aws.role_arn, 'spec.aws.roleArn'),) if aws.role_arn else ()
    session = session_name(namespace, name)
    if settings is None:
        return AwsIdentity(roles=spec_role, session_name=session)
    if settings.role_arn is not None:
        if own_keys:
            raise Stall(f'Namespace {namespace!r} is pinned to AWS role {settings.role_arn} by a cluster admin '
                        f'(annotation {ROLE_ARN}): every resource in it acts as that role, so '
                        f'spec.aws.credentialsSecretRef is not allowed here; remove it, or ask a cluster admin '
                        f'to remove the pin', reason=Reason.CREDENTIALS_SECRET_NOT_ALLOWED)
        pinned = AssumedRole(settings.role_arn, f'Namespace {namespace} annotation {ROLE_ARN}')
        chained = tuple(role for role in spec_role if role.arn != pinned.arn)
        return AwsIdentity(roles=(pinned, *chained), session_name=session)
    if own_keys:
        return AwsIdentity(roles=spec_role, session_name=session)
    if not settings.allow_operator_identity:
        raise Stall(f"spec.aws.credentialsSecretRef is not set, and Namespace {namespace!r} does not allow the "
                    f"operator's own AWS identity; set spec.aws.credentialsSecretRef to a Secret with your "
                    f'AWS keys, or ask a cluster admin to annotate the Namespace with '
                    f'{ALLOW_OPERATOR_IDENTITY}="true" or pin it to a role with {ROLE_ARN}',
                    reason=Reason.OPERATOR_IDENTITY_NOT_ALLOWED)
    return AwsIdentity(roles=spec_role, session_name=session)


def resolve(spec: PandaDeploySpec, *, namespace: str, name: str, lookup: credentials.SecretLookup,
            annotations: Callable[[], Mapping[str, str]] | None) -> credentials.Credentials:
    """The run's credentials with its AWS identity: the Namespace's settings first (read through
    `annotations`; None: no cluster), then the Secrets the spec names (not read when the identity stalls)."""
    settings = None
    if annotations is not None:
        try:
            found = annotations()
        except Exception as exc:  # the API refused or failed (kube.KubeError): fail closed, and say so
            raise Stall(f'cannot read Namespace {namespace!r} to learn which AWS identity it allows: {exc}; '
                        f'the operator needs get on namespaces (deploy/manifests/rbac.yaml)',
                        reason=Reason.NAMESPACE_UNREADABLE) from exc
        settings = NamespaceSettings.from_annotations(namespace, found)
    identity = aws_identity(spec.aws, settings, name=name, namespace=namespace)
    return dataclasses.replace(credentials.resolve(spec, lookup), aws_identity=identity)
