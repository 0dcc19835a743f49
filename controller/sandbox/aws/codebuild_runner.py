"""Runs the sandbox's CodeBuild builds for real: source from moto's S3, commands on the local Docker engine.

Where CodeBuild gives each build a machine, the sandbox gives each a
temporary directory on this one: the S3 source (a zip) is fetched from moto's
S3 backend and unpacked there (bounded: `MAX_SOURCE_BYTES`, entries kept
inside the directory), and the buildspec's commands of each phase (install,
pre_build, build, post_build) run with `sh -c` in it, the build's
environment variables set, against the Docker engine this machine has. A
failing command fails its phase (post_build still runs after a failed build,
as on CodeBuild). The output goes, line by line, to the build's log stream in
moto's CloudWatch Logs (`/aws/codebuild/<project>`).

Sandbox only: the commands run on the host, as whoever runs the sandbox. They
are the operator's buildspec, sent to a sandbox that listens on localhost.

moto has no registry, so a push goes to the sandbox registry
(PANDA_DEPLOY_REGISTRY); as a push to ECR creates the image there, every
`docker push host/name:tag` of the build (seen through a `docker` shim on
PATH) is recorded in moto's ECR repository `name`, the manifest as the
registry serves it.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zipfile
from typing import Any

import yaml
from moto.backends import get_backend

from controller.adapters.plain_registry import fetch_manifest
from controller.sandbox.aws.codebuild_builds import COMMAND_PHASES, SandboxBuild

log = logging.getLogger(__name__)

MAX_SOURCE_BYTES = 512 * 1024 ** 2  # unpacked
LOG_LINE_CHARACTERS = 4096
_SHIM = '#!/bin/sh\nif [ "$1" = push ]; then printf "%s\\n" "$2" >> "$SANDBOX_PUSHES"; fi\nexec {docker} "$@"\n'


class SourceError(Exception):
    pass


def fetch_source(build: SandboxBuild, into: pathlib.Path) -> None:
    """Unpack the build's S3 source (`bucket/key` of a zip) from moto's S3 into `into`."""
    bucket, _, key = str(build.source.get('location', '')).partition('/')
    s3: Any = get_backend('s3')[build.account]['aws']
    try:
        found = s3.get_object(bucket, key)
    except Exception as exc:  # noqa: BLE001 -- moto's own NoSuchBucket / NoSuchKey
        raise SourceError(f'CLIENT_ERROR: no such key: s3://{bucket}/{key} ({type(exc).__name__})') from exc
    if found is None:
        raise SourceError(f'CLIENT_ERROR: no such key: s3://{bucket}/{key}')
    root = into.resolve()
    with zipfile.ZipFile(io.BytesIO(found.value)) as archive:
        if sum(info.file_size for info in archive.infolist()) > MAX_SOURCE_BYTES:
            raise SourceError(f'CLIENT_ERROR: source over {MAX_SOURCE_BYTES} bytes unpacked')
        for info in archive.infolist():
            target = (root / info.filename).resolve()
            if root not in (target, *target.parents):
                raise SourceError(f'CLIENT_ERROR: source entry outside the build directory: {info.filename!r}')
            mode = info.external_attr >> 16
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif mode & 0o170000 == 0o120000:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(archive.read(info).decode('utf-8'), target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, 'wb') as out:
                    shutil.copyfileobj(source, out)
                if mode & 0o777:
                    target.chmod(mode & 0o777)


class BuildLog:
    """The build's log stream in moto's CloudWatch Logs."""

    def __init__(self, build: SandboxBuild) -> None:
        self.logs: Any = get_backend('logs')[build.account][build.region]
        self.group, self.stream = build.log_group, build.log_stream
        if self.group not in self.logs.groups:
            try:
                self.logs.create_log_group(self.group, {})
            except Exception:  # noqa: BLE001 -- another build of the project made it meanwhile
                pass
        self.logs.create_log_stream(self.group, self.stream)

    def write(self, line: str) -> None:
        self.logs.put_log_events(self.group, self.stream, [
            {'timestamp': int(time.time() * 1000), 'message': line[:LOG_LINE_CHARACTERS]}])


def run_build(build: SandboxBuild) -> None:
    """Run `build` from QUEUED to COMPLETED (in a worker thread of the simulator)."""
    with tempfile.TemporaryDirectory(prefix='panda-sandbox-codebuild-') as tmp:
        workdir = pathlib.Path(tmp) / 'src'
        workdir.mkdir()
        output = BuildLog(build)
        try:
            _phases(build, workdir, pathlib.Path(tmp), output)
        except Exception as exc:  # noqa: BLE001 -- a sandbox fault is the build's FAULT, as on CodeBuild
            log.exception('CodeBuild build %s faulted in the sandbox', build.id)
            build.fail('FAULT', code='FAULT', message=repr(exc))
        for name in ('UPLOAD_ARTIFACTS', 'FINALIZING', 'COMPLETED'):
            build.enter(name)
        build.ended = build.phases[-1].ended = time.time()
        if build.status == 'IN_PROGRESS':
            build.status = 'SUCCEEDED'


def _phases(build: SandboxBuild, workdir: pathlib.Path, tmp: pathlib.Path, output: BuildLog) -> None:
    for name in ('QUEUED', 'PROVISIONING'):
        build.enter(name)
    build.enter('DOWNLOAD_SOURCE')
    try:
        fetch_source(build, workdir)
    except SourceError as exc:
        build.fail('FAILED', code='CLIENT_ERROR', message=str(exc))
        return
    spec = yaml.safe_load(str(build.source.get('buildspec') or '')) or {}
    phases = spec.get('phases') or {}
    env = _environment(build, tmp)
    deadline = build.started + build.timeout_minutes * build.minute_seconds
    for name in COMMAND_PHASES:
        build.enter(name.upper())
        if build.status != 'IN_PROGRESS' and name != 'post_build':
            continue  # after a failure only post_build runs
        for command in (phases.get(name) or {}).get('commands') or []:
            if not _command(build, str(command), workdir=workdir, env=env, output=output, deadline=deadline):
                break
    _record_pushes(build, tmp / 'pushes')


def _environment(build: SandboxBuild, tmp: pathlib.Path) -> dict[str, str]:
    shim = tmp / 'bin'
    shim.mkdir()
    docker = shutil.which('docker') or 'docker'
    (shim / 'docker').write_text(_SHIM.format(docker=docker))
    (shim / 'docker').chmod(0o755)
    env = {'PATH': f'{shim}:{os.environ.get("PATH", "/usr/bin:/bin")}', 'HOME': str(tmp),
           'SANDBOX_PUSHES': str(tmp / 'pushes'), 'AWS_REGION': build.region, 'AWS_DEFAULT_REGION': build.region,
           'CODEBUILD_BUILD_ID': build.id, 'CODEBUILD_BUILD_ARN': build.arn,
           'CODEBUILD_BUILD_NUMBER': str(build.number), 'CODEBUILD_SRC_DIR': str(tmp / 'src')}
    if 'DOCKER_HOST' in os.environ:
        env['DOCKER_HOST'] = os.environ['DOCKER_HOST']
    for variable in build.environment.get('environmentVariables') or []:
        env[str(variable['name'])] = str(variable.get('value', ''))
    return env


def _command(build: SandboxBuild, command: str, *, workdir: pathlib.Path, env: dict[str, str], output: BuildLog,
             deadline: float) -> bool:
    """Run one command, its output to the log; False (the phase failed, timed out or was stopped) to stop."""
    output.write(f'[Container] Running command {command}')
    process = subprocess.Popen(['sh', '-c', command], cwd=workdir, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    ended = threading.Event()
    watcher = threading.Thread(target=_watch, args=(build, process, ended, deadline), daemon=True)
    watcher.start()
    assert process.stdout is not None
    for line in process.stdout:
        output.write(line.decode('utf-8', 'replace').rstrip('\n'))
    code = process.wait()
    ended.set()
    watcher.join()
    if build.stop.is_set() or time.time() > deadline:
        stopped = build.stop.is_set()
        build.fail('STOPPED' if stopped else 'TIMED_OUT', code='BUILD_STOPPED' if stopped else 'BUILD_TIMED_OUT',
                   message='Build was stopped' if stopped else f'Build timed out after {build.timeout_minutes} '
                                                               'minutes')
        return False
    if code != 0:
        build.fail('FAILED', code='COMMAND_EXECUTION_ERROR',
                   message=f'Error while executing command: {command}. Reason: exit status {code}')
        output.write(f'[Container] Command did not exit successfully {command} exit status {code}')
        return False
    return True


def _watch(build: SandboxBuild, process: subprocess.Popen[bytes], ended: threading.Event, deadline: float) -> None:
    """Kill the command's process group when the build is stopped or its time is up."""
    while not ended.wait(0.1):
        if build.stop.is_set() or time.time() > deadline:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return


def _record_pushes(build: SandboxBuild, pushes: pathlib.Path) -> None:
    """Record each image the build pushed in moto's ECR, as a push to ECR creates it there."""
    if not pushes.exists():
        return
    ecr: Any = get_backend('ecr')[build.account][build.region]
    for reference in pushes.read_text().split():
        registry, _, rest = reference.partition('/')
        name, _, tag = rest.rpartition(':')
        try:
            manifest, media_type = fetch_manifest(registry=registry, repository=name, reference=tag)
            digest = 'sha256:' + hashlib.sha256(manifest.encode('utf-8')).hexdigest()
            ecr.put_image(name, manifest, tag, media_type, digest)
        except Exception as exc:  # noqa: BLE001 -- e.g. the same image under its tag again
            log.info('Push of %s not recorded in ECR: %s', reference, exc)
