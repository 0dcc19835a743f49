"""Where a run announces itself: once its revision is known (again on resume) and at its end, with the same
status writes and Events as without notifications; the reconciler's and `panda-deploy run`'s preflight of
spec.notify, and `run` delivering its notices before it exits."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import yaml

from controller.adapters.github_status import GitHubApis
from controller.adapters.notify import Notifications, NotifySettings
from controller.config import Config
from controller.credentials import resolve
from controller.egress import GitHosts
from controller.errors import NotificationNotAllowed, Reason, Stall
from controller.models import PandaDeploySpec, RunResult
from controller.reconciler import Reconciler
from tests.fakes import RecordingNotices, World
from tests.integration.test_notify import Receiver
from tests.unit.test_cli import MANIFEST, ROOT, SECRETS
from tests.unit.test_pipeline import SPEC, engine_for, make_run, new, pool, world  # noqa: F401 (fixtures)
from tests.unit.test_reconciler_runs import KEY, MemoryKube, until

WEBHOOK = {'url': 'https://chat.example.com/hooks/x', 'secretRef': {'name': 'hook', 'key': 'key'}}


async def test_a_run_announces_its_revision_once_and_its_end_with_the_same_writes(world, pool, tmp_path):
    quiet, quiet_sink = make_run()
    await engine_for(World(tmp_path / 'other'), pool).drive(new(quiet))
    run, sink = make_run()
    run.recorder.notices = notices = RecordingNotices()
    result = await engine_for(world, pool).drive(new(run))

    assert result == RunResult.succeeded
    assert notices.calls == [('started', run.status.revision), ('ended', 'Succeeded', Reason.SUCCEEDED)]
    assert len(sink.saves) == len(quiet_sink.saves) and len(sink.events) == len(quiet_sink.events)


async def test_a_failed_run_announces_its_failure_and_a_resumed_one_its_revision_again(world, pool):
    world.set_script(fail={'docker.build': {'message': 'exit 1', 'reason': Reason.BUILD_FAILED}})
    run, _ = make_run()
    run.recorder.notices = notices = RecordingNotices()
    await engine_for(world, pool).drive(new(run))
    assert notices.calls[-1] == ('ended', 'Failed', Reason.BUILD_FAILED)

    resumed, _ = make_run(status=run.status.model_copy(deep=True))
    resumed.status.phase = run.status.phase.__class__('Progressing')
    resumed.recorder.notices = again = RecordingNotices()
    resumed.recorder.started()
    assert again.calls == [('started', run.status.revision)]


def test_the_webhook_key_is_read_from_its_secret_and_counts_as_a_secret():
    spec = PandaDeploySpec.model_validate({**SPEC, 'notify': {'webhook': WEBHOOK}})
    creds = resolve(spec, lambda name: {'key': ' hmac-key-1 '} if name == 'hook' else None)
    assert creds.webhook_key == 'hmac-key-1' and 'hmac-key-1' in creds.values() and 'hmac' not in repr(creds)
    with pytest.raises(Stall, match=r"spec.notify.webhook.secretRef: Secret 'hook' has no key 'key'") as found:
        resolve(spec, lambda name: {'other': 'x'})
    assert found.value.reason == Reason.SECRET_KEY_NOT_FOUND


@pytest.mark.parametrize('notify, settings, message', [
    ({'webhook': WEBHOOK}, NotifySettings(), r'webhook.url on https://chat.example.com:443 is not allowed.*'
                                             r'PANDA_DEPLOY_WEBHOOK_HOSTS \(empty\)'),
    ({'commitStatus': True}, NotifySettings(), r'commitStatus needs spec.source.tokenSecretRef'),
])
def test_what_the_operator_does_not_allow_is_refused_before_the_run(notify, settings, message):
    spec = PandaDeploySpec.model_validate({**SPEC, 'notify': notify})
    with pytest.raises(NotificationNotAllowed, match=message):
        Notifications(settings=settings).check(spec)


def test_a_commit_status_needs_a_source_on_a_known_github():
    spec = PandaDeploySpec.model_validate({
        **SPEC, 'notify': {'commitStatus': True},
        'source': {'url': 'https://git.example.com/o/r.git', 'tokenSecretRef': {'name': 't'}}})
    with pytest.raises(NotificationNotAllowed, match='not on a GitHub host the operator knows'):
        Notifications().check(spec)
    Notifications(settings=NotifySettings(github_apis=GitHubApis.parse('git.example.com'))).check(spec)
    Notifications(settings=NotifySettings(webhook_hosts=GitHosts.parse('chat.example.com'))).check(
        PandaDeploySpec.model_validate({**SPEC, 'notify': {'webhook': WEBHOOK}}))


def test_the_operator_settings_come_from_its_environment():
    config = Config.from_env({'PANDA_DEPLOY_GITHUB_API': 'github.com=https://api.github.com,ghe.corp.example',
                              'PANDA_DEPLOY_WEBHOOK_HOSTS': 'hooks.slack.com,http://chat.internal:8080',
                              'PANDA_DEPLOY_NOTIFY_URL': 'https://grafana.example/d/pd?ns={namespace}',
                              'PANDA_DEPLOY_HEALTH_CHECK_DENY': ''})
    apis = config.notify.github_apis
    assert apis.base_for('https://github.com/o/r.git') == 'https://api.github.com'
    assert apis.base_for('https://ghe.corp.example/o/r.git') == 'https://ghe.corp.example/api/v3'
    assert apis.base_for('https://evil.example/o/r.git') is None
    assert config.notify.webhook_hosts.allows('http://chat.internal:8080/x')
    assert config.notify.target_url == 'https://grafana.example/d/pd?ns={namespace}'
    assert config.notify.denied.match('169.254.169.254')  # an empty health-check deny-list denies it still
    assert Config.from_env({}).notify.webhook_hosts.entries == ()
    with pytest.raises(ValueError, match='PANDA_DEPLOY_WEBHOOK_HOSTS: file:// is not a webhook host'):
        Config.from_env({'PANDA_DEPLOY_WEBHOOK_HOSTS': 'file://'})
    with pytest.raises(ValueError, match="PANDA_DEPLOY_WEBHOOK_HOSTS: 'ftp://x'"):
        Config.from_env({'PANDA_DEPLOY_WEBHOOK_HOSTS': 'ftp://x'})
    with pytest.raises(ValueError, match='PANDA_DEPLOY_GITHUB_API'):
        Config.from_env({'PANDA_DEPLOY_GITHUB_API': 'github.com=ftp://api'})


async def test_the_reconciler_stalls_a_resource_whose_webhook_is_not_allowed(world, pool):
    kube = MemoryKube()
    reconciler = Reconciler(kube=kube, engine=engine_for(world, pool), workers=1,  # type: ignore[arg-type]
                            notifier=Notifications())
    body = kube.put('uid-1', spec={**SPEC, 'notify': {'webhook': WEBHOOK}})
    await reconciler.reconcile(body=body, logger=logging.getLogger('t'))
    await until(lambda: 'status' in kube.objects[KEY])
    stalled = [c for c in kube.status().conditions if c.type == 'Stalled']
    assert stalled and stalled[0].reason == Reason.NOTIFICATION_NOT_ALLOWED
    assert 'PANDA_DEPLOY_WEBHOOK_HOSTS' in stalled[0].message
    await reconciler.shutdown()


def run_cli(tmp_path, manifest: dict, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / 'app.yaml').write_text(yaml.safe_dump(manifest))
    (tmp_path / 'secrets.yaml').write_text(yaml.safe_dump_all(
        [*SECRETS, {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'hook'}, 'stringData': {'key': 'k1'}}]))
    env = {**os.environ, 'PANDA_DEPLOY_ADAPTERS': 'tests.fakes:make_adapters', 'PANDA_FAKE_DIR': str(tmp_path / 'w'),
           'PANDA_DEPLOY_POLL_SECONDS': '0.05', 'PYTHONPATH': str(ROOT), **env}
    return subprocess.run([sys.executable, '-m', 'controller', 'run', '-f', 'app.yaml', '-s', 'secrets.yaml'],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_panda_deploy_run_sends_its_notices_before_it_exits_and_refuses_what_is_not_allowed(tmp_path):
    receiver = Receiver()
    try:
        hook = {'url': receiver.url, 'secretRef': {'name': 'hook', 'key': 'key'}}
        manifest = {**MANIFEST, 'spec': {**MANIFEST['spec'], 'notify': {'webhook': hook}}}
        refused = run_cli(tmp_path, manifest)
        assert refused.returncode == 2 and 'NotificationNotAllowed: spec.notify.webhook.url' in refused.stderr
        assert receiver.got == []

        done = run_cli(tmp_path, manifest, PANDA_DEPLOY_WEBHOOK_HOSTS='http://127.0.0.1:*')
        assert done.returncode == 0, done.stderr
        events = [json.loads(body)['event'] for _, body in receiver.got]
        assert events == ['started', 'ended']
    finally:
        receiver.server.shutdown()
