"""What a platform team installs, checked without a cluster: deploy/manifests.

- Least privilege: no wildcard, Secrets get-only, and the operator's
  ServiceAccount holds exactly the permissions that the code and Kopf use
  (the code's Kubernetes calls are found by reading controller/ with `ast`).
- The operator's Deployment is hardened (non-root, read-only root filesystem,
  no privilege escalation, no capabilities, resources, /healthz probes).
- Every object validates against the Kubernetes OpenAPI schemas of each
  Kubernetes version from MIN_KUBERNETES to the newest that the
  `kubernetes-validate` package bundles (strict: unknown fields fail); custom
  resources against their CRD in the manifests, the ServiceMonitor against a
  subset of the Prometheus Operator's schema kept here.
- Each kustomization lists every file beside it, every reference resolves, and
  patches hit an object; where `kubectl` (kustomize >= v4) is on PATH the base
  and each component really build, and the built output passes the same checks.
"""
from __future__ import annotations

import ast
import copy
import json
import os
import pathlib
import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterable, Iterator
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / 'deploy' / 'manifests'
CRDS = ROOT / 'crds'
CONTROLLER = ROOT / 'controller'

NAMESPACE = 'panda-deploy'
SERVICE_ACCOUNT = 'panda-deploy'
OPERATOR_CONTAINER = 'operator'
HTTP_PORT = 8080
HOOKS_PORT = 9292
GROUP = 'deploy.panda.dev'
PLURAL = 'pandadeploys'
MIN_KUBERNETES = '1.29'   # CEL validation rules in the CRD are GA from 1.29

# Components (subdirectories of the base) and the containers each may add
# that are allowed to be privileged. Nothing else may be.
COMPONENTS = ('peering', 'dind', 'namespaced-secrets', 'codebuild')
PRIVILEGED_SIDECARS = {'dind': {'dind'}}

WRITE_VERBS = {'create', 'update', 'patch', 'delete', 'deletecollection'}
DANGEROUS_VERBS = {'escalate', 'bind', 'impersonate'}

Perm = tuple[str, str, str]   # (apiGroup, resource, verb)


def perms(group: str, resource: str, *verbs: str) -> set[Perm]:
    return {(group, resource, verb) for verb in verbs}


# What the operator's ServiceAccount must hold in the base, each with its reason.
# test_base_grants_exactly_what_is_needed compares the bound roles with this
# table, and test_rbac_matches_the_code compares this table with the code.
EXPECTED: dict[str, set[Perm]] = {
    'Kopf: notices the CRD being installed or changed while running':
        perms('apiextensions.k8s.io', 'customresourcedefinitions', 'list', 'watch'),
    'Kopf: watch stream of PandaDeploys; patch for its finalizer and annotations':
        perms(GROUP, PLURAL, 'list', 'watch', 'patch'),
    'operator: Kube.get re-reads a PandaDeploy':
        perms(GROUP, PLURAL, 'get'),
    'operator: Kube.patch_status writes the run into status':
        perms(GROUP, f'{PLURAL}/status', 'patch'),
    'operator: Kube.post_event posts core/v1 Events':
        perms('', 'events', 'create'),
    'operator: Kube.read_secret reads the named Secrets':
        perms('', 'secrets', 'get'),
    'operator: Kube.namespace_annotations reads the AWS identity a cluster admin allows in a namespace':
        perms('', 'namespaces', 'get'),
}
PEERING: set[Perm] = perms('kopf.dev', 'clusterkopfpeerings', 'list', 'watch', 'patch')
SECRET_GET: set[Perm] = perms('', 'secrets', 'get')
TENANT = MANIFESTS / 'namespaced-secrets' / 'tenant'   # applied per tenant namespace, not part of a build
NAMESPACE_WATCH: set[Perm] = perms('', 'namespaces', 'list', 'watch')


# ---------------------------------------------------------------- loading

