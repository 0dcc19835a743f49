"""Notifications of a run's start and end: delivered beside the run, never in its way.

`Notifications` is the operator's `Notifier`. For each run it binds the
channels `spec.notify` turns on (a GitHub commit status, a signed webhook) and
hands the recorder a `RunNotices` whose calls only queue a notice. Delivery
runs as an asyncio task on the operator's loop, each POST on this module's own
two threads (not the run's worker pool), so a slow or dead server holds no
worker and no stage. A failed POST is tried again after `backoff` (bounded:
four attempts over about 20 seconds by default), then given up with a log line:
a notification never fails a run, and writes nothing to the resource (no status
field, no Event), so it adds nothing to a run's Kubernetes API writes.

Order: for one channel, a newer notice about the same commit (commit status)
or the same run (webhook) replaces an older one still waiting to be retried,
and the two are never sent at once, so a late `pending` cannot land on top of
the `success` that followed it.

What is sent never holds a secret: messages come from the status, which the
run has already redacted, and failures are logged redacted with the run's
credentials.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime
import logging
import urllib.parse
from collections.abc import Callable
from typing import Literal

from controller import metrics
from controller.adapters.github_status import CommitStatus, CommitStatuses, GitHubApis
from controller.adapters.notices import RunNotices, Silent
from controller.adapters.post import DEADLINE_SECONDS, PostFailed
from controller.adapters.webhook import MESSAGE_LIMIT, WEBHOOK_HOSTS_VARIABLE, Webhook
from controller.credentials import Credentials, redact
from controller.egress import DeniedNetworks, GitHosts, origin_of
from controller.errors import NotificationNotAllowed
from controller.models import PandaDeploySpec, PandaDeployStatus, RunResult, cap_message

DEFAULT_BACKOFF = (2.0, 5.0, 12.0)
MAX_PENDING = 1000  # deliveries waiting or retrying at once; past it a notice is dropped (and logged)
GITHUB_STATES = {RunResult.succeeded: 'success', RunResult.failed: 'failure'}  # superseded, cancelled: error

log = logging.getLogger('panda-deploy.notify')


def notify_denied(also: DeniedNetworks | None = None) -> DeniedNetworks:
    """Where no notification connects: always link-local and EC2's IPv6 metadata address, and `also`
    (PANDA_DEPLOY_HEALTH_CHECK_DENY), whatever an admin set there."""
    return DeniedNetworks(tuple(dict.fromkeys(DeniedNetworks.default().networks + (also.networks if also else ()))))


@dataclasses.dataclass(frozen=True)
class NotifySettings:
    """The operator's notification settings, read by `controller.config`."""
    github_apis: GitHubApis = dataclasses.field(default_factory=GitHubApis.default)
    """PANDA_DEPLOY_GITHUB_API: the git hosts that are GitHub, and their API base URL."""
    webhook_hosts: GitHosts = dataclasses.field(default_factory=GitHosts)
    """PANDA_DEPLOY_WEBHOOK_HOSTS: where a webhook may be sent (default: nowhere)."""
    target_url: str | None = None
    """PANDA_DEPLOY_NOTIFY_URL: the link sent along ({namespace}, {name}, {deploymentId}, {revision} filled in)."""
    denied: DeniedNetworks = dataclasses.field(default_factory=notify_denied)
    """Never connected to: link-local and PANDA_DEPLOY_HEALTH_CHECK_DENY."""
    backoff: tuple[float, ...] = DEFAULT_BACKOFF
    """Seconds before each retry of a failed POST."""
    deadline: float = DEADLINE_SECONDS
    """Seconds one POST may take, answer included."""


@dataclasses.dataclass(frozen=True)
class RunNotice:
    """One notice about one run, taken from its status when it was queued."""
    namespace: str
    name: str
    deployment_id: str
    generation: int
    revision: str | None
    result: RunResult | None  # None: the run started
    reason: str | None
    message: str
    timestamp: str
    url: str | None

    @property
    def github_state(self) -> str:
        return 'pending' if self.result is None else GITHUB_STATES.get(self.result, 'error')

    def payload(self) -> dict[str, object]:
        """The webhook's JSON body."""
        return {'kind': 'PandaDeploy', 'namespace': self.namespace, 'name': self.name,
                'deploymentId': self.deployment_id, 'generation': self.generation, 'revision': self.revision,
                'event': 'started' if self.result is None else 'ended',
                'result': None if self.result is None else self.result.value, 'reason': self.reason,
                'message': self.message, 'url': self.url, 'timestamp': self.timestamp}


