"""The bad-input catalogue: each wrong input a user can give, and how the operator says so.

One operator with the REAL adapters (git, Docker, ECR/ECS/CodeDeploy/ELBv2 on
the AWS sandbox, a local registry) runs for the whole module, started by
`controller.sandbox.stack.sandbox.start_sandbox` (which applies nothing); each
case has its own resource, git repository, ECR repository and ECS service
name. For every case the test asserts:

- the outcome: the condition's reason and a message that names what is at
  fault (the field, Secret, key, repository, branch, file, cluster or URL);
- the Kubernetes Event (type Warning, the same reason and message);
- the metric: `panda_deploy_stage_failures_total{stage,reason}` up by exactly
  one for a failed run (and no other series moved); a stall is not a stage
  failure, so no counter moves (README, Metrics);
- that nothing else changed: the spec and generation are untouched, every
  API write of the case is to its own resource or its own Events, and the AWS
  world (ECR repositories and images, the registry's catalogue, task
  definitions, ECS services, CodeDeploy applications and deployments, the
  listeners' actions) differs only by what the stage at fault legitimately did
  before it failed.

A refused push needs a registry that refuses: PANDA_DEPLOY_REGISTRY is one
per operator, so that case runs on a second, minimal stack -- its own API
emulator and operator, pushing to a registry that requires authentication --
sharing the module's AWS sandbox. Wrong AWS keys need an AWS that refuses
unknown keys: the sandbox is told which access keys exist
(`AwsSandbox.refuse_unknown_keys`), and answers others as AWS does.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import http.server
import io
import json
import os
import pathlib
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import kubernetes
import pydantic
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from controller.adapters.http import USER_AGENT as HEALTH_CHECK_AGENT
from controller.models import PandaDeploySpec, describe_validation_error
from controller.sandbox.kube import ClusterServer
from controller.sandbox.stack import localdocker
from controller.sandbox.stack.manifests import SANDBOX_KEYS
from controller.sandbox.stack.operator import operator_environment, start_operator
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.sandbox import BUILD_LABEL, Sandbox, start_sandbox
from controller.sandbox.stack.world import REGION
from tests.conftest import unavailable
from tests.e2e.conftest import GROUP, PLURAL, ROOT, VERSION, Cluster, wait_for
from tests.integration import githttp

pytestmark = [pytest.mark.docker, pytest.mark.slow]

AWS_SECRET = 'aws-creds'
OWNER = 'bad-input'  # the repositories' parent directory: ECR repository `bad-input-<case>`
OUTCOME_TIMEOUT = 150.0
BAD = sorted((ROOT / 'examples' / 'bad').glob('*.yaml'))
FAILURES = 'panda_deploy_stage_failures_total'
# The operator's deny-list for health checks: the default, and one loopback address a case can listen on.
DENIED_HOST = '127.0.0.9'
HEALTH_CHECK_DENY = f'169.254.0.0/16,fd00:ec2::254/128,{DENIED_HOST}/32'
RUNS = 'panda_deploy_runs_total'


# ---------------------------------------------------------------------------------------------
# The stacks.


@dataclasses.dataclass
class Stack:
    """One API emulator and the operator watching it."""
    cluster: Cluster
    metrics_url: str
    registry: str  # host:port the operator pushes to (PANDA_DEPLOY_REGISTRY)
    registry_data: pathlib.Path | None = None  # where that registry stores repositories, when started here

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of the operator's counters, keyed by (name, labels)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in (FAILURES, RUNS):
                    samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
        return samples


@dataclasses.dataclass
class Bed:
    sandbox: Sandbox
    main: Stack
    repos: pathlib.Path
    client: docker.DockerClient
    deployment_ids: set[str]


def _git(cwd: pathlib.Path, *args: str) -> str:
    env = {**os.environ, 'GIT_CONFIG_GLOBAL': os.devnull, 'GIT_CONFIG_NOSYSTEM': '1',
           'GIT_AUTHOR_NAME': 'Bad Input', 'GIT_AUTHOR_EMAIL': 'bad@panda.invalid',
           'GIT_COMMITTER_NAME': 'Bad Input', 'GIT_COMMITTER_EMAIL': 'bad@panda.invalid'}
    return subprocess.run(['git', '-C', str(cwd), *args], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(root: pathlib.Path, name: str, files: dict[str, str]) -> pathlib.Path:
    """A bare repository `root/bad-input/<name>.git` with one commit of `files` on main."""
    work = root / 'work' / name
    bare = root / OWNER / f'{name}.git'
    work.mkdir(parents=True)
    _git(work, 'init', '-q', '-b', 'main', '.')
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    _git(work, 'add', '-A')
    _git(work, 'commit', '-q', '--allow-empty', '-m', f'{name}')
    _git(work, 'init', '-q', '--bare', '-b', 'main', str(bare))
    _git(work, 'push', '-q', str(bare), 'main')
    return bare


def _make_secrets(cluster: Cluster) -> None:
    cluster.apply_secrets(**{AWS_SECRET: dict(SANDBOX_KEYS)})


@pytest.fixture(scope='module')
def bed(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    deployment_ids: set[str] = set()
    with contextlib.ExitStack() as stack:
        try:
            sandbox = start_sandbox(stack, docker_client, ProgressPrinter(out=io.StringIO()),
                                    operator_env={'PANDA_DEPLOY_HEALTH_CHECK_DENY': HEALTH_CHECK_DENY})
        except localdocker.Unavailable as exc:
            unavailable(str(exc))
        stack.callback(_remove_images, docker_client, deployment_ids)
        # AWS knows the sandbox's keys (the operator's Secret, the test's and the demo's own clients) and
        # refuses any other key, as AWS does.
        sandbox.aws.refuse_unknown_keys({SANDBOX_KEYS['accessKeyId'], 'demo'})
        cluster = Cluster(sandbox.cluster, sandbox.temp / 'kubeconfig')
        _make_secrets(cluster)
        main = Stack(cluster, f'http://127.0.0.1:{sandbox.env["PANDA_DEPLOY_HTTP_PORT"]}/metrics', sandbox.registry)
        yield Bed(sandbox=sandbox, main=main, repos=tmp_path_factory.mktemp('repos'), client=docker_client,
                  deployment_ids=deployment_ids)
        log = sandbox.operator_log.read_text(errors='replace')
        print(log[-8000:])


def _remove_images(client: docker.DockerClient, deployment_ids: set[str]) -> None:
    """The images the cases' runs built (by the deployment-id label the Build stage sets)."""
    # The low-level calls list in one request: the engine is shared, and others remove images meanwhile.
    for image in client.api.images(filters={'label': BUILD_LABEL}):
        if (image.get('Labels') or {}).get(BUILD_LABEL) in deployment_ids:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_image(image['Id'], force=True)


