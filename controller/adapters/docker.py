"""The Docker engine through the `docker` SDK: build, look up and push images.

Why the low-level API: build output arrives as a stream of JSON chunks that
are neither whole lines nor one line each; reading them here lets every line
reach the run's log as it happens, keeps the last lines for the failure
message, and lets a cancelled run stop the build. Builds reuse the layer
cache (no `nocache`) and never pull (`pull=False`): base images are whatever
the engine holds. The context is packed by `controller.adapters.build_context`
(`.dockerignore` honoured as the docker CLI does, no link followed, its size
bounded) into an unnamed temporary file that the SDK streams to the engine.

A build's output is a stranger's too: each line keeps at most `LINE_LIMIT`
characters (a line without end grows nothing), the failure message keeps the
last `tail_lines` of them, and a build whose output passes `max_output_bytes`
is stopped (`BuildOutputTooLarge`): its step killed, as a cancelled one is.
Stopping, rather than only bounding memory until the stage timeout, because
such output holds a worker, the engine's CPU and the operator's log for
nothing: real builds print a few MiB at most.

Push credentials go to the engine in the push request's X-Registry-Auth
header only: no `docker login`, nothing written to ~/.docker/config.json, no
password in argv. The client is made on first use (`docker.from_env()`, so
DOCKER_HOST is honoured), which lets a run that needs no Docker work succeed
without an engine.
"""
from __future__ import annotations

import os
import pathlib
import re
import tempfile
import threading
from collections.abc import Generator, Iterable, Mapping
from typing import IO, Any, NoReturn

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from controller.adapters import BuildLimits, LogLine, RegistryAuth
from controller.adapters.build_context import pack_context
from controller.adapters.build_output import LINE_LIMIT, BuildOutput, StepContainer
from controller.credentials import redact
from controller.errors import BuildFailed, BuildOutputTooLarge, Reason, StageFailed, Transient
from controller.models import cap_message

CONNECT_TIMEOUT = 10.0
TAIL_LINES = 10
_EXIT_CODE = re.compile(r'returned a non-zero code: (\d+)')
_PUSHED_DIGEST = re.compile(r'digest: (sha256:[0-9a-f]{64})')
# A registry's answers to a push worth trying again (the engine retries layer uploads itself, not the manifest):
# a 5xx, or throttling.
_PUSH_RETRYABLE = re.compile(r'received unexpected HTTP status: (429|5\d\d)|^(toomanyrequests|unavailable)\b',
                             re.IGNORECASE)
# Mid-stream, urllib3's own errors surface (the SDK reads the raw response).
_ENGINE_DOWN = (requests.exceptions.ConnectionError, urllib3.exceptions.ProtocolError)
_SILENT = (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)


def engine_address() -> str:
    """Where the client looks for the engine (DOCKER_HOST, else the default socket)."""
    return os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'


def split_reference(reference: str) -> tuple[str, str]:
    """(repository, tag) of `repository[:tag]`; a port in the registry host is not a tag."""
    repository, colon, tag = reference.rpartition(':')
    if not colon or '/' in tag:
        return reference, 'latest'
    return repository, tag


