"""The per-namespace RoleBinding install: a Secret the operator may not read stalls with its own reason.

With `deploy/manifests/namespaced-secrets`, the operator reads Secrets only in
namespaces where a platform team bound the `panda-deploy-secrets` Role; in any
other, the API server answers 403. The emulator has no RBAC, so this test
makes it answer 403 to one Secret (kmock's fault-injection DSL, no emulator
change) for as long as `denied` is set: the operator process must stall the
resource with `SecretForbidden` (a status, a Warning Event), not leave it
without status, and recover by itself once the read is allowed again.
"""
from __future__ import annotations

import threading
import time

from tests.e2e.conftest import Cluster, Operator, wait_for
from tests.e2e.test_operator import SECRETS, SPEC

# What a real API server answers when RBAC denies the read.
FORBIDDEN = {
    'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Failure', 'reason': 'Forbidden', 'code': 403,
    'details': {'name': 'aws-creds', 'kind': 'secrets'},
    'message': 'secrets "aws-creds" is forbidden: User "system:serviceaccount:panda-deploy:panda-deploy" '
               'cannot get resource "secrets" in API group "" in the namespace "default"',
}


def test_a_secret_the_operator_may_not_read_stalls_with_secret_forbidden(cluster: Cluster, operator: Operator):
    cluster.apply_secrets(**SECRETS)
    denied = threading.Event()
    denied.set()
    cluster.emulator['get /api/v1/namespaces/default/secrets/aws-creds'][lambda _: denied.is_set()] \
        << 403 << FORBIDDEN
    cluster.create('app', SPEC)

    wait_for(lambda: cluster.condition('app', 'Stalled'), what='Stalled')
    stalled = cluster.condition('app', 'Stalled')
    assert stalled['status'] == 'True' and stalled['reason'] == 'SecretForbidden'
    assert stalled['message'] == (
        "the operator may not read Secret 'aws-creds' in namespace 'default' (HTTP 403); "
        'bind the panda-deploy-secrets Role in this namespace, see README (Install)')
    status = cluster.status('app')
    assert status['phase'] == 'Pending' and status['observedGeneration'] == 1
    assert cluster.condition('app', 'Ready')['status'] == 'False'
    assert cluster.condition('app', 'Ready')['reason'] == 'SecretForbidden'
    time.sleep(3)  # retried with backoff; the retries write nothing new
    events = cluster.events('app')
    assert [(e['type'], e['reason']) for e in events] == [('Warning', 'SecretForbidden')]
    assert 'e2e-secret' not in str(cluster.get('app')), 'no Secret value in the resource'

    denied.clear()   # the platform team applied the RoleBinding
    wait_for(lambda: cluster.ready('app'), timeout=60, what='Ready once the Secret may be read')
    assert cluster.condition('app', 'Stalled') is None