@pytest.fixture(scope='module')
def refusing_stack(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second API emulator and operator whose PANDA_DEPLOY_REGISTRY requires a login (and gets none)."""
    temp = tmp_path_factory.mktemp('refusing')
    with contextlib.ExitStack() as stack:
        process, registry, _ = localdocker.start_registry(temp / 'registry', auth=True)
        stack.callback(localdocker.stop, process)
        assert localdocker.answers(f'http://{registry}/v2/') == 401
        server = ClusterServer().start()
        stack.callback(server.stop)
        for doc in yaml.safe_load_all((ROOT / 'crds' / 'pandadeploys.yaml').read_text()):
            server.emulator.add_crd(doc)
        kubeconfig = server.write_kubeconfig(temp / 'kubeconfig')
        env = operator_environment(kubeconfig=kubeconfig, aws_url=bed.sandbox.aws.url, registry=registry,
                                        http_port=localdocker.free_port(), proxy_url=bed.sandbox.proxy_url)
        log = temp / 'operator.log'
        operator = start_operator(env, log)
        stack.callback(localdocker.stop, operator)
        cluster = Cluster(server, kubeconfig)
        _make_secrets(cluster)
        yield Stack(cluster, f'http://127.0.0.1:{env["PANDA_DEPLOY_HTTP_PORT"]}/metrics', registry,
                    temp / 'registry' / 'data' / 'docker' / 'registry' / 'v2' / 'repositories')
        print(log.read_text(errors='replace')[-4000:])


# ---------------------------------------------------------------------------------------------
# The AWS world, as a set of facts to compare before and after a case.


def aws_facts(bed: Bed) -> set[str]:
    clients, world = bed.sandbox.clients, bed.sandbox.world
    ecr, ecs, codedeploy, elb = clients('ecr'), clients('ecs'), clients('codedeploy'), clients('elbv2')
    facts = set()
    for repository in ecr.describe_repositories()['repositories']:
        name = repository['repositoryName']
        facts.add(f'ecr-repository {name}')
        for image in ecr.describe_images(repositoryName=name)['imageDetails']:
            for tag in image.get('imageTags') or ['<untagged>']:
                facts.add(f'ecr-image {name}:{tag}')
    with urllib.request.urlopen(f'http://{bed.sandbox.registry}/v2/_catalog', timeout=10) as response:
        facts.update(f'registry {name}' for name in json.load(response).get('repositories') or [])
    facts.update(f'task-definition {arn.rsplit("/", 1)[-1]}'
                 for arn in ecs.list_task_definitions()['taskDefinitionArns'])
    for cluster in ecs.list_clusters()['clusterArns']:
        facts.update(f'ecs-service {arn.rsplit("/", 2)[-2]}/{arn.rsplit("/", 1)[-1]}'
                     for arn in ecs.list_services(cluster=cluster)['serviceArns'])
    facts.update(f'codedeploy-application {name}' for name in codedeploy.list_applications()['applications'])
    for name in codedeploy.list_applications()['applications']:
        for group in codedeploy.list_deployment_groups(applicationName=name)['deploymentGroups']:
            facts.add(f'codedeploy-group {name}/{group}')
            facts.update(f'codedeploy-deployment {d}' for d in codedeploy.list_deployments(
                applicationName=name, deploymentGroupName=group)['deployments'])
    for arn in (world.production_listener_arn, world.test_listener_arn):
        listener = elb.describe_listeners(ListenerArns=[arn])['Listeners'][0]
        facts.add(f'listener :{listener["Port"]} {json.dumps(listener["DefaultActions"], sort_keys=True)}')
    return facts


# ---------------------------------------------------------------------------------------------
# One case.


@dataclasses.dataclass
class Outcome:
    name: str
    created: dict[str, Any]
    found: dict[str, Any]
    events: list[dict[str, Any]]
    writes: list[Any]
    metrics_before: dict[Any, float]
    metrics_after: dict[Any, float]
    aws_added: set[str]
    aws_removed: set[str]

    @property
    def status(self) -> dict[str, Any]:
        return self.found.get('status') or {}

    def condition(self, type_: str) -> dict[str, Any]:
        found = next((c for c in self.status.get('conditions') or [] if c['type'] == type_), None)
        assert found is not None, f'no {type_} condition in {self.status}'
        return found

    def moved(self) -> dict[Any, float]:
        """The counter samples that changed, with their change."""
        keys = set(self.metrics_before) | set(self.metrics_after)
        return {key: self.metrics_after.get(key, 0.0) - self.metrics_before.get(key, 0.0) for key in keys
                if self.metrics_after.get(key, 0.0) != self.metrics_before.get(key, 0.0)}


def spec_for(bed: Bed, name: str, url: str, **changes: Any) -> dict[str, Any]:
    """A spec that would deploy `url` on the sandbox, as its own service; `changes` merged per section."""
    world = bed.sandbox.world
    spec: dict[str, Any] = {
        'source': {'url': url, 'branch': 'main'},
        'aws': {'region': REGION, 'credentialsSecretRef': {'name': AWS_SECRET}},
        'ecs': {'cluster': world.cluster, 'service': name, 'desiredCount': 1},
        'blueGreen': {
            'codeDeploy': {'application': name, 'deploymentGroup': name, 'serviceRoleArn': world.role_arn},
            'loadBalancer': {'productionListenerArn': world.production_listener_arn,
                             'testListenerArn': world.test_listener_arn,
                             'blueTargetGroupArn': world.blue_target_group_arn,
                             'greenTargetGroupArn': world.green_target_group_arn}},
        'healthCheck': {'checks': 3, 'intervalSeconds': 0, 'timeoutSeconds': 5},
        'timeouts': {'stageSeconds': '2m', 'totalSeconds': '4m'},
    }
    for section, values in changes.items():
        spec[section] = {**spec.get(section, {}), **values}
    return spec


def run_case(bed: Bed, name: str, spec: dict[str, Any], *, stack: Stack | None = None,
             stall: bool = False) -> Outcome:
    """Create the resource and wait for its end (Failed) or its stall; everything observed around it."""
    stack = stack or bed.main
    cluster = stack.cluster
    metrics_before, aws_before = stack.metrics(), aws_facts(bed)
    first_write = len(cluster.emulator.writes)
    created = cluster.create(name, spec)
    if stall:
        wait_for(lambda: (cluster.condition(name, 'Stalled') or {}).get('status') == 'True'
                 and any(e['type'] == 'Warning' for e in cluster.events(name)), timeout=60, what=f'{name} to stall')
        time.sleep(5)  # the stall is retried (2 s, then 4 s): a retry with no news must write nothing
    else:
        wait_for(lambda: cluster.finished(name) and any(e['type'] == 'Warning' for e in cluster.events(name)),
                 timeout=OUTCOME_TIMEOUT, what=f'{name} to end')
    found = cluster.get(name)
    assert found is not None
    if (found.get('status') or {}).get('deploymentId'):
        bed.deployment_ids.add(found['status']['deploymentId'])
    aws_after = aws_facts(bed)
    return Outcome(name=name, created=created, found=found, events=cluster.events(name),
                   writes=list(cluster.emulator.writes[first_write:]), metrics_before=metrics_before,
                   metrics_after=stack.metrics(), aws_added=aws_after - aws_before,
                   aws_removed=aws_before - aws_after)


def assert_untouched(outcome: Outcome, *, secrets: tuple[str, ...] = ()) -> None:
    """The spec as created, generation 1, and every write of the case to its own resource or Events."""
    assert outcome.found['spec'] == outcome.created['spec']
    assert outcome.found['metadata']['generation'] == 1
    name = outcome.name
    strays = [w for w in outcome.writes
              if not (w.plural == 'pandadeploys' and w.name == name)
              and not (w.plural == 'events' and w.name.startswith(f'{name}.'))
              and not (w.plural == 'secrets' and w.name in secrets)]
    assert strays == [], f'writes beyond {name} and its Events: {strays}'
    assert any(w.subresource == 'status' for w in outcome.writes), 'the status was written'


def assert_failed(outcome: Outcome, *, stage: str, reason: str, says: tuple[str, ...],
                  aws: set[str], secrets: tuple[str, ...] = ()) -> str:
    """Failed at `stage` with `reason`, the message containing each of `says`; the AWS world changed by `aws`
    exactly (facts added; nothing removed). Returns the message."""
    status = outcome.status
    message = status.get('message') or ''
    assert status.get('phase') == 'Failed', status
    for fragment in says:
        assert fragment in message, f'{fragment!r} not in {message!r}'
    ready = outcome.condition('Ready')
    assert (ready['status'], ready['reason'], ready['message']) == ('False', reason, message)
    assert 'Stalled' not in [c['type'] for c in status['conditions']], 'a failed run is not a stall'
    at_fault = outcome.condition(stage)
    assert (at_fault['status'], at_fault['reason'], at_fault['message']) == ('False', reason, message)
    record = status['stages'][-1]
    assert (record['name'], record['result'], record['reason'], record['message']) == (stage, 'Failed', reason,
                                                                                        message)
    assert all(r['result'] in ('Succeeded', 'Skipped') for r in status['stages'][:-1])
    assert status['history'][0]['result'] == 'Failed' and status['history'][0]['reason'] == reason
    warnings = [e for e in outcome.events if e['type'] == 'Warning']
    assert [(e['reason'], e['message']) for e in warnings] == [(reason, message)]
    assert outcome.moved() == {(FAILURES, (('reason', reason), ('stage', stage))): 1.0,
                               (RUNS, (('result', 'Failed'),)): 1.0}
    assert_untouched(outcome, secrets=secrets)
    assert outcome.aws_removed == set()
    assert outcome.aws_added == aws, f'AWS changed by {sorted(outcome.aws_added)}, expected {sorted(aws)}'
    print(f'{outcome.name}: Failed at {stage}, {reason}: {message}')
    return message


def assert_stalled(outcome: Outcome, *, reason: str, says: tuple[str, ...]) -> str:
    status = outcome.status
    message = status.get('message') or ''
    assert status.get('phase') == 'Pending', status
    for fragment in says:
        assert fragment in message, f'{fragment!r} not in {message!r}'
    stalled = outcome.condition('Stalled')
    assert (stalled['status'], stalled['reason'], stalled['message']) == ('True', reason, message)
    assert outcome.condition('Ready')['status'] == 'False'
    assert status.get('stages', []) == [] and 'deploymentId' not in status, 'no run started'
    events = [(e['type'], e['reason'], e['message']) for e in outcome.events]
    assert events == [('Warning', reason, message)], 'one Warning, none for the retries that found no news'
    assert outcome.moved() == {}, 'a stall is not a stage failure: no counter moves'
    assert_untouched(outcome)
    assert (outcome.aws_added, outcome.aws_removed) == (set(), set())
    print(f'{outcome.name}: Stalled, {reason}: {message}')
    return message


DOCKERFILE = f'FROM {localdocker.BASE_IMAGE}\nCMD ["httpd", "-f", "-p", "8080"]\n'


def sha_of(bare: pathlib.Path) -> str:
    return _git(bare, 'rev-parse', 'main')


# ---------------------------------------------------------------------------------------------
# Refused by the API server.


def assert_nothing_after_refusal(bed: Bed, name: str, first_write: int, metrics: dict[Any, float]) -> None:
    """Nothing stored; no write but the refused request itself (the log records requests); no counter moved."""
    time.sleep(1.0)  # time for an operator that (wrongly) saw something to act
    cluster = bed.main.cluster
    assert cluster.get(name) is None
    assert [(w.method, w.plural, w.name) for w in cluster.emulator.writes[first_write:]] == [
        ('POST', 'pandadeploys', name)]
    assert cluster.events(name) == []
    assert bed.main.metrics() == metrics


@pytest.mark.parametrize('path', BAD, ids=[p.stem for p in BAD])
def test_a_schema_invalid_manifest_is_refused_naming_the_field_and_nothing_happens(bed: Bed, path: pathlib.Path):
    """examples/bad (also run against a bare emulator by test_admission.py), here with the operator watching."""
    cluster = bed.main.cluster
    text = path.read_text()
    field = next(line.split()[-1] for line in text.splitlines() if line.startswith('# expect: '))
    body = yaml.safe_load(text)
    strict = {'field_validation': 'Strict'} if '# fieldValidation: Strict' in text else {}
    first_write, before = len(cluster.emulator.writes), bed.main.metrics()
    with pytest.raises(kubernetes.client.ApiException) as info:
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, body, **strict)
    assert info.value.status == 422
    answer = json.loads(info.value.body)
    assert field in [cause['field'].lstrip('.') for cause in answer['details']['causes']]
    assert field in answer['message']
    assert_nothing_after_refusal(bed, body['metadata']['name'], first_write, before)


HUGE_OR_BINARY = {
    'huge-dockerfile-path': ('spec.source.dockerfile', 'source', 'dockerfile', 'd/' * 100_000),
    'huge-build-arg': ('spec.source.buildArgs.BASE', 'source', 'buildArgs', {'BASE': 'x' * 100_000}),
    'nul-in-dockerfile-path': ('spec.source.dockerfile', 'source', 'dockerfile', 'Dockerfile\x00.txt'),
    'escape-codes-in-application': ('spec.blueGreen.codeDeploy.application', 'blueGreen', 'codeDeploy',
                                    {'application': 'app\x1b[2J\x1b[31mred'}),
    'control-character-in-branch': ('spec.source.branch', 'source', 'branch', 'main\x07'),
    'binary-health-check-path': ('spec.healthCheck.path', 'healthCheck', 'path', '/\x00\x01\x02\xff'),
}


@pytest.mark.parametrize('case', list(HUGE_OR_BINARY))
def test_a_huge_or_binary_value_is_refused_naming_the_field(bed: Bed, case: str):
    field, section, key, value = HUGE_OR_BINARY[case]
    cluster = bed.main.cluster
    spec = spec_for(bed, case, 'file:///nowhere/repo.git')
    spec[section] = {**spec[section], key: {**spec[section].get(key, {}), **value} if isinstance(value, dict)
                     else value}
    first_write, before = len(cluster.emulator.writes), bed.main.metrics()
    with pytest.raises(kubernetes.client.ApiException) as info:
        cluster.create(case, spec)
    assert info.value.status == 422
    answer = json.loads(info.value.body)
    assert field in [cause['field'].lstrip('.') for cause in answer['details']['causes']], answer
    assert len(info.value.body) < 20_000, 'the answer does not echo a huge value back'
    # The operator's own validation (its models, from which the CRD is generated) refuses it as well, naming
    # the field: with an older CRD installed, the resource would stall as InvalidSpec instead of running.
    with pytest.raises(pydantic.ValidationError) as refused:
        PandaDeploySpec.model_validate(spec)
    assert describe_validation_error(refused.value).startswith(f'{field}: ')
    assert_nothing_after_refusal(bed, case, first_write, before)


# ---------------------------------------------------------------------------------------------
# Stalls: nothing can start until a Secret changes.


def test_a_missing_secret_stalls_naming_the_field_and_the_secret(bed: Bed):
    bare = make_repo(bed.repos, 'missing-secret', {'Dockerfile': DOCKERFILE})
    spec = spec_for(bed, 'missing-secret', bare.as_uri(), aws={'credentialsSecretRef': {'name': 'no-such-secret'}})
    outcome = run_case(bed, 'missing-secret', spec, stall=True)
    assert_stalled(outcome, reason='SecretNotFound',
                   says=("spec.aws.credentialsSecretRef: Secret 'no-such-secret' not found",))


def test_a_secret_without_its_key_stalls_naming_the_secret_and_the_key(bed: Bed):
    bare = make_repo(bed.repos, 'secret-key', {'Dockerfile': DOCKERFILE})
    bed.main.cluster.apply_secrets(**{'aws-no-secret-key': {'accessKeyId': SANDBOX_KEYS['accessKeyId']}})
    spec = spec_for(bed, 'secret-key', bare.as_uri(), aws={'credentialsSecretRef': {'name': 'aws-no-secret-key'}})
    outcome = run_case(bed, 'secret-key', spec, stall=True)
    assert_stalled(outcome, reason='SecretKeyNotFound',
                   says=("spec.aws.credentialsSecretRef: Secret 'aws-no-secret-key' has no key 'secretAccessKey'",))


def test_a_spec_the_schema_admits_but_the_operator_refuses_stalls_as_invalid_spec_naming_the_field(bed: Bed):
    """The one check the CRD cannot say: the ECR repository name derived from the source URL (here
    'bad-input-invalid..spec', which ECR refuses) when spec.image.repository is unset.  The schema admits
    the URL; the operator's validation refuses the spec: Stalled until it changes.  (Everything else the
    models check, the schema checks too: tests/unit/test_schema_agreement.py.)"""
    bare = make_repo(bed.repos, 'invalid..spec', {'Dockerfile': DOCKERFILE})
    spec = spec_for(bed, 'invalid-spec', bare.as_uri())
    outcome = run_case(bed, 'invalid-spec', spec, stall=True)
    assert_stalled(outcome, reason='InvalidSpec', says=('spec.image.repository: must be set: the name derived from spec.source.url',))


class _Listener:
    """A TCP port that counts the connections made to it (and answers none)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def test_a_token_for_a_git_host_the_operator_does_not_allow_stalls_before_any_connection(bed: Bed):
    """The sandbox's operator sends tokens to github.com, http://127.0.0.1 (any port) and file:// only
    (PANDA_DEPLOY_GIT_HOSTS): 127.0.0.2 is another host. Stalled until the spec or that setting changes,
    though the Secret is there to be sent: no run starts (no stage, no deployment id) and the port counts no
    connection. (Without the check, git goes there through the sandbox's HTTP proxy, token ready.)"""
    bed.main.cluster.apply_secrets(**{'gh-elsewhere': {'token': 'ghp_' + 'E' * 36}})
    listener = _Listener('127.0.0.2')
    try:
        url = f'http://127.0.0.2:{listener.port}/{OWNER}/token-elsewhere.git'
        spec = spec_for(bed, 'token-elsewhere', url, source={'tokenSecretRef': {'name': 'gh-elsewhere'}})
        outcome = run_case(bed, 'token-elsewhere', spec, stall=True)
    finally:
        listener.close()
    assert listener.connections == 0, 'something connected to the host the token was aimed at'
    assert_stalled(outcome, reason='SourceNotAllowed',
                   says=(f'spec.source.url {url} may not be sent the token of spec.source.tokenSecretRef',
                         'PANDA_DEPLOY_GIT_HOSTS (github.com,http://127.0.0.1:*,file://)',
                         f'http://127.0.0.2:{listener.port} is not one of them'))