class DockerEngine:
    """The `Docker` adapter: one SDK client, made on first use."""

    def __init__(self, *, read_timeout: float = 900.0, tail_lines: int = TAIL_LINES,
                 max_context_bytes: int = BuildLimits.context_bytes,
                 max_output_bytes: int = BuildLimits.build_output_bytes) -> None:
        self._read_timeout = read_timeout
        self._tail_lines = tail_lines
        self._max_context_bytes = max_context_bytes
        self._max_output_bytes = max_output_bytes
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    # -- Docker protocol -------------------------------------------------------------

    def build(self, *, context: pathlib.Path, dockerfile: str, tag: str, labels: Mapping[str, str],
              build_args: Mapping[str, str], log: LogLine, cancel: threading.Event) -> str:
        """Build `context` with `dockerfile` (relative to it) as `tag`; each output line goes to `log`.

        Failure: `BuildFailed` with the exit code when the engine reports one
        and the last lines of output; `ContextTooLarge`, `SymlinkNotAllowed`
        from packing the context; `BuildOutputTooLarge` (the step killed).
        `cancel` set: the step's container is killed, the stream dropped (the
        engine then abandons the build) and StageFailed(BuildFailed, "build
        cancelled") raised.
        """
        if cancel.is_set():
            raise _build_cancelled(tag)
        with tempfile.TemporaryFile() as packed:  # unnamed: gone when closed, or when the process dies
            pack_context(context, dockerfile=dockerfile, max_bytes=self._max_context_bytes, into=packed)
            packed.seek(0)
            return self._build_packed(packed, dockerfile=dockerfile, tag=tag, labels=labels,
                                      build_args=build_args, log=log, cancel=cancel)

    def _build_packed(self, packed: IO[bytes], *, dockerfile: str, tag: str, labels: Mapping[str, str],
                      build_args: Mapping[str, str], log: LogLine, cancel: threading.Event) -> str:
        """The build of the packed context (see `build`)."""
        api = self._api(reason=Reason.BUILD_FAILED)
        output = BuildOutput(log=log, tail_lines=self._tail_lines, max_bytes=self._max_output_bytes)
        finished = threading.Event()
        watcher = threading.Thread(target=self._stop_on_cancel, kwargs={'cancel': cancel, 'finished': finished,
                                                                        'step': output.step},
                                   name=f'docker-build-cancel-{tag}', daemon=True)
        watcher.start()
        try:
            stream = api.build(fileobj=packed, custom_context=True, dockerfile=dockerfile, tag=tag,
                               labels=dict(labels), buildargs=dict(build_args), rm=True, forcerm=True, pull=False,
                               decode=True)
            self._follow_build(stream, output, tag=tag, cancel=cancel)
        except BuildOutputTooLarge:
            self._kill(output.step.get())
            raise
        except _ENGINE_DOWN as exc:
            if cancel.is_set():
                raise _build_cancelled(tag) from exc
            raise Transient(f'Docker engine unreachable at {engine_address()} during the build of {tag}',
                            reason=Reason.BUILD_FAILED) from exc
        except _SILENT as exc:
            raise Transient(f'No output from the Docker engine for {self._read_timeout:.0f} seconds '
                            f'during the build of {tag}') from exc
        except docker.errors.APIError as exc:
            output.tail.append(cap_message(redact(str(exc.explanation or exc)), LINE_LIMIT))
            raise BuildFailed(image_name=tag, exit_code=None, log_tail=output.tail_text()) from exc
        finally:
            finished.set()
        if cancel.is_set():
            raise _build_cancelled(tag)
        return output.image_id if output.image_id is not None else self._image_id(tag)

    def has_image(self, tag: str) -> bool:
        """Whether the engine holds an image `tag`."""
        try:
            self._api().inspect_image(tag)
        except docker.errors.ImageNotFound:
            return False
        except _ENGINE_DOWN as exc:
            raise Transient(f'Docker engine unreachable at {engine_address()}') from exc
        return True

    def push(self, *, tag: str, target: str, auth: RegistryAuth | None, log: LogLine) -> str:
        """Tag `tag` as `target` and push it with `auth` (none when its username is empty); the pushed digest."""
        api = self._api(reason=Reason.PUSH_FAILED)
        repository, target_tag = split_reference(target)
        secrets = [auth.password] if auth is not None and auth.password else []
        _tag_for_push(api, tag, repository=repository, target_tag=target_tag)
        # An empty dict (not None) keeps the SDK from reading credentials out of ~/.docker/config.json.
        auth_config = ({'username': auth.username, 'password': auth.password}
                       if auth is not None and auth.username else {})
        try:
            stream = api.push(repository, tag=target_tag, stream=True, decode=True, auth_config=auth_config)
            try:
                digest = _follow_push(stream, target=target, secrets=secrets, log=log)
            finally:
                stream.close()
        except _ENGINE_DOWN as exc:
            raise Transient(f'Docker engine unreachable at {engine_address()} during the push of {target}',
                            reason=Reason.PUSH_FAILED) from exc
        except _SILENT as exc:
            raise Transient(f'No output from the Docker engine for {self._read_timeout:.0f} seconds '
                            f'during the push of {target}') from exc
        except docker.errors.APIError as exc:
            raise StageFailed(f'push of {target} failed: {redact(str(exc.explanation or exc), secrets)}',
                              reason=Reason.PUSH_FAILED) from exc
        if digest is None:
            raise StageFailed(f'push of {target} reported no digest', reason=Reason.PUSH_FAILED)
        return digest

    # -- inside ---------------------------------------------------------------------

    def _api(self, *, reason: str = Reason.UNEXPECTED_ERROR) -> docker.APIClient:
        with self._lock:
            if self._client is None:
                try:
                    client = docker.from_env(timeout=int(CONNECT_TIMEOUT))
                except docker.errors.DockerException as exc:  # from_env asks the engine its API version
                    raise Transient(f'Docker engine unreachable at {engine_address()}', reason=reason) from exc
                client.api.timeout = self._read_timeout  # builds may be silent for a long time
                self._client = client
            return self._client.api

    def _follow_build(self, stream: Generator[dict[str, Any], None, None], output: BuildOutput, *, tag: str,
                      cancel: threading.Event) -> None:
        """Read the build's stream to its end (or until `cancel`); an error in it raises."""
        try:
            for chunk in stream:
                if cancel.is_set():
                    break
                output.take(chunk)
                if output.size > output.max_bytes:
                    output.flush()  # the line it was printing, cut, ends the tail
                    raise BuildOutputTooLarge(image_name=tag, limit=output.max_bytes, log_tail=output.tail_text())
                if 'error' in chunk or 'errorDetail' in chunk:
                    if cancel.is_set():
                        break
                    self._build_error(chunk, output, tag=tag)
        finally:
            stream.close()  # drops the connection when stopped early: the engine abandons the build
        output.flush()

    def _build_error(self, chunk: Mapping[str, Any], output: BuildOutput, *, tag: str) -> NoReturn:
        """The build reported an error: BuildFailed with its exit code, or Transient when the engine went away."""
        output.flush()
        detail = chunk.get('errorDetail') or {}
        message = str(detail.get('message') or chunk.get('error') or 'unknown error')
        output.emit(message)
        if not self._answers():  # a stopping engine kills the step (exit 137): not the build's fault
            raise Transient(f'Docker engine at {engine_address()} stopped during the build of '
                            f'{tag} ({redact(message)})', reason=Reason.BUILD_FAILED)
        raise BuildFailed(image_name=tag, exit_code=_exit_code(detail, message), log_tail=output.tail_text())

    def _answers(self) -> bool:
        """Whether the engine takes a new request now (a stopping engine has closed its socket)."""
        try:
            self._api().ping()
        except (docker.errors.APIError, *_ENGINE_DOWN, *_SILENT):
            return False
        return True

    def _image_id(self, tag: str) -> str:
        try:
            return str(self._api().inspect_image(tag)['Id'])
        except docker.errors.ImageNotFound as exc:
            raise BuildFailed(image_name=tag, exit_code=None, log_tail='build ended without the image') from exc

    def _stop_on_cancel(self, *, cancel: threading.Event, finished: threading.Event, step: StepContainer) -> None:
        """Watches `cancel` during a build: kills the running step so that a silent step ends too."""
        while not finished.is_set():
            if cancel.wait(0.2):
                if not finished.is_set():
                    self._kill(step.get())
                return

    def _kill(self, container: str | None) -> None:
        """Kill a build step's container (forcerm then removes it)."""
        if container:
            try:
                self._api().kill(container)
            except (docker.errors.APIError, *_ENGINE_DOWN):
                pass  # the step ended meanwhile, or the engine went away: the stream ends either way


