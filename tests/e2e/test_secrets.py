"""No secret leaks: one real run with a known GitHub token and known AWS keys, then a scan of everything.

The stack is the demo's (`controller.sandbox.stack.sandbox.start_sandbox`): the
operator as a process with the REAL adapters, the API emulator, the AWS
sandbox, a registry and the Docker engine. The sample repository is served
over smart HTTP by `git http-backend` demanding the token (as GitHub does),
so the token really travels; the AWS keys sign every AWS call and the ECR
password (the sandbox's `<account>-auth-token`) logs the push in.

While the runs go on, a sampler reads the argv and the environment of the
operator and of every process below it (git, git-remote-http, the credential
helper's shell...) from /proc. Afterwards the test scans: the operator's
log, every Event in the namespace, the resource (status included), those
samples, the image the operator built (labels, env, history), the Docker
configuration files (the operator's HOME, root's, /etc/docker), and every
file left under the operator's TMPDIR and HOME. None may hold the token, the
AWS secret key, the access key id, the token's Basic-auth form or the ECR
password. A second resource with a WRONG token fails with git's own error
quoted in its message and Event; that wrong token must not appear either.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import pathlib
import secrets
import string
import threading
import time
from collections.abc import Iterator
from typing import Any

import docker
import kubernetes
import pytest

from controller.sandbox.stack.manifests import NAME, demo_manifests
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.sandbox import BUILD_LABEL, start_sandbox
from tests.e2e.conftest import wait_for
from tests.integration.githttp import serving

pytestmark = [pytest.mark.docker, pytest.mark.slow]
GROUP, VERSION, PLURAL, NAMESPACE = 'deploy.panda.dev', 'v1alpha1', 'pandadeploys', 'default'
ECR_PASSWORD = '123456789012-auth-token'  # what the sandbox's (moto's) GetAuthorizationToken hands out


class ProcessSampler(threading.Thread):
    """argv and environment of a process and all its descendants, sampled from /proc until stopped."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(name='proc-sampler', daemon=True)
        self.root_pid = root_pid
        self.seen: dict[tuple[int, str], str] = {}  # (pid, argv) -> environment
        self.rounds = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def run(self) -> None:
        while not self._halt.is_set():
            for pid in self._family():
                argv = _read(f'/proc/{pid}/cmdline')
                environ = _read(f'/proc/{pid}/environ')
                if argv:
                    self.seen[(pid, argv)] = environ
            self.rounds += 1
            time.sleep(0.005)

    def _family(self) -> list[int]:
        parents: dict[int, int] = {}
        for entry in os.listdir('/proc'):
            if entry.isdigit():
                stat = _read(f'/proc/{entry}/stat')
                if stat:  # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'
                    parents[int(entry)] = int(stat.rsplit(')', 1)[1].split()[1])
        family, frontier = {self.root_pid}, [self.root_pid]
        while frontier:
            pid = frontier.pop()
            children = [child for child, parent in parents.items() if parent == pid and child not in family]
            family.update(children)
            frontier.extend(children)
        return sorted(family)

    def programs(self) -> set[str]:
        return {os.path.basename(argv.split(' ', 1)[0]) for _, argv in self.seen}