# ---------------------------------------------------------------------------------------------
# Stage 1 failures: source and Dockerfile.


def test_wrong_aws_keys_fail_as_invalid_credentials_naming_the_secret(bed: Bed):
    bare = make_repo(bed.repos, 'wrong-keys', {'Dockerfile': DOCKERFILE})
    wrong = {'accessKeyId': 'PANDAWRONGACCESSKEY1', 'secretAccessKey': 'wrong-secret-access-key-value'}
    bed.main.cluster.apply_secrets(**{'aws-wrong': wrong})
    spec = spec_for(bed, 'wrong-keys', bare.as_uri(), aws={'credentialsSecretRef': {'name': 'aws-wrong'}})
    outcome = run_case(bed, 'wrong-keys', spec)
    message = assert_failed(outcome, stage='Build', reason='InvalidCredentials', aws=set(),
                            says=('ECR DescribeImages', 'UnrecognizedClientException',
                                  "credentials used: the keys in Secret 'aws-wrong' (spec.aws.credentialsSecretRef)"))
    everything = json.dumps(outcome.found) + json.dumps(outcome.events)
    assert wrong['accessKeyId'] not in everything and wrong['secretAccessKey'] not in everything
    assert message


def test_a_wrong_github_token_fails_as_source_auth_failed_without_showing_it(bed: Bed):
    make_repo(bed.repos / 'served', 'private', {'Dockerfile': DOCKERFILE})
    right, wrong = 'ghp_' + 'R' * 36, 'ghp_' + 'W' * 36
    bed.main.cluster.apply_secrets(**{'gh-wrong': {'token': wrong}})
    with githttp.serving(bed.repos / 'served', token=right) as server:
        url = server.url(f'{OWNER}/private.git')
        spec = spec_for(bed, 'wrong-token', url, source={'tokenSecretRef': {'name': 'gh-wrong', 'key': 'token'}})
        outcome = run_case(bed, 'wrong-token', spec)
        assert any(sent for _, _, sent in server.requests), 'the (wrong) token was sent, and refused'
    assert_failed(outcome, stage='Build', reason='SourceAuthFailed', aws=set(),
                  says=(f'authentication to {url} failed',
                        "credentials used: key 'token' of Secret 'gh-wrong' (spec.source.tokenSecretRef)"))
    everything = json.dumps(outcome.found) + json.dumps(outcome.events)
    encoded = base64.b64encode(f'x-access-token:{wrong}'.encode()).decode()
    assert wrong not in everything and encoded not in everything and right not in everything