def _build_cancelled(tag: str) -> StageFailed:
    return StageFailed(f'build of {tag} cancelled', reason=Reason.BUILD_FAILED)


def _tag_for_push(api: docker.APIClient, tag: str, *, repository: str, target_tag: str) -> None:
    try:
        api.tag(tag, repository, target_tag, force=True)
    except docker.errors.ImageNotFound as exc:
        raise StageFailed(f'Local image {tag} not found in the Docker engine', reason=Reason.PUSH_FAILED) from exc
    except _ENGINE_DOWN as exc:
        raise Transient(f'Docker engine unreachable at {engine_address()}') from exc


def _follow_push(stream: Iterable[Mapping[str, Any]], *, target: str, secrets: list[str], log: LogLine) -> str | None:
    """Read a push's stream to its end, logging each status (not progress ticks); the digest it reported."""
    digest: str | None = None
    for chunk in stream:
        if 'error' in chunk or 'errorDetail' in chunk:
            _push_error(chunk, target=target, secrets=secrets, log=log)
        aux = chunk.get('aux')
        if isinstance(aux, dict) and aux.get('Digest'):
            digest = str(aux['Digest'])
        status = chunk.get('status')
        if status and not chunk.get('progressDetail', {}).get('current'):  # no progress ticks
            line = redact(f"{chunk['id']}: {status}" if chunk.get('id') else str(status), secrets)
            log(line)
            found = _PUSHED_DIGEST.search(line)
            if found and digest is None:
                digest = found.group(1)
    return digest


def _push_error(chunk: Mapping[str, Any], *, target: str, secrets: list[str], log: LogLine) -> NoReturn:
    """The registry refused the push: Transient for a 5xx or throttling, StageFailed otherwise."""
    detail = chunk.get('errorDetail') or {}
    message = redact(str(detail.get('message') or chunk.get('error') or 'unknown error'), secrets)
    log(f'push of {target} failed: {message}')
    if _PUSH_RETRYABLE.search(message):
        raise Transient(f'push of {target} failed: {message}', reason=Reason.PUSH_FAILED)
    raise StageFailed(f'push of {target} failed: {message}', reason=Reason.PUSH_FAILED)


def _exit_code(detail: Mapping[str, Any], message: str) -> int | None:
    """The failed step's exit code from the engine's error detail or message."""
    code = detail.get('code')
    if isinstance(code, int) and code:
        return code
    found = _EXIT_CODE.search(message)
    return int(found.group(1)) if found else None
