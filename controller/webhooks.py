"""Webhooks on the operator's webhook port (PANDA_DEPLOY_WEBHOOK_PORT): a git push wakes the resources that follow
that branch at once.

Two forms, both signed with the one secret the operator is configured with
(PANDA_DEPLOY_WEBHOOK_SECRET_FILE, a mounted Secret; unset: no webhooks):

- `POST /hooks/github`: GitHub's `push` event as GitHub sends it (JSON),
  signed in `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`;
  `ping` is answered, other events are accepted and ignored.
- `POST /hooks/generic`: `{"repository": URL or owner/name, "branch": NAME}`
  signed in `X-Panda-Deploy-Signature: sha256=<hex HMAC-SHA256(secret,
  TIMESTAMP + "." + body)>`, with `X-Panda-Deploy-Timestamp: TIMESTAMP`
  (Unix seconds, at most `WINDOW_SECONDS` away from the operator's clock).

A hook carries no trust: it only makes the operator ask the git server for
the branch head sooner (controller.follow); what is deployed is what the git
server says. So a valid signature proves only that the sender knows the
secret, and what a hook may cost the operator is bounded instead:

- The body is at most `MAX_BODY_BYTES` (413 beyond, before it is read), has
  a Content-Length (411 without) and arrives within `BODY_SECONDS` (408
  after: a sender trickling bytes holds one thread of the threaded server
  that long, never the others nor /healthz).
- Signatures are compared in constant time (`hmac.compare_digest`); none:
  401, a wrong one: 403. Nothing is parsed before the signature is right.
- Replays: a signed body seen before (its SHA-256, remembered for
  `REPLAY_SECONDS`, at most `REPLAY_ENTRIES` of them) is 409, whatever the
  headers around it say (GitHub signs the body only, so its delivery id
  could be changed freely); a generic hook signed more than `WINDOW_SECONDS`
  ago is 401. The memory is this process's: after a restart a replayed body
  costs at most one `git ls-remote` per resource following that branch.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import json
import pathlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

MAX_BODY_BYTES = 1 << 20  # a push event lists at most 20 commits; GitHub's own cap is 25 MB
BODY_SECONDS = 10.0
WINDOW_SECONDS = 300.0
REPLAY_SECONDS = 24 * 3600.0
REPLAY_ENTRIES = 10_000
MAX_SECRET_BYTES = 4096
GITHUB_PATH, GENERIC_PATH = '/hooks/github', '/hooks/generic'
SIGNATURE_HEADER, TIMESTAMP_HEADER = 'X-Panda-Deploy-Signature', 'X-Panda-Deploy-Timestamp'

Wake = Callable[[str, str], None]  # (repository, branch): runs on the event loop's thread, soon
Answer = tuple[int, str]


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def secret_from_file(path: pathlib.Path) -> Callable[[], bytes | None]:
    """The secret as the mounted file holds it now (a rotated Secret is picked up), None when empty or absent."""
    def read() -> bytes | None:
        try:
            with path.open('rb') as file:
                value = file.read(MAX_SECRET_BYTES + 1)
        except OSError:
            return None
        value = value.strip()
        return value if value and len(value) <= MAX_SECRET_BYTES else None
    return read


def sign(secret: bytes, payload: bytes) -> str:
    return 'sha256=' + hmac.new(secret, payload, hashlib.sha256).hexdigest()


class Webhooks:
    """Checks and answers one hook; `wake` is told the repository and branch of a valid push."""

    def __init__(self, *, secret: Callable[[], bytes | None], wake: Wake,
                 clock: Callable[[], float] = time.time) -> None:
        self.secret, self.wake, self.clock = secret, wake, clock
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()  # body digest -> when
        self._lock = threading.Lock()

    def handle(self, *, path: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """The HTTP status and text for a POST to `path` (a /hooks/ path) whose body has been read; `headers`
        by lower-case name."""
        try:
            secret = self.secret()
            if secret is None:
                raise Refused(404, 'webhooks are not configured (PANDA_DEPLOY_WEBHOOK_SECRET_FILE)')
            if path == GITHUB_PATH:
                return self._github(secret, headers, body)
            if path == GENERIC_PATH:
                return self._generic(secret, headers, body)
            raise Refused(404, 'not found')
        except Refused as refused:
            return refused.status, refused.message

    def _github(self, secret: bytes, headers: Mapping[str, str], body: bytes) -> Answer:
        _check_signature(headers.get('x-hub-signature-256'), sign(secret, body), 'X-Hub-Signature-256')
        event = headers.get('x-github-event', '')
        if event == 'ping':
            return 200, 'pong'
        if event != 'push':
            return 202, f'event {event[:64]!r} ignored: only push wakes anything'
        self._fresh(body)
        push = _json_object(headers, body)
        ref = push.get('ref')
        if not isinstance(ref, str) or not ref.startswith('refs/heads/'):
            return 202, 'not a branch push: ignored'
        repository = push.get('repository')
        if not isinstance(repository, dict):
            raise Refused(400, 'a push event names its repository')
        names = {value for field in ('clone_url', 'html_url', 'ssh_url', 'git_url', 'full_name')
                 if isinstance(value := repository.get(field), str) and 0 < len(value) <= 2048}
        if not names:
            raise Refused(400, 'a push event names its repository')
        branch = ref.removeprefix('refs/heads/')
        for name in sorted(names):
            self.wake(name, branch)
        return 202, f'looking at branch {branch}'

    def _generic(self, secret: bytes, headers: Mapping[str, str], body: bytes) -> Answer:
        stamp = headers.get(TIMESTAMP_HEADER.lower(), '')
        expected = sign(secret, stamp.encode() + b'.' + body)
        _check_signature(headers.get(SIGNATURE_HEADER.lower()), expected, SIGNATURE_HEADER)
        try:
            signed_at = float(stamp)
        except ValueError:
            raise Refused(401, f'{TIMESTAMP_HEADER} must be Unix seconds') from None
        if abs(self.clock() - signed_at) > WINDOW_SECONDS:
            raise Refused(401, f'{TIMESTAMP_HEADER} is more than {WINDOW_SECONDS:g} s away from now')
        self._fresh(body)
        hook = _json_object(headers, body)
        repository, branch = hook.get('repository'), hook.get('branch')
        for name, value in (('repository', repository), ('branch', branch)):
            if not isinstance(value, str) or not 0 < len(value) <= 2048:
                raise Refused(400, f'{name} must be a string of 1 to 2048 characters')
        assert isinstance(repository, str) and isinstance(branch, str)
        self.wake(repository, branch)
        return 202, f'looking at branch {branch}'

    def _fresh(self, body: bytes) -> None:
        """409 for a signed body seen before within REPLAY_SECONDS; else it is remembered."""
        digest, now = hashlib.sha256(body).hexdigest(), self.clock()
        with self._lock:
            while self._seen and (len(self._seen) >= REPLAY_ENTRIES
                                  or now - next(iter(self._seen.values())) > REPLAY_SECONDS):
                self._seen.popitem(last=False)
            if digest in self._seen:
                raise Refused(409, 'this delivery was seen before (replay)')
            self._seen[digest] = now


def _check_signature(given: str | None, expected: str, header: str) -> None:
    if not given:
        raise Refused(401, f'unsigned: no {header}')
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Refused(403, f'{header} does not match the body')


def _json_object(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    content_type = headers.get('content-type', '').split(';', 1)[0].strip().lower()
    if content_type != 'application/json':
        raise Refused(415, 'the body must be application/json')
    try:
        value = json.loads(body)
    except ValueError:
        raise Refused(400, 'the body is not JSON') from None
    if not isinstance(value, dict):
        raise Refused(400, 'the body is not a JSON object')
    return value