def test_a_repository_that_does_not_exist_fails_as_source_not_found_naming_it(bed: Bed):
    url = (bed.repos / OWNER / 'no-such-repository.git').as_uri()
    outcome = run_case(bed, 'no-repository', spec_for(bed, 'no-repository', url))
    assert_failed(outcome, stage='Build', reason='SourceNotFound', aws=set(), says=(f'repository {url} not found',))


def test_a_branch_that_does_not_exist_fails_as_revision_not_found_naming_it(bed: Bed):
    bare = make_repo(bed.repos, 'no-branch', {'Dockerfile': DOCKERFILE})
    spec = spec_for(bed, 'no-branch', bare.as_uri(), source={'branch': 'release/no-such-branch'})
    outcome = run_case(bed, 'no-branch', spec)
    assert_failed(outcome, stage='Build', reason='RevisionNotFound', aws=set(),
                  says=(f"branch 'release/no-such-branch' not found in {bare.as_uri()}",))


def test_no_dockerfile_fails_as_dockerfile_not_found_naming_the_repository(bed: Bed):
    bare = make_repo(bed.repos, 'no-dockerfile', {'README.md': 'no Dockerfile here\n', 'app/main.py': 'print(1)\n'})
    outcome = run_case(bed, 'no-dockerfile', spec_for(bed, 'no-dockerfile', bare.as_uri()))
    assert_failed(outcome, stage='Build', reason='DockerfileNotFound', aws=set(),
                  says=('Dockerfile not found', bare.as_uri(), sha_of(bare)[:7]))


