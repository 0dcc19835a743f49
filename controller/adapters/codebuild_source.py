"""What a CodeBuild build gets: the build context as a zip in S3, and a buildspec with its variables.

The context is packed by `build_context.pack_context` (the rules and limits
of the Docker path: `.dockerignore`, no link followed, PANDA_DEPLOY_MAX_
CONTEXT_BYTES) and rewritten as the zip CodeBuild's S3 source wants, entry by
entry (a symlink stays a symlink).

The buildspec's commands are fixed text: every value (the image, the
Dockerfile, each label and build argument, a spec author's or repository's
text) reaches the build as an environment variable and is quoted by the
shell as one word, so no value can become a command. The build logs in to
ECR with the project's own role (`aws ecr get-login-password`): no
credential of the operator, and never the GitHub token, crosses into it.
"""
from __future__ import annotations

import pathlib
import stat
import tarfile
import tempfile
import zipfile
from typing import BinaryIO

import yaml

from controller.adapters import ImageBuild
from controller.adapters.build_context import pack_context

RUN_VARIABLE = 'PANDA_DEPLOY_RUN'  # names the run in the build: how a restarted operator recognises it
ECR_HOST_SUFFIX = '.amazonaws.com'


def pack_zip(context: pathlib.Path, *, dockerfile: str, max_bytes: int, into: BinaryIO) -> int:
    """Write the zip of `context` for a build with `dockerfile` into `into`; the packed tar's size in bytes
    (the figure `max_bytes` bounds, as on the Docker path)."""
    with tempfile.TemporaryFile(prefix='panda-deploy-context-') as packed:
        size = pack_context(context, dockerfile=dockerfile, max_bytes=max_bytes, into=packed)
        packed.seek(0)
        with tarfile.open(fileobj=packed, mode='r') as tar, \
                zipfile.ZipFile(into, mode='w', compression=zipfile.ZIP_DEFLATED) as archive:
            for member in tar:
                _add(archive, tar, member)
    return size


def _add(archive: zipfile.ZipFile, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
    name = member.name + ('/' if member.isdir() else '')
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    kind = stat.S_IFDIR if member.isdir() else stat.S_IFLNK if member.issym() else stat.S_IFREG
    info.external_attr = ((kind | (member.mode & 0o7777)) << 16) | (0x10 if member.isdir() else 0)
    info.compress_type = zipfile.ZIP_DEFLATED
    if member.isdir():
        archive.writestr(info, b'')
    elif member.issym():
        archive.writestr(info, member.linkname.encode('utf-8'))
    else:
        source = tar.extractfile(member)
        assert source is not None
        with source, archive.open(info, mode='w') as target:
            while chunk := source.read(1024 * 1024):
                target.write(chunk)


def registry_host(target: str) -> str:
    """The registry part of an image reference `host[:port]/name:tag`."""
    return target.split('/', 1)[0]


def buildspec(build: ImageBuild) -> tuple[str, list[dict[str, str]]]:
    """(buildspec YAML, environmentVariablesOverride) of a build that builds `build` and pushes it."""
    variables = {RUN_VARIABLE: build.run_id, 'PANDA_IMAGE': build.target, 'PANDA_DOCKERFILE': build.dockerfile,
                 'PANDA_REGISTRY': registry_host(build.target)}
    command = ['docker build --file "$PANDA_DOCKERFILE" --tag "$PANDA_IMAGE"']
    for index, (name, value) in enumerate(sorted(build.labels.items())):
        variables[f'PANDA_LABEL_{index}'] = f'{name}={value}'
        command.append(f'--label "$PANDA_LABEL_{index}"')
    for index, (name, value) in enumerate(sorted(build.build_args.items())):
        variables[f'PANDA_BUILD_ARG_{index}'] = f'{name}={value}'
        command.append(f'--build-arg "$PANDA_BUILD_ARG_{index}"')
    command.append('.')
    phases: dict[str, object] = {'build': {'commands': [' '.join(command), 'docker push "$PANDA_IMAGE"']}}
    if variables['PANDA_REGISTRY'].endswith(ECR_HOST_SUFFIX):  # ECR: log in with the project's role
        phases = {'pre_build': {'commands': [
            'aws ecr get-login-password --region "$AWS_REGION" '
            '| docker login --username AWS --password-stdin "$PANDA_REGISTRY"']}, **phases}
    text = yaml.safe_dump({'version': 0.2, 'phases': phases}, sort_keys=False, width=1000)
    return text, [{'name': name, 'value': value, 'type': 'PLAINTEXT'} for name, value in variables.items()]