Send = Callable[[RunNotice], None]  # one POST; raises PostFailed


@dataclasses.dataclass(frozen=True)
class Channel:
    """Where a resource's notices go: its kind (the metric's label), its name in logs, what orders them, how one
    is sent."""
    kind: Literal['commit_status', 'webhook']
    name: str
    key: Callable[[RunNotice], str | None]  # notices with one key replace each other; None: not sent
    send: Send


class Notifications:
    """The `Notifier`: builds each run's channels and delivers their notices, retried, off the run's path."""

    def __init__(self, *, settings: NotifySettings | None = None) -> None:
        self.settings = settings or NotifySettings()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix='notify')
        self._latest: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sequence = 0

    def check(self, spec: PandaDeploySpec) -> None:
        """`NotificationNotAllowed` for a webhook URL or a commit status the operator's settings refuse."""
        notify, source = spec.notify, spec.source
        if notify.webhook is not None and not self.settings.webhook_hosts.allows(notify.webhook.url):
            origin = origin_of(notify.webhook.url)  # not the path: chat tools put their secret there
            raise NotificationNotAllowed(
                f'spec.notify.webhook.url on {origin or "a host that cannot be told for certain"} is not allowed: '
                f'the operator sends webhooks only to the hosts in {WEBHOOK_HOSTS_VARIABLE} '
                f'({self.settings.webhook_hosts})')
        if notify.commit_status and source.token_secret_ref is None:
            raise NotificationNotAllowed('spec.notify.commitStatus needs spec.source.tokenSecretRef (a token '
                                         'allowed to write commit statuses)')
        if notify.commit_status and self.settings.github_apis.base_for(source.clone_url) is None:
            raise NotificationNotAllowed(
                f'spec.notify.commitStatus: the source is not on a GitHub host the operator knows '
                f'(PANDA_DEPLOY_GITHUB_API: {self.settings.github_apis})')

    def for_run(self, *, namespace: str, name: str, spec: PandaDeploySpec,
                credentials: Credentials) -> RunNotices:
        channels = self._channels(namespace, name, spec, credentials)
        if not channels:
            return Silent()
        return BoundNotices(notifications=self, namespace=namespace, name=name, channels=tuple(channels),
                            secrets=tuple(credentials.values()), url=self.settings.target_url)

    def _channels(self, namespace: str, name: str, spec: PandaDeploySpec, credentials: Credentials) -> list[Channel]:
        found, settings, where = [], self.settings, f'{namespace}/{name}'
        base = settings.github_apis.base_for(spec.source.clone_url)
        if spec.notify.commit_status and base and credentials.github_token:
            owner, repo = spec.source.owner_repo
            statuses = CommitStatuses(base=base, owner=owner, repo=repo.removesuffix('.git'),
                                      token=credentials.github_token, denied=settings.denied,
                                      deadline=settings.deadline)
            context = f'panda-deploy/{where}'

            def post_status(notice: RunNotice) -> None:
                assert notice.revision is not None
                statuses.create(notice.revision, CommitStatus(state=notice.github_state, context=context,
                                                              description=notice.message, target_url=notice.url))
            found.append(Channel('commit_status', f'commit status {context}', lambda n: _status_key(where, n),
                                 post_status))
        webhook = spec.notify.webhook
        if webhook is not None and credentials.webhook_key and settings.webhook_hosts.allows(webhook.url):
            hook = Webhook(url=webhook.url, key=credentials.webhook_key, denied=settings.denied,
                           deadline=settings.deadline)
            found.append(Channel('webhook', f'webhook of {where}', lambda n: f'webhook {where} {n.deployment_id}',
                                 lambda n: hook.send(n.payload(), event=str(n.payload()['event']))))
        return found

    def submit(self, channel: Channel, notice: RunNotice, secrets: tuple[str, ...]) -> None:
        """Queue the delivery (on the running loop); returns at once."""
        key = channel.key(notice)
        if key is None:
            return
        if len(self._tasks) >= MAX_PENDING:
            log.warning('%s: %d notifications waiting; this one is dropped', channel.name, len(self._tasks))
            metrics.NOTIFICATIONS.labels(channel.kind, 'dropped').inc()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called off the loop: a bug of the caller's, which must not fail its run
            log.error('%s: a notice of %s was queued outside the event loop; not sent', channel.name,
                      notice.deployment_id)
            return
        self._sequence += 1
        self._latest[key] = self._sequence
        task = loop.create_task(self._deliver(channel, key, self._sequence, notice, secrets))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the deliveries queued so far (and those they queue)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _deliver(self, channel: Channel, key: str, sequence: int, notice: RunNotice,
                       secrets: tuple[str, ...]) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            for attempt, delay in enumerate((0.0, *self.settings.backoff), start=1):
                await asyncio.sleep(delay)
                async with lock:
                    if self._latest.get(key) != sequence:
                        return  # a newer notice replaced this one
                    if await self._attempt(channel, notice, attempt, secrets):
                        return
            log.warning('%s: gave up after %d attempts', channel.name, len(self.settings.backoff) + 1)
            metrics.NOTIFICATIONS.labels(channel.kind, 'failed').inc()
        finally:
            if self._latest.get(key) == sequence:
                del self._latest[key]
                self._locks.pop(key, None)

    async def _attempt(self, channel: Channel, notice: RunNotice, attempt: int, secrets: tuple[str, ...]) -> bool:
        """One POST; whether the delivery is over (sent, or failed for good)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, channel.send, notice)
        except PostFailed as exc:
            log.warning('%s: %s notice of %s not sent (attempt %d): %s', channel.name, notice.github_state,
                        notice.deployment_id, attempt, redact(exc.message, secrets))
            if not exc.retryable:
                metrics.NOTIFICATIONS.labels(channel.kind, 'failed').inc()
            return not exc.retryable
        except Exception as exc:  # a bug here must not go unseen, nor fail anything else: logged, not retried
            log.error('%s: %s notice of %s not sent: %s: %s', channel.name, notice.github_state,
                      notice.deployment_id, type(exc).__name__, redact(str(exc), secrets))
            metrics.NOTIFICATIONS.labels(channel.kind, 'failed').inc()
            return True
        log.info('%s: %s notice of %s sent', channel.name, notice.github_state, notice.deployment_id)
        metrics.NOTIFICATIONS.labels(channel.kind, 'sent').inc()
        return True


def _status_key(where: str, notice: RunNotice) -> str | None:
    """Commit statuses replace each other per commit; without a commit there is none to post."""
    return f'status {where} {notice.revision}' if notice.revision else None


@dataclasses.dataclass(frozen=True)
class BoundNotices:
    """The `RunNotices` of one run: its start and end queued on each of its channels."""
    notifications: Notifications
    namespace: str
    name: str
    channels: tuple[Channel, ...]
    secrets: tuple[str, ...] = dataclasses.field(repr=False)
    url: str | None = None

    def started(self, status: PandaDeployStatus) -> None:
        revision = (status.revision or '')[:12]
        self._queue(status, None, None, f'Deploying {revision} ({status.deployment_id})')

    def ended(self, status: PandaDeployStatus, *, result: RunResult, reason: str) -> None:
        self._queue(status, result, reason, status.message or result.value)

    def _queue(self, status: PandaDeployStatus, result: RunResult | None, reason: str | None, message: str) -> None:
        notice = RunNotice(namespace=self.namespace, name=self.name, deployment_id=status.deployment_id or '',
                           generation=status.observed_generation or 0, revision=status.revision, result=result,
                           reason=reason, message=cap_message(redact(message, self.secrets), MESSAGE_LIMIT),
                           timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                           url=self._link(status))
        for channel in self.channels:
            self.notifications.submit(channel, notice, self.secrets)

    def _link(self, status: PandaDeployStatus) -> str | None:
        """PANDA_DEPLOY_NOTIFY_URL with the run's names filled in (URL-quoted), or None."""
        if not self.url:
            return None
        values = {'{namespace}': self.namespace, '{name}': self.name,
                  '{deploymentId}': status.deployment_id or '', '{revision}': status.revision or ''}
        link = self.url
        for placeholder, value in values.items():
            link = link.replace(placeholder, urllib.parse.quote(value, safe=''))
        return link