def test_two_dockerfiles_at_the_same_depth_fail_as_ambiguous_naming_both(bed: Bed):
    bare = make_repo(bed.repos, 'two-dockerfiles', {'api/Dockerfile': DOCKERFILE, 'web/Dockerfile': DOCKERFILE})
    outcome = run_case(bed, 'two-dockerfiles', spec_for(bed, 'two-dockerfiles', bare.as_uri()))
    assert_failed(outcome, stage='Build', reason='AmbiguousDockerfile', aws=set(),
                  says=('api/Dockerfile, web/Dockerfile', 'spec.source.dockerfile'))


def test_a_dockerfile_that_fails_is_build_failed_with_exit_code_and_log_and_nothing_pushed(bed: Bed):
    failing = f'FROM {localdocker.BASE_IMAGE}\nRUN echo about to fail && echo no-such-tool-here >&2 && exit 7\n'
    bare = make_repo(bed.repos, 'build-fails', {'Dockerfile': failing})
    outcome = run_case(bed, 'build-fails', spec_for(bed, 'build-fails', bare.as_uri()))
    assert_failed(outcome, stage='Build', reason='BuildFailed', aws=set(),
                  says=(f'docker build of {OWNER}-build-fails:{sha_of(bare)} failed (exit code 7)',
                        'no-such-tool-here'))
    assert bed.client.api.images(name=f'{OWNER}-build-fails') == [], 'no image was tagged'