def _read(path: str) -> str:
    try:
        with open(path, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def files_under(*roots: pathlib.Path) -> Iterator[pathlib.Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in root.rglob('*') if p.is_file() and not p.is_symlink())


@pytest.fixture(scope='module')
def client(docker_client: docker.DockerClient) -> docker.DockerClient:
    return docker_client


def test_a_real_run_leaves_no_secret_anywhere(client: docker.DockerClient, tmp_path: pathlib.Path) -> None:
    token = 'ghp_' + secrets.token_hex(18)
    wrong_token = 'ghp_' + secrets.token_hex(18)
    access_key = 'AKIA' + ''.join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    secret_key = secrets.token_urlsafe(30)
    known = {'token': token, 'wrong token': wrong_token, 'AWS secret key': secret_key, 'AWS access key id': access_key,
             'token as Basic auth': base64.b64encode(f'x-access-token:{token}'.encode()).decode(),
             'wrong token as Basic auth': base64.b64encode(f'x-access-token:{wrong_token}'.encode()).decode(),
             'ECR password': ECR_PASSWORD,
             'ECR token': base64.b64encode(f'AWS:{ECR_PASSWORD}'.encode()).decode()}
    temp_root, home = tmp_path / 'tmp', tmp_path / 'home'
    temp_root.mkdir()
    home.mkdir()

    with contextlib.ExitStack() as stack:
        printer = ProgressPrinter(out=io.StringIO())
        stack.callback(printer.close)
        sandbox = start_sandbox(stack, client, printer,
                                operator_env={'TMPDIR': str(temp_root), 'HOME': str(home)})
        sampler = ProcessSampler(sandbox.operator.pid)
        sampler.start()
        stack.callback(sampler.stop)
        sha, _ = sandbox.repository.commit(1)
        server = stack.enter_context(serving(sandbox.repository.bare.parents[1], token=token))
        url = server.url('your-org/sample-app.git')

        core = kubernetes.client.CoreV1Api(sandbox.api)
        _, resource = demo_manifests(repo_url=url, base_image=sandbox.base_image, world=sandbox.world)
        for name, data in {'github-token': {'token': token}, 'wrong-token': {'token': wrong_token},
                           'aws-creds': {'accessKeyId': access_key, 'secretAccessKey': secret_key}}.items():
            core.create_namespaced_secret(NAMESPACE, {'metadata': {'name': name}, 'stringData': data})
        resource['spec']['source']['tokenSecretRef'] = {'name': 'github-token', 'key': 'token'}
        sandbox.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, resource)
        refused = json.loads(json.dumps(resource))
        refused['metadata'] = {'name': 'wrong-token-app', 'namespace': NAMESPACE}
        refused['spec']['source']['tokenSecretRef'] = {'name': 'wrong-token', 'key': 'token'}
        refused['spec']['ecs']['service'] = 'wrong-token-app'
        sandbox.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, refused)

        def status(name: str) -> dict[str, Any]:
            found = sandbox.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
            return found.get('status') or {}

        good = wait_for(lambda: status(NAME).get('phase') in ('Succeeded', 'Failed') and status(NAME),
                        timeout=180, what='the run with the right token to finish')
        assert good['phase'] == 'Succeeded', good.get('message')
        assert good['revision'] == sha
        bad = wait_for(lambda: status('wrong-token-app').get('phase') == 'Failed' and status('wrong-token-app'),
                       timeout=60, what='the run with the wrong token to fail')
        time.sleep(0.5)  # the last Events and log lines of both runs
        sampler.stop()

        # The token really travelled, and the refusal quotes git's own words, redacted.
        assert sum(sent for _, _, sent in server.requests) >= 3, server.requests
        assert any(not sent for _, _, sent in server.requests)  # git asked without, got 401, then used the helper
        assert bad['conditions'] and 'SourceAuthFailed' in json.dumps(bad['conditions'])
        assert f'authentication to {url} failed' in bad['message']

        # What was observed, so a scan that found nothing also shows it looked.
        assert sampler.rounds > 50 and 'git' in sampler.programs(), sampler.programs()
        events = core.list_namespaced_event(NAMESPACE).items
        assert len(events) >= 8
        log = sandbox.operator_log.read_text(errors='replace')
        assert 'Stage 6/6' in log or 'Complete' in log
        # One listing call: other tests' labelled images may go between a listing and a per-image inspect.
        built_id = next(image['Id'] for image in client.api.images(filters={'label': BUILD_LABEL})
                        if any(tag.rsplit(':', 1)[-1].startswith(sha) for tag in image.get('RepoTags') or []))
        built = client.images.get(built_id)
        image_record = json.dumps([built.attrs, built.history()], default=str)

        places: dict[str, str] = {
            'operator log': log,
            'events': json.dumps([kubernetes.client.ApiClient().sanitize_for_serialization(e) for e in events]),
            'resources': json.dumps(sandbox.custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)),
            'the built image (labels, env, history)': image_record,
        }
        for (pid, argv), environ in sampler.seen.items():
            places[f'argv of pid {pid} ({argv[:60]})'] = argv
            places[f'environment of pid {pid} ({argv[:60]})'] = environ
        docker_config = [home / '.docker', pathlib.Path.home() / '.docker', pathlib.Path('/etc/docker')]
        files = list(files_under(temp_root, home, *docker_config))
        for path in files:
            places[f'file {path}'] = path.read_bytes().decode(errors='replace')

        leaks = [f'{what} in {where}' for where, text in places.items() for what, value in known.items()
                 if value in text]
        assert not leaks, leaks
        # Scratch space is cleaned up: the clone and the resolve repositories are gone.
        assert not [p for p in temp_root.iterdir() if p.name.startswith('panda-deploy-')], list(temp_root.iterdir())
        print(f'\nsecrets scan: {len(places)} places ({len(sampler.seen)} process samples of '
              f'{len(sampler.programs())} programs: {sorted(sampler.programs())}; {len(events)} events; '
              f'{len(files)} files), {len(known)} secret forms, 0 found')
