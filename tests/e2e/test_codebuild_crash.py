"""An operator killed (SIGKILL) while its CodeBuild build runs: the next one follows the same build to Ready.

The demo's stack with the REAL adapters (`start_sandbox`: git over file://, the
local registry, the AWS sandbox whose CodeBuild runner builds on the local
Docker engine, the Kubernetes API emulator, the operator as a subprocess).
The sample app's resource builds on CodeBuild, from a commit whose Dockerfile
has a slow step; once `status.codeBuildId` is written the operator is killed
and started again. The run must end Ready with the same deploymentId and the
same build, and the sandbox must have run exactly one build.
"""
from __future__ import annotations

import contextlib
import io
import time
from typing import Any

import docker
import kubernetes
import pytest

from controller.models import GROUP, PLURAL, VERSION
from controller.sandbox.demo import await_rollout
from controller.sandbox.stack import localdocker
from controller.sandbox.stack.manifests import NAME, NAMESPACE, demo_manifests
from controller.sandbox.stack.progress import ProgressPrinter
from controller.sandbox.stack.sandbox import restart_operator, start_sandbox
from tests.conftest import unavailable

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]
SLOW_STEP = 'RUN echo codebuild-slow-step && sleep 8\n'


def test_an_operator_killed_mid_build_resumes_the_same_codebuild_build(docker_client: docker.DockerClient) -> None:
    out = io.StringIO()
    with contextlib.ExitStack() as stack:
        try:
            sandbox = start_sandbox(stack, docker_client, ProgressPrinter(out=out),
                                    operator_env={'PANDA_DEPLOY_POLL_SECONDS': '0.5'})
        except localdocker.Unavailable as exc:
            unavailable(str(exc))
        work = sandbox.repository.work
        dockerfile = (work / 'Dockerfile').read_text()
        (work / 'Dockerfile').write_text(dockerfile.replace('\nCMD ', f'\n{SLOW_STEP}CMD ', 1))
        sandbox.repository.commit(1, change='a slow build step')
        secrets, resource = demo_manifests(repo_url=sandbox.repository.url, base_image=sandbox.base_image,
                                           world=sandbox.world)
        resource['spec']['healthCheck'].update(checks=2, intervalSeconds=1)
        resource['spec']['build'] = {'engine': 'codeBuild', 'codeBuild': {'serviceRoleArn': sandbox.world.role_arn}}
        core = kubernetes.client.CoreV1Api(sandbox.api)
        for secret in secrets:
            core.create_namespaced_secret(NAMESPACE, secret)
        created = sandbox.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, resource)

        status = _wait_for_build_id(sandbox)
        build_id, deployment_id = status['codeBuildId'], status['deploymentId']
        assert sandbox.aws.app.codebuild.builds[build_id].status == 'IN_PROGRESS', 'killed mid-build'
        restart_operator(sandbox)  # SIGKILL: no clean-up at all

        try:
            final = await_rollout(sandbox, int(created['metadata']['generation']))
        except Exception as exc:
            raise AssertionError(f'{exc}\n{out.getvalue()[-4000:]}') from exc
        assert (final['codeBuildId'], final['deploymentId']) == (build_id, deployment_id)
        builds = list(sandbox.aws.app.codebuild.builds.values())
        assert [(b.id, b.status) for b in builds] == [(build_id, 'SUCCEEDED')], 'one build, followed to its end'
        build = next(s for s in final['stages'] if s['name'] == 'Build')
        assert build['result'] == 'Succeeded' and build_id in build['message']


def _wait_for_build_id(sandbox: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = sandbox.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, NAME)
        status = found.get('status') or {}
        if status.get('codeBuildId'):
            return dict(status)
        time.sleep(0.1)
    raise AssertionError('status.codeBuildId was never written')