def _sleeping_builds(client: docker.DockerClient, marker: str) -> list[str]:
    """Running containers whose command has `marker` (one listing request: the engine is shared)."""
    return [c['Id'] for c in client.api.containers() if marker in (c.get('Command') or '')]


def assert_build_stopped(bed: Bed, name: str, marker: str) -> None:
    """No build step of `name` runs on: the step container the operator logged (when the build had got that
    far before the limit) is gone, and no container runs the step's command."""
    log = bed.sandbox.operator_log.read_text(errors='replace')
    steps = [found.group(1) for line in log.splitlines() if f'default/{name}]' in line
             if (found := re.search(r'---> Running in ([0-9a-f]{12,64})', line))]
    wait_for(lambda: _sleeping_builds(bed.client, marker) == [], timeout=30, what='the build step to be killed')
    for step in steps:
        wait_for(lambda step=step: all(c.get('State') != 'running' for c in bed.client.api.containers(
            all=True, filters={'id': step})), timeout=30, what=f'build step container {step} to stop')
    print(f'{name}: build step containers stopped: {steps}')


def test_a_stage_timeout_fails_the_run_naming_stage_and_limit_and_stops_the_build(bed: Bed):
    marker = 'sleep 1237'
    bare = make_repo(bed.repos, 'stage-timeout', {'Dockerfile': f'FROM {localdocker.BASE_IMAGE}\nRUN {marker}\n'})
    spec = spec_for(bed, 'stage-timeout', bare.as_uri(), timeouts={'stageSeconds': '4s', 'totalSeconds': '5m'})
    outcome = run_case(bed, 'stage-timeout', spec)
    assert_failed(outcome, stage='Build', reason='StageTimeout', aws=set(),
                  says=('Stage 1 (Build) timed out after 4 seconds (timeout: 4 seconds)',))
    assert_build_stopped(bed, 'stage-timeout', marker)