def load_yaml(path: pathlib.Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def yaml_files(root: pathlib.Path = MANIFESTS) -> list[pathlib.Path]:
    return sorted(p for p in root.rglob('*') if p.suffix in ('.yaml', '.yml') and p.is_file())


def kustomization_dirs() -> list[pathlib.Path]:
    return sorted({p.parent for p in yaml_files() if p.name == 'kustomization.yaml'} | {CRDS})


def kustomization(directory: pathlib.Path) -> dict[str, Any]:
    (doc,) = load_yaml(directory / 'kustomization.yaml')
    return doc


def references(kust: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(resources, patch paths, components) named by a kustomization."""
    patches = [p['path'] for p in kust.get('patches') or [] if 'path' in p]
    return list(kust.get('resources') or []), patches, list(kust.get('components') or [])


def resource_objects(directory: pathlib.Path) -> list[dict[str, Any]]:
    """The complete objects a kustomization directory contributes (recursing
    into directories it lists), before any transformation."""
    resources, _, _ = references(kustomization(directory))
    found: list[dict[str, Any]] = []
    for ref in resources:
        path = (directory / ref).resolve()
        found.extend(resource_objects(path) if path.is_dir() else load_yaml(path))
    return found


def base_objects() -> list[dict[str, Any]]:
    """The base as kustomize builds it, for the transformations it uses: the
    `namespace:` field set on namespaced objects. (Its build is compared with
    this by test_kubectl_builds_the_base where kubectl exists.)"""
    kust = kustomization(MANIFESTS)
    cluster_scoped = {'Namespace', 'CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding'}
    objects = copy.deepcopy(resource_objects(MANIFESTS))
    for obj in objects:
        if obj['kind'] not in cluster_scoped and 'namespace' in kust:
            obj['metadata']['namespace'] = kust['namespace']
    return objects


def of_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get('kind') == kind]


def the(objects: Iterable[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f'expected one {kind}, found {len(found)}'
    return found[0]


# ---------------------------------------------------------------- RBAC helpers

def rules(objects: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj.get('kind') in ('Role', 'ClusterRole'):
            for rule in obj.get('rules') or []:
                yield f'{obj["kind"]}/{obj["metadata"]["name"]}', rule


def granted(objects: list[dict[str, Any]], *, namespace: str = NAMESPACE,
            account: str = SERVICE_ACCOUNT) -> set[Perm]:
    """Every (group, resource, verb) that the bindings give the ServiceAccount."""
    roles = {(o['kind'], o['metadata']['name']): o for o in objects if o.get('kind') in ('Role', 'ClusterRole')}
    result: set[Perm] = set()
    for binding in objects:
        if binding.get('kind') not in ('RoleBinding', 'ClusterRoleBinding'):
            continue
        if not any(s.get('kind') == 'ServiceAccount' and s.get('name') == account
                   and s.get('namespace', binding['metadata'].get('namespace')) == namespace
                   for s in binding.get('subjects') or []):
            continue
        ref = binding['roleRef']
        role = roles.get((ref['kind'], ref['name']))
        assert role is not None, f'{binding["kind"]}/{binding["metadata"]["name"]} binds a role not in the manifests: {ref}'
        for rule in role.get('rules') or []:
            for group in rule.get('apiGroups') or []:
                for resource in rule.get('resources') or []:
                    for verb in rule.get('verbs') or []:
                        result.add((group, resource, verb))
    return result


def all_expected() -> set[Perm]:
    return set().union(*EXPECTED.values())


def describe(permissions: Iterable[Perm]) -> list[str]:
    return sorted(f'{verb} {group or "core"}/{resource}' for group, resource, verb in permissions)


# ---------------------------------------------------------------- (a) least privilege

def all_documents() -> list[tuple[pathlib.Path, dict[str, Any]]]:
    return [(path, doc) for path in yaml_files() for doc in load_yaml(path)]


def test_every_manifest_parses_and_names_its_kind() -> None:
    documents = all_documents()
    assert documents, f'no YAML under {MANIFESTS}'
    for path, doc in documents:
        assert isinstance(doc, dict), f'{path}: a document is not a mapping'
        assert doc.get('apiVersion') and doc.get('kind'), f'{path}: a document without apiVersion/kind'


def test_no_wildcards_in_any_role() -> None:
    checked = 0
    for path in yaml_files():
        for where, rule in rules(load_yaml(path)):
            checked += 1
            for field in ('apiGroups', 'resources', 'verbs', 'resourceNames', 'nonResourceURLs'):
                values = rule.get(field) or []
                assert not any('*' in str(v) for v in values), f'{path.name} {where}: wildcard in {field}: {values}'
            assert rule.get('verbs'), f'{path.name} {where}: a rule without verbs'
    assert checked >= 5, 'the RBAC rules were not found'
    for path, doc in all_documents():
        if doc['kind'] in ('Role', 'ClusterRole'):
            assert 'aggregationRule' not in doc, f'{path.name}: an aggregated role can grow without review'


def test_secrets_are_get_only() -> None:
    for path in yaml_files():
        for where, rule in rules(load_yaml(path)):
            resources = {r.split('/')[0] for r in rule.get('resources') or []}
            if '' in (rule.get('apiGroups') or []) and 'secrets' in resources:
                verbs = set(rule['verbs'])
                assert not verbs & WRITE_VERBS, f'{path.name} {where}: writes Secrets: {sorted(verbs & WRITE_VERBS)}'
                assert not verbs & {'list', 'watch'}, f'{path.name} {where}: lists/watches Secrets (get by name only)'
                assert verbs == {'get'}, f'{path.name} {where}: Secrets: {sorted(verbs)}'


def test_no_escalation_paths() -> None:
    for path in yaml_files():
        for where, rule in rules(load_yaml(path)):
            assert not set(rule['verbs']) & DANGEROUS_VERBS, f'{path.name} {where}: {rule["verbs"]}'
            assert 'rbac.authorization.k8s.io' not in (rule.get('apiGroups') or []), f'{path.name} {where}: touches RBAC'
            assert not {'pods/exec', 'pods/attach', 'nodes/proxy', 'serviceaccounts/token'} & set(rule.get('resources') or []), \
                f'{path.name} {where}: {rule["resources"]}'
            assert not rule.get('nonResourceURLs'), f'{path.name} {where}: nonResourceURLs'


def test_base_grants_exactly_what_is_needed() -> None:
    have = granted(base_objects())
    want = all_expected()
    assert not want - have, f'missing: {describe(want - have)}'
    assert not have - want, f'more than the operator needs: {describe(have - want)}'


def test_rbac_is_commented() -> None:
    """Each rule says what it serves: a comment line right above every rule."""
    checked = 0
    for path in yaml_files():
        if not any(doc.get('kind') in ('Role', 'ClusterRole') for doc in load_yaml(path)):
            continue
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if re.match(r'\s*- apiGroups:', line):
                checked += 1
                assert number and lines[number - 1].strip().startswith('#'), \
                    f'{path.relative_to(ROOT)}:{number + 1}: a rule without a comment above it'
    assert checked >= 5


# ---------------------------------------------------------------- (e) RBAC against the code

def _api_class(node: ast.AST) -> str | None:
    """`kubernetes.client.CoreV1Api(...)` -> 'CoreV1Api'."""
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name and name.endswith('Api') and name != 'ApiClient':
            return name
    return None


def kubernetes_calls() -> set[tuple[str, str, tuple[str, ...]]]:
    """(Api class, method, names of the arguments) for every call the
    operator's code (controller/, less the sandbox) makes with the Kubernetes
    client, whether called directly or passed to a retry helper."""
    calls: set[tuple[str, str, tuple[str, ...]]] = set()
    for path in sorted(CONTROLLER.rglob('*.py')):
        if 'sandbox' in path.relative_to(CONTROLLER).parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        attributes: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and (api := _api_class(node.value)):
                for target in node.targets:
                    if isinstance(target, ast.Attribute):
                        attributes[target.attr] = api
                    elif isinstance(target, ast.Name):
                        attributes[target.id] = api
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            args = [*node.args, *(k.value for k in node.keywords)]
            names = tuple(a.id for a in args if isinstance(a, ast.Name))
            for candidate in [node.func, *args]:
                if not isinstance(candidate, ast.Attribute):
                    continue
                holder = candidate.value
                holder_name = holder.attr if isinstance(holder, ast.Attribute) else holder.id if isinstance(holder, ast.Name) else None
                api = attributes.get(holder_name or '') or _api_class(holder)
                if api:
                    calls.add((api, candidate.attr, names))
        for match in re.finditer(r'\b(\w+Api)\(', path.read_text()):
            assert match.group(1) in ('CoreV1Api', 'CustomObjectsApi'), \
                f'{path.name}: {match.group(1)} is new here: teach kubernetes_calls/permission_of its methods'
    return calls


VERB_OF = {'read': 'get', 'get': 'get', 'list': 'list', 'create': 'create', 'patch': 'patch',
           'replace': 'update', 'delete': 'delete', 'delete_collection': 'deletecollection'}
CORE_PLURALS = {'event': 'events', 'secret': 'secrets', 'config_map': 'configmaps', 'pod': 'pods',
                'namespace': 'namespaces', 'service': 'services', 'service_account': 'serviceaccounts'}


def permission_of(api: str, method: str, names: tuple[str, ...]) -> Perm:
    verb_part = next((v for v in sorted(VERB_OF, key=len, reverse=True) if method.startswith(v + '_')), None)
    assert verb_part, f'{api}.{method}: unknown verb'
    rest = method[len(verb_part) + 1:]
    status = rest.endswith('_status')
    rest = rest.removesuffix('_status').removeprefix('namespaced_').removesuffix('_for_all_namespaces')
    if api == 'CustomObjectsApi':
        assert rest in ('custom_object', 'cluster_custom_object'), f'{api}.{method}: unknown'
        assert 'GROUP' in names and 'PLURAL' in names, f'{api}.{method} is called for something other than {PLURAL}: {names}'
        return GROUP, PLURAL + ('/status' if status else ''), VERB_OF[verb_part]
    assert api == 'CoreV1Api', api
    assert rest in CORE_PLURALS, f'{api}.{method}: teach CORE_PLURALS the plural of {rest!r}'
    return '', CORE_PLURALS[rest] + ('/status' if status else ''), VERB_OF[verb_part]


def kopf_needs(args: list[str]) -> set[Perm]:
    """What Kopf itself calls, from controller/handlers.py and the operator's arguments."""
    handlers = (CONTROLLER / 'handlers.py').read_text()
    needs = perms('apiextensions.k8s.io', 'customresourcedefinitions', 'list', 'watch')
    if re.search(r'@kopf\.on\.(resume|create|update|delete|event|field|timer|daemon)\(\*RESOURCE', handlers):
        needs |= perms(GROUP, PLURAL, 'list', 'watch', 'patch')
    if 'settings.posting.enabled = False' not in handlers:
        needs |= perms('', 'events', 'create')
    if 'StatusProgressStorage' in handlers or 'StatusDiffBaseStorage' in handlers:
        needs |= perms(GROUP, f'{PLURAL}/status', 'patch')
    text = ' '.join(args)
    if re.search(r'(^|\s)(-n|--namespace)[\s=]', text):
        needs |= NAMESPACE_WATCH   # Kopf lists namespaces only to match --namespace patterns
    if re.search(r'(^|\s)(-P|--peering)[\s=]', text):
        needs |= PEERING
    return needs


def operator_args(objects: list[dict[str, Any]]) -> list[str]:
    container = operator_container(the(objects, 'Deployment'))
    return [*container.get('command', []), *container.get('args', [])]


def test_code_calls_are_found() -> None:
    calls = {(api, method) for api, method, _ in kubernetes_calls()}
    # The ones controller/kube.py is known to make: if this fails, the scan broke.
    assert {('CoreV1Api', 'create_namespaced_event'), ('CoreV1Api', 'read_namespaced_secret'),
            ('CustomObjectsApi', 'get_namespaced_custom_object'),
            ('CustomObjectsApi', 'patch_namespaced_custom_object_status')} <= calls, calls


def test_rbac_matches_the_code() -> None:
    from_code = {permission_of(*call) for call in kubernetes_calls()}
    needed = from_code | kopf_needs(operator_args(base_objects()))
    have = granted(base_objects())
    assert not needed - have, f'the code calls what the ClusterRole does not grant: {describe(needed - have)}'
    assert not have - needed, f'granted but never called: {describe(have - needed)}'
    assert needed == all_expected(), 'EXPECTED in this test is out of date with the code'


def test_base_runs_standalone_and_cluster_wide() -> None:
    args = operator_args(base_objects())
    assert '--standalone' in args and not any(a.startswith(('--peering', '-P')) for a in args), args
    assert '--all-namespaces' in args or '-A' in args, args


# ---------------------------------------------------------------- (b) the Deployment

def operator_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = {c['name']: c for c in deployment['spec']['template']['spec']['containers']}
    assert OPERATOR_CONTAINER in containers, f'no {OPERATOR_CONTAINER!r} container: {sorted(containers)}'
    return containers[OPERATOR_CONTAINER]


def effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    own = (container.get('securityContext') or {}).get(key)
    return own if own is not None else (pod.get('securityContext') or {}).get(key)


def assert_hardened(pod: dict[str, Any], container: dict[str, Any]) -> None:
    name = container['name']
    assert effective(pod, container, 'runAsNonRoot') is True, f'{name}: runAsNonRoot'
    user = effective(pod, container, 'runAsUser')
    assert isinstance(user, int) and user != 0, f'{name}: runAsUser {user!r}'
    context = container.get('securityContext') or {}
    assert context.get('readOnlyRootFilesystem') is True, f'{name}: readOnlyRootFilesystem'
    assert context.get('allowPrivilegeEscalation') is False, f'{name}: allowPrivilegeEscalation'
    assert context.get('privileged') in (None, False), f'{name}: privileged'
    capabilities = context.get('capabilities') or {}
    assert 'ALL' in (capabilities.get('drop') or []), f'{name}: capabilities not dropped'
    assert not capabilities.get('add'), f'{name}: adds capabilities {capabilities.get("add")}'
    seccomp = effective(pod, container, 'seccompProfile') or {}
    assert seccomp.get('type') in ('RuntimeDefault', 'Localhost'), f'{name}: seccompProfile {seccomp}'


def assert_pod_is_not_host_bound(pod: dict[str, Any]) -> None:
    for key in ('hostNetwork', 'hostPID', 'hostIPC'):
        assert not pod.get(key), key
    for volume in pod.get('volumes') or []:
        assert 'hostPath' not in volume, f'hostPath volume {volume["name"]}'


def assert_operator_deployment(objects: list[dict[str, Any]], *, privileged_ok: set[str] = frozenset()) -> None:
    deployment = the(objects, 'Deployment')
    pod = deployment['spec']['template']['spec']
    assert_pod_is_not_host_bound(pod)
    for container in [*pod.get('initContainers', []), *pod['containers']]:
        if container['name'] in privileged_ok:
            continue
        assert_hardened(pod, container)
    container = operator_container(deployment)
    resources = container.get('resources') or {}
    assert {'cpu', 'memory'} <= set(resources.get('requests') or {}), 'requests for cpu and memory'
    assert 'memory' in (resources.get('limits') or {}), 'a memory limit'
    ports = {p['name']: p['containerPort'] for p in container.get('ports') or []}
    assert ports.get('http') == HTTP_PORT, ports
    assert ports.get('hooks') == HOOKS_PORT, ports
    for probe in ('livenessProbe', 'readinessProbe'):
        get = (container.get(probe) or {}).get('httpGet') or {}
        assert get.get('path') == '/healthz', f'{probe}: {get}'
        assert get.get('port') in ('http', HTTP_PORT), f'{probe}: {get}'
    mounts = {m['mountPath']: m['name'] for m in container.get('volumeMounts') or []}
    volumes = {v['name']: v for v in pod.get('volumes') or []}
    assert '/tmp' in mounts and 'emptyDir' in volumes[mounts['/tmp']], 'an emptyDir on /tmp for clones'


def test_deployment_is_hardened() -> None:
    assert_operator_deployment(base_objects())


def test_deployment_settings() -> None:
    objects = base_objects()
    deployment = the(objects, 'Deployment')
    spec = deployment['spec']
    assert spec['replicas'] == 1 and spec['strategy']['type'] == 'Recreate', 'one replica, never two at once'
    pod = spec['template']['spec']
    assert pod['serviceAccountName'] == SERVICE_ACCOUNT
    assert the(objects, 'ServiceAccount')['metadata']['name'] == SERVICE_ACCOUNT
    container = operator_container(deployment)
    version = re.search(r'^version = "([^"]+)"', (ROOT / 'pyproject.toml').read_text(), re.M).group(1)
    assert container['image'] == f'ghcr.io/your-org/panda-deploy:{version}', container['image']
    env = {e['name']: e for e in container.get('env') or []}
    known = set(re.findall(r'PANDA_DEPLOY_\w+', (CONTROLLER / 'config.py').read_text()))
    assert {n for n in env if n.startswith('PANDA_DEPLOY_')} <= known, f'unknown settings; known: {sorted(known)}'
    assert int(env['PANDA_DEPLOY_HTTP_PORT']['value']) == HTTP_PORT
    assert int(env['PANDA_DEPLOY_WEBHOOK_PORT']['value']) == HOOKS_PORT
    assert int(env['PANDA_DEPLOY_WORKERS']['value']) >= 1
    assert env['POD_ID']['valueFrom']['fieldRef']['fieldPath'] == 'metadata.name'


def test_image_user_matches_the_deployment() -> None:
    dockerfile = (ROOT / 'Dockerfile').read_text()
    pod = the(base_objects(), 'Deployment')['spec']['template']['spec']
    user = effective(pod, operator_container(the(base_objects(), 'Deployment')), 'runAsUser')
    assert re.search(rf'^USER {user}(:\d+)?$', dockerfile, re.M), f'Dockerfile: USER {user}'
    assert re.search(rf'^EXPOSE {HTTP_PORT}$', dockerfile, re.M)
    assert re.search(rf'^EXPOSE {HOOKS_PORT}$', dockerfile, re.M)
    assert 'ENTRYPOINT ["tini", "--", "panda-deploy", "operator"]' in dockerfile, 'an init that reaps children'
    final_stage = dockerfile.split('\nFROM ')[-1]
    (packages,) = re.findall(r'apt-get install -y --no-install-recommends ([^\\\n]+)', final_stage)
    # git for clones, ps (procps) for whoever debugs inside, tini as PID 1
    assert {'git', 'ca-certificates', 'procps', 'tini'} <= set(packages.split()), packages
    assert len(re.findall(r'^FROM ', dockerfile, re.M)) == 2, 'two stages'


def named(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objects, kind) if o['metadata']['name'] == name]
    return found


def test_service_and_servicemonitor_reach_the_metrics_port() -> None:
    objects = base_objects()
    deployment, monitor = the(objects, 'Deployment'), the(objects, 'ServiceMonitor')
    service = named(objects, 'Service', 'panda-deploy-metrics')
    pod_labels = deployment['spec']['template']['metadata']['labels']
    assert service['spec']['selector'].items() <= pod_labels.items(), 'the Service selects the operator pod'
    assert deployment['spec']['selector']['matchLabels'].items() <= pod_labels.items()
    (port,) = [p for p in service['spec']['ports'] if p['name'] == 'http-metrics']
    assert port['targetPort'] in ('http', HTTP_PORT) and port['port'] == HTTP_PORT
    assert monitor['spec']['selector']['matchLabels'].items() <= service['metadata']['labels'].items()
    assert NAMESPACE in monitor['spec']['namespaceSelector']['matchNames']
    (endpoint,) = monitor['spec']['endpoints']
    assert endpoint['port'] == 'http-metrics' and endpoint['path'] == '/metrics'


def test_the_webhooks_service_reaches_only_the_hooks_port() -> None:
    """The Service an Ingress routes /hooks/ to: the operator pod's `hooks` port, not the probes' and metrics'."""
    objects = base_objects()
    pod_labels = the(objects, 'Deployment')['spec']['template']['metadata']['labels']
    service = named(objects, 'Service', 'panda-deploy-webhooks')
    assert service['spec']['selector'].items() <= pod_labels.items(), 'the Service selects the operator pod'
    assert [(p['targetPort'], p['port']) for p in service['spec']['ports']] == [('hooks', HOOKS_PORT)]
    assert sorted(o['metadata']['name'] for o in of_kind(objects, 'Service')) == [
        'panda-deploy-metrics', 'panda-deploy-webhooks']


def test_namespace_enforces_restricted_pod_security() -> None:
    objects = base_objects()
    namespace = the(objects, 'Namespace')
    assert namespace['metadata']['name'] == NAMESPACE == kustomization(MANIFESTS)['namespace']
    assert namespace['metadata']['labels']['pod-security.kubernetes.io/enforce'] == 'restricted'
    for obj in objects:
        if obj['kind'] in ('ClusterRoleBinding', 'RoleBinding'):
            assert all(s['namespace'] == NAMESPACE for s in obj['subjects'] if s['kind'] == 'ServiceAccount')


def test_component_patches_do_not_loosen_the_operator() -> None:
    """Without kubectl, at least no component patch sets a weaker value anywhere
    but on the privileged sidecars it is allowed to add."""
    weak = {'runAsNonRoot': False, 'readOnlyRootFilesystem': False, 'allowPrivilegeEscalation': True,
            'privileged': True, 'runAsUser': 0}
    unset = object()

    def weakened(context: dict[str, Any] | None) -> list[str]:
        context = context or {}
        found = [k for k, v in weak.items() if context.get(k, unset) == v]
        return found + (['capabilities.add'] if (context.get('capabilities') or {}).get('add') else [])

    for name in COMPONENTS:
        _, patches, _ = references(kustomization(MANIFESTS / name))
        for patch in patches:
            for doc in load_yaml(MANIFESTS / name / patch):
                pod = ((doc.get('spec') or {}).get('template') or {}).get('spec') or {}
                assert not weakened(pod.get('securityContext')), f'{name}/{patch}: pod securityContext'
                assert not any(pod.get(k) for k in ('hostNetwork', 'hostPID', 'hostIPC')), f'{name}/{patch}'
                for container in [*pod.get('initContainers', []), *pod.get('containers', [])]:
                    if container['name'] in PRIVILEGED_SIDECARS.get(name, ()):
                        continue
                    assert not weakened(container.get('securityContext')), \
                        f'{name}/{patch}: {container["name"]}: {weakened(container.get("securityContext"))}'


# ---------------------------------------------------------------- (c) schemas

try:
    from kubernetes_validate import utils as kubernetes_validate
except ImportError:   # the `test` extra installs it; where CI is set, its absence is a failure
    if os.environ.get('CI'):
        raise
    kubernetes_validate = None


def kubernetes_versions() -> list[str]:
    if kubernetes_validate is None:
        pytest.skip('kubernetes-validate is not installed (pip install -e .[test])')
    versions = sorted({v for v in kubernetes_validate.all_versions()},
                      key=lambda v: tuple(int(x) for x in v.split('.')))
    chosen = [v for v in versions if tuple(map(int, v.split('.')[:2])) >= tuple(map(int, MIN_KUBERNETES.split('.')))]
    assert chosen, f'kubernetes-validate bundles no version >= {MIN_KUBERNETES}: {versions}'
    return chosen


# The part of the Prometheus Operator's ServiceMonitor schema that we use,
# strict (unknown keys fail); the Duration pattern is the CRD's own.
DURATION = r'^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'
SERVICE_MONITOR = {
    'type': 'object',
    'required': ['apiVersion', 'kind', 'metadata', 'spec'],
    'additionalProperties': False,
    'properties': {
        'apiVersion': {'const': 'monitoring.coreos.com/v1'},
        'kind': {'const': 'ServiceMonitor'},
        'metadata': {'type': 'object', 'required': ['name'], 'properties': {
            'name': {'type': 'string'}, 'namespace': {'type': 'string'},
            'labels': {'type': 'object', 'additionalProperties': {'type': 'string'}}}},
        'spec': {'type': 'object', 'required': ['selector', 'endpoints'], 'additionalProperties': False, 'properties': {
            'jobLabel': {'type': 'string'},
            'selector': {'type': 'object', 'additionalProperties': False, 'properties': {
                'matchLabels': {'type': 'object', 'additionalProperties': {'type': 'string'}},
                'matchExpressions': {'type': 'array'}}},
            'namespaceSelector': {'type': 'object', 'additionalProperties': False, 'properties': {
                'any': {'type': 'boolean'}, 'matchNames': {'type': 'array', 'items': {'type': 'string'}}}},
            'endpoints': {'type': 'array', 'minItems': 1, 'items': {
                'type': 'object', 'additionalProperties': False, 'properties': {
                    'port': {'type': 'string'}, 'path': {'type': 'string'},
                    'scheme': {'enum': ['http', 'https', 'HTTP', 'HTTPS']},
                    'interval': {'type': 'string', 'pattern': DURATION},
                    'scrapeTimeout': {'type': 'string', 'pattern': DURATION},
                    'honorLabels': {'type': 'boolean'},
                    'relabelings': {'type': 'array'}, 'metricRelabelings': {'type': 'array'}}}}}},
    },
}


def custom_schema(obj: dict[str, Any], crds: list[dict[str, Any]]) -> dict[str, Any] | None:
    group, _, version = obj['apiVersion'].rpartition('/')
    for crd in crds:
        if crd['spec']['group'] == group and crd['spec']['names']['kind'] == obj['kind']:
            (served,) = [v for v in crd['spec']['versions'] if v['name'] == version]
            if crd['spec']['scope'] == 'Cluster':
                assert 'namespace' not in obj['metadata'], f'{obj["kind"]} is cluster-scoped'
            return served['schema']['openAPIV3Schema']
    return None


def validate(obj: dict[str, Any], version: str, crds: list[dict[str, Any]]) -> str:
    """Validates one object; returns which schema did it."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
        return 'kubernetes'
    except kubernetes_validate.ValidationError as exc:
        path = '.'.join(str(p) for p in exc.path)
        raise AssertionError(f'{obj["kind"]}/{obj["metadata"]["name"]} (Kubernetes {version}): {path}: {exc.message}') from None
    except kubernetes_validate.SchemaNotFoundError:
        pass
    if obj['kind'] == 'ServiceMonitor':
        jsonschema.validate(obj, SERVICE_MONITOR)
        return 'servicemonitor'
    schema = custom_schema(obj, crds)
    assert schema is not None, f'no schema for {obj["apiVersion"]} {obj["kind"]}: add one to this test'
    jsonschema.validate(obj, schema)
    return 'crd'


def component_objects() -> dict[str, list[dict[str, Any]]]:
    return {name: resource_objects(MANIFESTS / name) for name in COMPONENTS}


def tenant_objects(namespace: str = 'team-a') -> list[dict[str, Any]]:
    """namespaced-secrets/tenant as `kubectl apply -n NAMESPACE -k` applies it."""
    objects = copy.deepcopy(resource_objects(TENANT))
    for obj in objects:
        obj['metadata']['namespace'] = namespace
    return objects


@pytest.mark.parametrize('version', kubernetes_versions() if kubernetes_validate is not None else ['(not installed)'])
def test_objects_validate_against_kubernetes_schemas(version: str) -> None:
    objects = base_objects() + [o for objs in component_objects().values() for o in objs] + tenant_objects()
    crds = of_kind(objects, 'CustomResourceDefinition')
    used = {validate(obj, version, crds) for obj in objects}
    assert used == {'kubernetes', 'servicemonitor', 'crd'}, used


def test_the_validator_rejects_mistakes() -> None:
    """The validation above is worth something only if it fails on a mistake."""
    version = kubernetes_versions()[-1]
    deployment = the(base_objects(), 'Deployment')
    mistakes = []
    typo = copy.deepcopy(deployment)
    typo['spec']['template']['spec']['containers'][0]['securityContext']['readOnlyRootFileSystem'] = True
    mistakes.append(typo)
    wrong_type = copy.deepcopy(deployment)
    wrong_type['spec']['replicas'] = 'one'
    mistakes.append(wrong_type)
    missing = copy.deepcopy(deployment)
    del missing['spec']['selector']
    mistakes.append(missing)
    monitor = copy.deepcopy(the(base_objects(), 'ServiceMonitor'))
    monitor['spec']['endpoints'][0]['intervall'] = '30s'
    mistakes.append(monitor)
    for mistake in mistakes:
        with pytest.raises((AssertionError, jsonschema.ValidationError)):
            validate(mistake, version, [])


# ---------------------------------------------------------------- (d) kustomizations

KUSTOMIZATION_KEYS = {'apiVersion', 'kind', 'namespace', 'resources', 'patches', 'components', 'labels',
                      'images', 'namePrefix', 'nameSuffix', 'configMapGenerator', 'secretGenerator', 'replicas'}


@pytest.mark.parametrize('directory', kustomization_dirs(), ids=lambda d: str(d.relative_to(ROOT)))
def test_kustomization_lists_every_file_and_every_reference_exists(directory: pathlib.Path) -> None:
    kust = kustomization(directory)
    assert set(kust) <= KUSTOMIZATION_KEYS, f'unknown keys: {sorted(set(kust) - KUSTOMIZATION_KEYS)}'
    resources, patches, components = references(kust)
    files = [r for r in [*resources, *patches] if not (directory / r).is_dir()]
    for ref in files:
        assert '/' not in ref, f'{ref}: kustomize loads files only from its own directory'
        assert (directory / ref).is_file(), f'{ref}: no such file'
    for ref in [*resources, *components]:
        path = (directory / ref).resolve()
        if path.is_dir():
            assert (path / 'kustomization.yaml').is_file(), f'{ref}: a directory without kustomization.yaml'
            assert not directory.resolve().is_relative_to(path), f'{ref}: an ancestor (kustomize: cycle)'
        else:
            assert ref in files, f'{ref}: does not exist'
    present = sorted(p.name for p in directory.iterdir()
                     if p.suffix in ('.yaml', '.yml') and p.name != 'kustomization.yaml')
    assert sorted(files) == present, f'listed {sorted(files)} but the directory has {present}'
    assert len(files) == len(set(files)), 'a file listed twice'


def test_base_and_components_are_what_they_say() -> None:
    base = kustomization(MANIFESTS)
    assert (base['apiVersion'], base['kind']) == ('kustomize.config.k8s.io/v1beta1', 'Kustomization')
    assert '../../crds' in base['resources'], 'the CRD comes from crds/'
    subdirs = sorted(p.name for p in MANIFESTS.iterdir() if p.is_dir())
    assert subdirs == sorted(COMPONENTS), f'unexpected directories {subdirs}: add them to COMPONENTS'
    for name in COMPONENTS:
        # An overlay inside its own base cannot build (kustomize: cycle), hence Components.
        kust = kustomization(MANIFESTS / name)
        assert (kust['apiVersion'], kust['kind']) == ('kustomize.config.k8s.io/v1alpha1', 'Component'), name


@pytest.mark.parametrize('name', COMPONENTS)
def test_component_patches_hit_an_object(name: str) -> None:
    """kustomize silently applies a patch whose target matches nothing."""
    objects = base_objects() + resource_objects(MANIFESTS / name)
    for patch in kustomization(MANIFESTS / name).get('patches') or []:
        target = patch['target']
        hits = [o for o in objects if o['kind'] == target['kind'] and o['metadata']['name'] == target['name']
                and o['apiVersion'] == '/'.join(filter(None, (target.get('group'), target['version'])))]
        assert len(hits) == 1, f'{name}: patch {patch["path"]} targets {target}: {len(hits)} objects'
        for doc in load_yaml(MANIFESTS / name / patch['path']):
            assert (doc['kind'], doc['metadata']['name']) == (target['kind'], target['name'])


# ---------------------------------------------------------------- kubectl kustomize

def kubectl() -> str:
    path = shutil.which('kubectl')
    if path is None:
        pytest.skip('kubectl is not installed: `kubectl kustomize` checks not run')
    try:
        out = subprocess.run([path, 'version', '--client', '-o', 'json'], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        kustomize = json.loads(out).get('kustomizeVersion', '')
    except (subprocess.SubprocessError, ValueError) as exc:
        pytest.skip(f'kubectl does not report its version: {exc}')
    major = re.match(r'v(\d+)', kustomize)
    if not major or int(major.group(1)) < 4:
        pytest.skip(f'kubectl embeds kustomize {kustomize or "?"}; components need v4 or later')
    return path


def build(directory: pathlib.Path) -> list[dict[str, Any]]:
    result = subprocess.run([kubectl(), 'kustomize', str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def build_with_component(name: str, tmp_path: pathlib.Path) -> list[dict[str, Any]]:
    """The way a platform team uses a component: from a kustomization of its own."""
    (tmp_path / 'kustomization.yaml').write_text(textwrap.dedent(f'''\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources: [{os.path.relpath(MANIFESTS, tmp_path)}]
        components: [{os.path.relpath(MANIFESTS / name, tmp_path)}]
        '''))
    return build(tmp_path)


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj['kind'], obj['metadata'].get('namespace', ''), obj['metadata']['name']


def test_kubectl_builds_the_base() -> None:
    built = build(MANIFESTS)
    assert sorted(map(key, built)) == sorted(map(key, base_objects())), 'the build differs from the files'
    assert {key(b): b for b in built} == {key(o): o for o in base_objects()}, 'kustomize changed more than the namespace'
    assert_operator_deployment(built)
    assert granted(built) == all_expected()
    version = kubernetes_versions()[-1]
    for obj in built:
        validate(obj, version, of_kind(built, 'CustomResourceDefinition'))


def test_kubectl_builds_the_peering_component(tmp_path: pathlib.Path) -> None:
    built = build_with_component('peering', tmp_path)
    assert_operator_deployment(built)
    deployment = the(built, 'Deployment')
    assert deployment['spec']['replicas'] == 2 and deployment['spec']['strategy']['type'] == 'RollingUpdate'
    args = operator_args(built)
    assert '--peering=panda-deploy' in ' '.join(args) and '--standalone' not in ' '.join(args)
    assert args[:2] == ['tini', '--'], '`command` replaces the image entrypoint: it must keep tini as PID 1'
    # Kopf pauses all peers of equal priority: each pod must draw its own.
    assert '--priority=$$(( 1 + $$(od' in ' '.join(args), 'a per-pod random priority ($$ escapes $ for Kubernetes)'
    assert the(built, 'ClusterKopfPeering')['metadata']['name'] == 'panda-deploy'
    assert 'namespace' not in the(built, 'ClusterKopfPeering')['metadata']
    assert granted(built) == all_expected() | PEERING
    from_code = {permission_of(*call) for call in kubernetes_calls()}
    assert granted(built) == from_code | kopf_needs(args)
    version = kubernetes_versions()[-1]
    for obj in built:
        validate(obj, version, of_kind(built, 'CustomResourceDefinition'))


def test_kubectl_builds_the_dind_component(tmp_path: pathlib.Path) -> None:
    built = build_with_component('dind', tmp_path)
    assert_operator_deployment(built, privileged_ok=PRIVILEGED_SIDECARS['dind'])
    pod = the(built, 'Deployment')['spec']['template']['spec']
    containers = {c['name']: c for c in pod['containers']}
    assert set(containers) == {'operator', 'dind'}
    operator_env = {e['name']: e.get('value') for e in containers['operator']['env']}
    socket = operator_env['DOCKER_HOST'].removeprefix('unix://')
    dind = containers['dind']
    assert f'--host=unix://{socket}' in dind['args'] and not any('tcp://' in a for a in dind['args'])
    assert dind['args'][0] == 'dockerd', 'without it the image entrypoint also opens tcp://0.0.0.0:2375'
    assert f'--group={effective(pod, containers["operator"], "runAsGroup")}' in dind['args']
    assert the(built, 'Namespace')['metadata']['labels']['pod-security.kubernetes.io/enforce'] == 'privileged'
    assert granted(built) == all_expected()
    version = kubernetes_versions()[-1]
    for obj in built:
        validate(obj, version, of_kind(built, 'CustomResourceDefinition'))


def test_kubectl_builds_the_codebuild_component(tmp_path: pathlib.Path) -> None:
    built = build_with_component('codebuild', tmp_path)
    assert_operator_deployment(built)  # nothing privileged
    pod = the(built, 'Deployment')['spec']['template']['spec']
    assert [c['name'] for c in pod['containers']] == ['operator'], 'no Docker engine beside the operator'
    env = {e['name']: e.get('value') for e in pod['containers'][0]['env']}
    assert env['PANDA_DEPLOY_BUILD_ENGINE'] == 'codeBuild' and 'DOCKER_HOST' not in env
    assert the(built, 'Namespace')['metadata']['labels']['pod-security.kubernetes.io/enforce'] == 'restricted'
    assert granted(built) == all_expected()


# ---------------------------------------------------------------- the NetworkPolicy

# Egress ports the operator needs, each with its reason (networkpolicy.yaml says more).
EGRESS_PORTS = {
    ('UDP', 53): 'DNS', ('TCP', 53): 'DNS',
    ('TCP', 443): 'the Kubernetes API behind its Service, GitHub, AWS, registries, HTTPS health checks',
    ('TCP', 6443): 'the Kubernetes API server where it listens on 6443',
    ('TCP', 2376): 'a Docker engine over TLS',
    ('TCP', 80): 'plain HTTP health checks, git over http where allowed',
    ('TCP', 8080): 'health checks of blue/green test listeners', ('TCP', 8443): 'test listeners over HTTPS',
}
METADATA_SERVICE = {'169.254.169.254/32', 'fd00:ec2::254/128'}


def test_network_policy_admits_only_the_http_and_hooks_ports_and_names_every_egress_port() -> None:
    objects = base_objects()
    policy = the(objects, 'NetworkPolicy')['spec']
    pod_labels = the(objects, 'Deployment')['spec']['template']['metadata']['labels']
    assert policy['podSelector']['matchLabels'].items() <= pod_labels.items(), 'it selects the operator pod'
    assert sorted(policy['policyTypes']) == ['Egress', 'Ingress'], 'both directions are restricted'
    admitted = [[(p.get('protocol', 'TCP'), p['port']) for p in rule['ports']] for rule in policy['ingress']]
    assert admitted == [[('TCP', 'http')], [('TCP', 'hooks')]], admitted
    container_ports = {p['name']: p['containerPort'] for p in operator_container(the(objects, 'Deployment'))['ports']}
    assert container_ports['http'] == HTTP_PORT, '/metrics and /healthz are on the `http` port'
    assert container_ports['hooks'] == HOOKS_PORT, '/hooks/ is on the `hooks` port'
    opened: set[tuple[str, int]] = set()
    for rule in policy['egress']:
        assert rule.get('ports'), f'an egress rule open on every port: {rule}'
        ports = {(p.get('protocol', 'TCP'), p['port']) for p in rule['ports']}
        opened |= ports
        if ports & {('TCP', 80), ('TCP', 8080)}:   # plain HTTP never reaches the cloud metadata service
            excepted = {cidr for peer in rule.get('to') or [] for cidr in (peer.get('ipBlock') or {}).get('except', [])}
            assert rule.get('to') and METADATA_SERVICE <= excepted, f'plain HTTP may reach {METADATA_SERVICE}: {rule}'
    assert opened == set(EGRESS_PORTS), f'egress ports {sorted(opened)}; documented {sorted(EGRESS_PORTS)}'


def test_the_validator_rejects_a_mistaken_network_policy() -> None:
    version = kubernetes_versions()[-1]
    policy = copy.deepcopy(the(base_objects(), 'NetworkPolicy'))
    policy['spec']['egress'][0]['ports'][0]['protocoll'] = 'UDP'
    with pytest.raises(AssertionError):
        validate(policy, version, [])


# ---------------------------------------------------------------- namespaced Secrets

def test_the_tenant_role_grants_exactly_get_on_secrets_to_the_operator() -> None:
    objects = tenant_objects()
    assert {(o['kind'], o['metadata']['name']) for o in objects} == {
        ('Role', 'panda-deploy-secrets'), ('RoleBinding', 'panda-deploy-secrets')}
    assert not any('namespace' in o['metadata'] for o in resource_objects(TENANT)), 'the namespace is chosen at apply'
    assert granted(objects) == SECRET_GET
    assert kustomization(TENANT)['kind'] == 'Kustomization' and 'namespace' not in kustomization(TENANT)


def test_kubectl_builds_the_namespaced_secrets_component(tmp_path: pathlib.Path) -> None:
    (tmp_path / 'operator').mkdir()
    built = build_with_component('namespaced-secrets', tmp_path / 'operator')
    assert_operator_deployment(built)
    assert granted(built) == all_expected() - SECRET_GET, 'no cluster-wide Secret access left'
    assert not any(rule['resources'] == ['secrets'] for _, rule in rules(built))
    assert not [o for o in built if o['metadata']['name'] == 'panda-deploy-secret-reader']
    # A platform team's kustomization for one tenant namespace.
    tenant_dir = tmp_path / 'team-a'
    tenant_dir.mkdir()
    (tenant_dir / 'kustomization.yaml').write_text(textwrap.dedent(f'''\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        namespace: team-a
        resources: [{os.path.relpath(TENANT, tenant_dir)}]
        '''))
    tenant = build(tenant_dir)
    assert {o['metadata']['namespace'] for o in tenant} == {'team-a'}
    (binding,) = of_kind(tenant, 'RoleBinding')
    assert binding['subjects'] == [{'kind': 'ServiceAccount', 'name': SERVICE_ACCOUNT, 'namespace': NAMESPACE}]
    assert granted(tenant) == SECRET_GET, 'in the tenant namespace: get on Secrets, nothing else'
    from_code = {permission_of(*call) for call in kubernetes_calls()}
    assert granted(built) | granted(tenant) == from_code | kopf_needs(operator_args(built))
    version = kubernetes_versions()[-1]
    for obj in built + tenant:
        validate(obj, version, of_kind(built, 'CustomResourceDefinition'))
