"""What `sandbox up` leaves in its directory for the shell, `sandbox world` and `panda-deploy run`.

- `DIR/env`: shell `export` lines, the running sandbox's endpoints (written
  last, once everything answers; removed when the sandbox stops);
- `DIR/kubeconfig`: the Kubernetes API emulator's;
- `DIR/aws-secret.yaml`: the credentials Secret `sandbox up` created in the
  cluster, as a manifest for `panda-deploy run -s`;
- `DIR/operator.log`: the operator's log (kept after the sandbox stops).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shlex
from typing import Any

import kubernetes
import yaml

from controller.sandbox.stack.manifests import SANDBOX_KEYS

SECRET_NAME = 'sandbox-aws'  # the credentials Secret of the sandbox AWS, in every namespace `sandbox up` serves
ENV, KUBECONFIG, SECRET_FILE, OPERATOR_LOG = 'env', 'kubeconfig', 'aws-secret.yaml', 'operator.log'
# The operator's sandbox environment that a shell (and `panda-deploy run`) needs too.
SHARED = ('KUBECONFIG', 'AWS_ENDPOINT_URL', 'AWS_EC2_METADATA_DISABLED', 'PANDA_DEPLOY_REGISTRY',
          'PANDA_DEPLOY_GIT_HOSTS', 'http_proxy', 'HTTP_PROXY', 'no_proxy', 'NO_PROXY', 'DOCKER_HOST')


class NoSandbox(Exception):
    """No running sandbox in this directory; the message says what to do."""


def shell_environment(operator_env: dict[str, str]) -> dict[str, str]:
    """The `export`s of DIR/env: the operator's endpoints and proxy, and the sandbox AWS keys."""
    env = {key: operator_env[key] for key in SHARED if key in operator_env}
    env.update(AWS_ACCESS_KEY_ID=SANDBOX_KEYS['accessKeyId'], AWS_SECRET_ACCESS_KEY=SANDBOX_KEYS['secretAccessKey'])
    return env


def write_env(directory: pathlib.Path, env: dict[str, str], *, comment: str) -> pathlib.Path:
    """DIR/env, written whole at once (a reader never sees half of it)."""
    path = directory / ENV
    lines = [f'# {line}' for line in comment.splitlines()]
    lines += [f'export {key}={shlex.quote(value)}' for key, value in env.items()]
    partial = path.with_name(f'.{ENV}.partial')
    partial.write_text('\n'.join(lines) + '\n')
    partial.replace(path)
    return path


def read_env(directory: pathlib.Path) -> dict[str, str]:
    """The `export`s of DIR/env; NoSandbox when there is none."""
    path = directory / ENV
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NoSandbox(f'{path} does not exist: start the sandbox first, '
                        f'panda-deploy sandbox up --dir {shlex.quote(str(directory))}') from None
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == 'export' and '=' in words[1]:
            key, value = words[1].split('=', 1)
            env[key] = value
    return env


def secret_manifest(namespace: str) -> dict[str, Any]:
    return {'apiVersion': 'v1', 'kind': 'Secret', 'type': 'Opaque',
            'metadata': {'name': SECRET_NAME, 'namespace': namespace}, 'stringData': dict(SANDBOX_KEYS)}


def write_secret_file(directory: pathlib.Path, namespace: str) -> pathlib.Path:
    path = directory / SECRET_FILE
    path.write_text(yaml.safe_dump(secret_manifest(namespace), sort_keys=False))
    return path


def ensure_secret(api: kubernetes.client.ApiClient, namespace: str) -> bool:
    """The sandbox's credentials Secret in `namespace`; True when it was created now."""
    core = kubernetes.client.CoreV1Api(api)
    try:
        core.create_namespaced_secret(namespace, secret_manifest(namespace))
    except kubernetes.client.ApiException as exc:
        if exc.status == 409:
            return False
        raise
    return True


def remove_files(directory: pathlib.Path) -> None:
    """DIR/env, DIR/kubeconfig and DIR/aws-secret.yaml: they name a sandbox that is gone (the log stays)."""
    for name in (ENV, KUBECONFIG, SECRET_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / name)