def test_a_total_timeout_fails_the_run_naming_the_stage_reached_and_limit(bed: Bed):
    marker = 'sleep 1238'
    bare = make_repo(bed.repos, 'total-timeout', {'Dockerfile': f'FROM {localdocker.BASE_IMAGE}\nRUN {marker}\n'})
    spec = spec_for(bed, 'total-timeout', bare.as_uri(), timeouts={'stageSeconds': '10m', 'totalSeconds': '5s'})
    outcome = run_case(bed, 'total-timeout', spec)
    assert_failed(outcome, stage='Build', reason='StageTimeout', aws=set(),
                  says=('Deployment timed out at stage 1 (Build) after 5 seconds (timeout: 5 seconds)',))
    assert_build_stopped(bed, 'total-timeout', marker)


# ---------------------------------------------------------------------------------------------
# Later stages: push, service, health check.


def test_a_refused_push_fails_as_push_failed_naming_the_target(bed: Bed, refusing_stack: Stack):
    bare = make_repo(bed.repos, 'push-refused', {'Dockerfile': DOCKERFILE})
    outcome = run_case(bed, 'push-refused', spec_for(bed, 'push-refused', bare.as_uri()), stack=refusing_stack)
    sha = sha_of(bare)
    assert_failed(outcome, stage='Push', reason='PushFailed', aws={f'ecr-repository {OWNER}-push-refused'},
                  says=(f'push of {refusing_stack.registry}/{OWNER}-push-refused:{sha} failed',))
    assert refusing_stack.registry_data is not None
    assert not (refusing_stack.registry_data / f'{OWNER}-push-refused').exists(), 'the registry stored nothing'


