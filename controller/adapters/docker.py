"""The Docker engine through the `docker` SDK: build, look up and push images.

Why the low-level API: build output arrives as a stream of JSON chunks that
are neither whole lines nor one line each; reading them here lets every line
reach the run's log as it happens, keeps the last lines for the failure
message, and lets a cancelled run stop the build. Builds reuse the layer
cache (no `nocache`) and never pull (`pull=False`): base images are whatever
the engine holds. The SDK sends the context directory minus `.dockerignore`
matches, as the docker CLI does.

Push credentials go to the engine in the push request's X-Registry-Auth
header only: no `docker login`, nothing written to ~/.docker/config.json, no
password in argv. The client is made on first use (`docker.from_env()`, so
DOCKER_HOST is honoured), which lets a run that needs no Docker work succeed
without an engine.
"""
from __future__ import annotations

import collections
import os
import pathlib
import re
import threading
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import Any, NoReturn

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from controller.adapters import LogLine, RegistryAuth
from controller.credentials import redact
from controller.errors import BuildFailed, Reason, StageFailed, Transient

CONNECT_TIMEOUT = 10.0
TAIL_LINES = 10
_EXIT_CODE = re.compile(r'returned a non-zero code: (\d+)')
_RUNNING_IN = re.compile(r'^ ---> Running in ([0-9a-f]{12,64})\s*$')
# Terminal colour codes (the engine wraps a step's stderr in them) and other control characters: kept out
# of the log tail, which becomes the status message and Event of a failed build.
_TERMINAL_CODES = re.compile(r'\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]')
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


class _Lines:
    """Reassembles whole lines from stream fragments."""

    def __init__(self) -> None:
        self._partial = ''

    def feed(self, text: str) -> Iterator[str]:
        text = self._partial + text
        *whole, self._partial = text.split('\n')
        for line in whole:
            line = line.rstrip('\r')
            if line.strip():
                yield line

    def rest(self) -> Iterator[str]:
        if self._partial.strip():
            yield self._partial
        self._partial = ''


class DockerEngine:
    """The `Docker` adapter: one SDK client, made on first use."""

    def __init__(self, *, read_timeout: float = 900.0, tail_lines: int = TAIL_LINES) -> None:
        self._read_timeout = read_timeout
        self._tail_lines = tail_lines
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    # -- Docker protocol -------------------------------------------------------------

    def build(self, *, context: pathlib.Path, dockerfile: str, tag: str, labels: Mapping[str, str],
              build_args: Mapping[str, str], log: LogLine, cancel: threading.Event) -> str:
        """Build `context` with `dockerfile` (relative to it) as `tag`; each output line goes to `log`.

        Failure: `BuildFailed` with the exit code when the engine reports one
        and the last lines of output. `cancel` set: the step's container is
        killed, the stream dropped (the engine then abandons the build) and
        StageFailed(BuildFailed, "build cancelled") raised.
        """
        if cancel.is_set():
            raise _build_cancelled(tag)
        api = self._api(reason=Reason.BUILD_FAILED)
        output = _BuildOutput(log=log, tail_lines=self._tail_lines)
        finished = threading.Event()
        watcher = threading.Thread(target=self._stop_on_cancel, kwargs={'cancel': cancel, 'finished': finished,
                                                                        'step': output.step},
                                   name=f'docker-build-cancel-{tag}', daemon=True)
        watcher.start()
        try:
            stream = api.build(path=str(context), dockerfile=dockerfile, tag=tag, labels=dict(labels),
                               buildargs=dict(build_args), rm=True, forcerm=True, pull=False, decode=True)
            self._follow_build(stream, output, tag=tag, cancel=cancel)
        except _ENGINE_DOWN as exc:
            if cancel.is_set():
                raise _build_cancelled(tag) from exc
            raise Transient(f'Docker engine unreachable at {engine_address()} during the build of {tag}',
                            reason=Reason.BUILD_FAILED) from exc
        except _SILENT as exc:
            raise Transient(f'No output from the Docker engine for {self._read_timeout:.0f} seconds '
                            f'during the build of {tag}') from exc
        except docker.errors.APIError as exc:
            output.tail.append(redact(str(exc.explanation or exc)))
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

    def _follow_build(self, stream: Generator[dict[str, Any], None, None], output: _BuildOutput, *, tag: str,
                      cancel: threading.Event) -> None:
        """Read the build's stream to its end (or until `cancel`); an error in it raises."""
        try:
            for chunk in stream:
                if cancel.is_set():
                    break
                output.take(chunk)
                if 'error' in chunk or 'errorDetail' in chunk:
                    if cancel.is_set():
                        break
                    self._build_error(chunk, output, tag=tag)
        finally:
            stream.close()  # drops the connection when stopped early: the engine abandons the build
        output.flush()

    def _build_error(self, chunk: Mapping[str, Any], output: _BuildOutput, *, tag: str) -> NoReturn:
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

    def _stop_on_cancel(self, *, cancel: threading.Event, finished: threading.Event, step: _StepContainer) -> None:
        """Watches `cancel` during a build: kills the running step so that a silent step ends too."""
        while not finished.is_set():
            if cancel.wait(0.2):
                container = step.get()
                if container and not finished.is_set():
                    try:
                        self._api().kill(container)
                    except (docker.errors.APIError, *_ENGINE_DOWN):
                        pass  # the step ended meanwhile, or the engine went away: the stream ends either way
                return


class _StepContainer:
    """The container of the build step now running (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._id: str | None = None

    def set(self, container: str) -> None:
        with self._lock:
            self._id = container

    def get(self) -> str | None:
        with self._lock:
            return self._id


class _BuildOutput:
    """One build's output as it streams: whole lines to the run's log, the last lines kept for the
    failure message, the running step's container (for cancelling) and the image id noted."""

    def __init__(self, *, log: LogLine, tail_lines: int) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.step = _StepContainer()
        self.image_id: str | None = None
        self._log = log
        self._lines = _Lines()

    def take(self, chunk: Mapping[str, Any]) -> None:
        """One chunk of the engine's JSON stream."""
        if 'stream' in chunk:
            for line in self._lines.feed(str(chunk['stream'])):
                self.emit(line)
        elif 'status' in chunk:
            self.emit(str(chunk['status']))
        if isinstance(chunk.get('aux'), dict) and chunk['aux'].get('ID'):
            self.image_id = str(chunk['aux']['ID'])

    def emit(self, line: str) -> None:
        line = _TERMINAL_CODES.sub('', redact(line))
        self.tail.append(line)
        found = _RUNNING_IN.match(line)
        if found:
            self.step.set(found.group(1))
        self._log(line)

    def flush(self) -> None:
        """The last line, when the stream ended without its newline."""
        for line in self._lines.rest():
            self.emit(line)

    def tail_text(self) -> str:
        return '\n'.join(self.tail)


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