def test_an_ecs_cluster_that_does_not_exist_fails_as_service_update_failed_naming_it(bed: Bed):
    bare = make_repo(bed.repos, 'no-cluster', {'Dockerfile': DOCKERFILE})
    spec = spec_for(bed, 'no-cluster', bare.as_uri(), ecs={'cluster': 'no-such-cluster'})
    outcome = run_case(bed, 'no-cluster', spec)
    sha, repository = sha_of(bare), f'{OWNER}-no-cluster'
    assert_failed(outcome, stage='Service', reason='ServiceUpdateFailed',
                  says=('ECS service no-cluster in cluster no-such-cluster', 'cluster no-such-cluster not found'),
                  aws={f'ecr-repository {repository}', f'ecr-image {repository}:{sha}', f'registry {repository}',
                       'task-definition no-cluster:1'})


class _Health(http.server.ThreadingHTTPServer):
    """Answers the first request 200 (the service is up), then 500: a green that goes bad."""
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(('127.0.0.1', 0), _HealthHandler)
        self.seen: list[tuple[str, str]] = []


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    server: _Health

    def do_GET(self) -> None:  # noqa: N802
        self.server.seen.append((self.path, self.headers.get('User-Agent', '')))
        status = 200 if len(self.server.seen) == 1 else 500
        body = f'check {len(self.server.seen)}\n'.encode()
        self.send_response(status)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def test_a_health_check_url_the_operator_denies_fails_at_once_without_a_request(bed: Bed):
    """PANDA_DEPLOY_HEALTH_CHECK_DENY (here the default plus 127.0.0.9, where the test listens): Verify fails
    HealthCheckURLNotAllowed at its first check instead of waiting for an answer until the stage timeout, and
    nothing connects (not even through the sandbox's HTTP proxy, which the URL would take)."""
    bare = make_repo(bed.repos, 'denied-check', {'Dockerfile': DOCKERFILE})
    listener = _Listener(DENIED_HOST)
    try:
        url = f'http://{DENIED_HOST}:{listener.port}/latest/meta-data/'
        spec = spec_for(bed, 'denied-check', bare.as_uri(), healthCheck={'url': url})
        outcome = run_case(bed, 'denied-check', spec)
    finally:
        listener.close()
    sha, repository = sha_of(bare), f'{OWNER}-denied-check'
    assert listener.connections == 0, 'the health check connected'
    assert_failed(outcome, stage='Verify', reason='HealthCheckURLNotAllowed',
                  says=(f'Health check URL {url} is not allowed: {DENIED_HOST} is in {DENIED_HOST}/32',
                        'PANDA_DEPLOY_HEALTH_CHECK_DENY'),
                  aws={f'ecr-repository {repository}', f'ecr-image {repository}:{sha}', f'registry {repository}',
                       'task-definition denied-check:1', f'ecs-service {bed.sandbox.world.cluster}/denied-check'})
    verify = outcome.status['stages'][-1]
    seconds = (datetime.datetime.fromisoformat(verify['completedAt'].replace('Z', '+00:00'))
               - datetime.datetime.fromisoformat(verify['startedAt'].replace('Z', '+00:00'))).total_seconds()
    assert seconds < 10, f'Verify took {seconds:.0f}s: it waited instead of failing at once'


def test_a_failing_health_check_fails_naming_the_url_and_moves_no_traffic(bed: Bed):
    bare = make_repo(bed.repos, 'unhealthy', {'Dockerfile': DOCKERFILE})
    server = _Health()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/healthz'
        spec = spec_for(bed, 'unhealthy', bare.as_uri(), healthCheck={'url': url})
        outcome = run_case(bed, 'unhealthy', spec)
    finally:
        server.shutdown()
        server.server_close()
    sha, repository = sha_of(bare), f'{OWNER}-unhealthy'
    assert_failed(outcome, stage='Verify', reason='HealthCheckFailed',
                  says=(f'Health check of {url} failed 2/3 checks (HTTP 500)',),
                  aws={f'ecr-repository {repository}', f'ecr-image {repository}:{sha}', f'registry {repository}',
                       'task-definition unhealthy:1', f'ecs-service {bed.sandbox.world.cluster}/unhealthy'})
    assert server.seen == [('/healthz', HEALTH_CHECK_AGENT)] * 3
    check = outcome.status['healthCheck']
    assert (check['url'], check['passed'], check['failed'], check['total']) == (url, 1, 2, 3)
    assert 'codeDeployDeploymentId' not in outcome.status and 'activeColor' not in outcome.status
