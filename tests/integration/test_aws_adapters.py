"""The ECS, CodeDeploy, ELBv2 and HTTP adapters against a moto server and a real HTTP server.

The adapters reach AWS only through a boto3 session and `AWS_ENDPOINT_URL`,
exactly as in production; here the endpoint is the sandbox's moto server with
its CodeDeploy ECS deployment simulator (plain moto leaves deployments at
`Created`, with no targets, and cannot continue or stop them). Each test
builds its own cluster, load balancer, service and deployment group under
unique names, so the tests share one server. botocore Stubber tests pin the CodeDeploy request shapes
against the service model, so neither the adapter nor the simulator can drift
from the real API.
"""
from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import boto3
import boto3.session
import botocore.stub
import pytest

from controller.adapters import DeploymentState
from controller.adapters.codedeploy import CodeDeployDeployments, appspec, run_of
from controller.adapters.ecs import EcsService, changed_fields
from controller.adapters.elbv2 import ListenerTraffic
from controller.adapters.http import HttpProbe
from controller.errors import Reason, ServiceUpdateFailed, StageFailed, Transient
from controller.pipeline.service import task_definition
from tests.integration.awsworld import (  # noqa: F401 (aws_url and session are fixtures)
    REGION,
    World,
    aws_url,
    session,
)
from tests.integration.awsworld import (
    image_uri as _image,
)
from tests.integration.awsworld import (
    spec as _spec,
)
from tests.integration.awsworld import (
    with_layout as _with_layout,
)
from tests.integration.awsworld import (
    world as _world,
)


def _record_calls(session: boto3.session.Session) -> list[str]:
    """Operation names of every call made by clients created from `session` from now on."""
    calls: list[str] = []
    session.events.register('before-call', lambda model, **_: calls.append(model.name))
    return calls


# -- ECS --------------------------------------------------------------------------------


def test_task_definition_registered_once_then_again_after_an_image_change(session: boto3.session.Session) -> None:
    world = _world(session, group=False)
    ecs = EcsService(session=session)
    definition = task_definition(world.spec, image_uri=_image('a' * 40))

    first, registered = ecs.register_task_definition(definition)
    assert registered and first.endswith(f':task-definition/{world.spec.ecs.service}:1')
    assert ecs.register_task_definition(task_definition(world.spec, image_uri=_image('a' * 40))) == (first, False)

    second, registered = ecs.register_task_definition(task_definition(world.spec, image_uri=_image('b' * 40)))
    assert registered and second.endswith(':2')
    assert ecs.last_changes == ['containerDefinitions[web].image']
    assert ecs.register_task_definition(task_definition(world.spec, image_uri=_image('b' * 40))) == (second, False)

    bigger = world.spec.model_copy(update={'ecs': world.spec.ecs.model_copy(update={'memory': '1024'})})
    third, registered = ecs.register_task_definition(task_definition(bigger, image_uri=_image('b' * 40)))
    assert registered and third.endswith(':3') and ecs.last_changes == ['memory']


def test_task_definition_comparison_ignores_what_ecs_fills_in() -> None:
    spec = _spec('cmp', ecs={'executionRoleArn': 'arn:aws:iam::123456789012:role/exec'})
    wanted = task_definition(spec, image_uri=_image('c' * 40))
    echoed = json.loads(json.dumps(wanted))
    echoed.update(revision=4, status='ACTIVE', volumes=[], placementConstraints=[], compatibilities=['EC2', 'FARGATE'],
                  taskDefinitionArn='arn:aws:ecs:us-east-1:123456789012:task-definition/svc-cmp:4')
    container = echoed['containerDefinitions'][0]
    container.update(cpu=0, environment=[], mountPoints=[], volumesFrom=[], systemControls=[])
    container['portMappings'] = [{'containerPort': 8080, 'hostPort': 8080, 'protocol': 'tcp'}]
    assert changed_fields(wanted, echoed) == []

    without_role = dict(wanted)
    del without_role['executionRoleArn']
    assert changed_fields(without_role, echoed) == ['executionRoleArn']
    container['logConfiguration']['options']['awslogs-group'] = '/ecs/other'
    assert changed_fields(wanted, echoed) == ['containerDefinitions[web].logConfiguration']


def test_service_is_created_with_the_code_deploy_controller_on_the_blue_target_group(
        session: boto3.session.Session) -> None:
    world = _world(session, group=False)  # a first rollout: AWS has no deployment group before the service
    spec = _with_layout(world)
    ecs = EcsService(session=session)
    arn, _ = ecs.register_task_definition(task_definition(spec, image_uri=_image('a' * 40)))

    state = ecs.ensure_service(spec=spec, task_definition_arn=arn)

    assert (state.cluster, state.service, state.created) == (spec.ecs.cluster, spec.ecs.service, True)
    found = session.client('ecs').describe_services(cluster=world.spec.ecs.cluster,
                                                    services=[world.spec.ecs.service])['services'][0]
    assert found['deploymentController'] == {'type': 'CODE_DEPLOY'}
    assert found['taskDefinition'] == arn
    assert found['desiredCount'] == 1 and found['launchType'] == 'FARGATE'
    assert found['loadBalancers'] == [{'targetGroupArn': world.blue_arn, 'containerName': 'web',
                                       'containerPort': 8080}]


def test_recreated_service_takes_blue_from_the_deployment_group(session: boto3.session.Session) -> None:
    world = _world(session)  # service, then group
    ecs_api = session.client('ecs')
    ecs_api.delete_service(cluster=world.spec.ecs.cluster, service=world.spec.ecs.service, force=True)
    ecs = EcsService(session=session)
    arn, registered = ecs.register_task_definition(task_definition(world.spec, image_uri=_image('a' * 40)))
    assert not registered  # the world registered the same definition

    assert ecs.ensure_service(spec=world.spec, task_definition_arn=arn).created
    found = [s for s in ecs_api.describe_services(cluster=world.spec.ecs.cluster,
                                                  services=[world.spec.ecs.service])['services']
             if s['status'] == 'ACTIVE']
    assert found[0]['loadBalancers'][0]['targetGroupArn'] == world.blue_arn  # by name, from the group's pair


def test_existing_service_is_never_updated(session: boto3.session.Session) -> None:
    world = _world(session)
    first, _ = EcsService(session=session).register_task_definition(
        task_definition(world.spec, image_uri=_image('a' * 40)))
    assert EcsService(session=session).ensure_service(spec=world.spec, task_definition_arn=first).created is False

    calls = _record_calls(session)
    ecs = EcsService(session=session)
    second, registered = ecs.register_task_definition(task_definition(world.spec, image_uri=_image('b' * 40)))
    state = ecs.ensure_service(spec=world.spec, task_definition_arn=second)

    assert registered and state.created is False
    assert 'UpdateService' not in calls and 'CreateService' not in calls
    found = session.client('ecs').describe_services(cluster=world.spec.ecs.cluster,
                                                    services=[world.spec.ecs.service])['services'][0]
    assert found['taskDefinition'] == first  # the new revision rolls out through CodeDeploy


def test_missing_cluster_is_a_service_update_failure_naming_cluster_and_service(
        session: boto3.session.Session) -> None:
    world = _world(session, cluster=False, group=False)
    ecs = EcsService(session=session)
    arn, _ = ecs.register_task_definition(task_definition(world.spec, image_uri=_image('a' * 40)))

    with pytest.raises(ServiceUpdateFailed) as failed:
        ecs.ensure_service(spec=world.spec, task_definition_arn=arn)

    error = failed.value
    assert error.reason == Reason.SERVICE_UPDATE_FAILED
    assert (error.cluster, error.service) == (world.spec.ecs.cluster, world.spec.ecs.service)
    assert world.spec.ecs.cluster in error.message and world.spec.ecs.service in error.message
    assert 'ClusterNotFoundException' in error.message
    assert error.__cause__ is not None  # the botocore error, chained


def test_existing_service_with_the_ecs_controller_is_refused(session: boto3.session.Session) -> None:
    world = _world(session, group=False)
    arn, _ = EcsService(session=session).register_task_definition(
        task_definition(world.spec, image_uri=_image('a' * 40)))
    session.client('ecs').create_service(cluster=world.spec.ecs.cluster, serviceName=world.spec.ecs.service,
                                         taskDefinition=arn, desiredCount=1)

    with pytest.raises(ServiceUpdateFailed, match='uses the ECS deployment controller'):
        EcsService(session=session).ensure_service(spec=world.spec, task_definition_arn=arn)


def test_service_without_a_target_group_pair_says_what_to_set(session: boto3.session.Session) -> None:
    world = _world(session, group=False)
    arn, _ = EcsService(session=session).register_task_definition(
        task_definition(world.spec, image_uri=_image('a' * 40)))

    with pytest.raises(ServiceUpdateFailed) as failed:
        EcsService(session=session).ensure_service(spec=world.spec, task_definition_arn=arn)
    assert 'spec.blueGreen.loadBalancer' in failed.value.message
    assert world.spec.blue_green.code_deploy.deployment_group in failed.value.message


# -- ELBv2 ------------------------------------------------------------------------------


def test_traffic_follows_the_production_listener(session: boto3.session.Session) -> None:
    world = _world(session)
    traffic = ListenerTraffic(session=session)

    before = traffic.traffic(spec=world.spec)
    assert before.active_color == 'blue'
    assert before.blue_url == f'http://{world.dns_name}'
    assert before.green_url == f'http://{world.dns_name}:8080' == before.standby_url

    elb = session.client('elbv2')
    elb.modify_listener(ListenerArn=world.production_listener_arn,
                        DefaultActions=[{'Type': 'forward', 'TargetGroupArn': world.green_arn}])
    after = traffic.traffic(spec=world.spec)
    assert after.active_color == 'green'
    assert after.green_url == f'http://{world.dns_name}' and after.blue_url == f'http://{world.dns_name}:8080'
    assert after.standby_url == after.blue_url  # the next rollout's replacement goes to blue

    # A weighted forward (linear/canary shifting): the heavier target group serves production.
    elb.modify_listener(ListenerArn=world.production_listener_arn, DefaultActions=[{
        'Type': 'forward', 'ForwardConfig': {'TargetGroups': [{'TargetGroupArn': world.blue_arn, 'Weight': 90},
                                                              {'TargetGroupArn': world.green_arn, 'Weight': 10}]}}])
    assert traffic.traffic(spec=world.spec).active_color == 'blue'


def test_traffic_without_a_deployment_group_fails_clearly(session: boto3.session.Session) -> None:
    world = _world(session, group=False)
    with pytest.raises(StageFailed) as failed:
        ListenerTraffic(session=session).traffic(spec=world.spec)
    assert failed.value.reason == Reason.BLUE_GREEN_FAILED
    assert world.spec.blue_green.code_deploy.deployment_group in failed.value.message


# -- CodeDeploy ----------------------------------------------------------------------


def _wait(poll: Callable[[], DeploymentState], until: Callable[[DeploymentState], bool],
          seconds: float = 20.0) -> DeploymentState:
    deadline = time.monotonic() + seconds
    while True:
        state = poll()
        if until(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def _deployed_service(session: boto3.session.Session, world: World) -> tuple[EcsService, str]:
    """Stage 3 of a second rollout: the service exists (on blue, revision 1), revision 2 registered."""
    ecs = EcsService(session=session)
    second, registered = ecs.register_task_definition(task_definition(world.spec, image_uri=_image('b' * 40)))
    assert registered and not ecs.ensure_service(spec=world.spec, task_definition_arn=second).created
    return ecs, second


def test_deployment_created_once_per_run_then_ready_then_continued_to_green(session: boto3.session.Session) -> None:
    world = _world(session)
    _, second = _deployed_service(session, world)
    codedeploy, traffic = CodeDeployDeployments(session=session), ListenerTraffic(session=session)

    assert codedeploy.find_deployment(spec=world.spec, run_id='dep_aaaaaaaaaa') is None
    deployment_id = codedeploy.create_deployment(spec=world.spec, task_definition_arn=second, run_id='dep_aaaaaaaaaa')
    assert codedeploy.find_deployment(spec=world.spec, run_id='dep_aaaaaaaaaa') == deployment_id
    assert codedeploy.find_deployment(spec=world.spec, run_id='dep_aaaaaaaaab') is None
    with pytest.raises(Transient, match=f'already has an active deployment \\({deployment_id}\\)'):
        codedeploy.create_deployment(spec=world.spec, task_definition_arn=second, run_id='dep_aaaaaaaaab')

    info = session.client('codedeploy').get_deployment(deploymentId=deployment_id)['deploymentInfo']
    assert run_of(info['description']) == 'dep_aaaaaaaaaa'
    content = json.loads(info['revision']['appSpecContent']['content'])
    assert content == appspec(world.spec, task_definition_arn=second)
    assert content['Hooks'] == [{'BeforeAllowTraffic': 'check-before'}, {'AfterAllowTraffic': 'check-after'}]

    ready = _wait(lambda: codedeploy.get_deployment(deployment_id), lambda s: s.ready_for_traffic
                  or s.status in ('Succeeded', 'Failed', 'Stopped'))
    assert ready.status == 'Ready' and ready.ready_for_traffic and ready.error is None
    names = [event.name for event in ready.events]
    assert names[:3] == ['BeforeInstall', 'Install', 'AfterInstall']
    assert 'BeforeAllowTraffic' in names and 'AfterAllowTraffic' in names
    assert traffic.traffic(spec=world.spec).active_color == 'blue'  # nothing moved before we continue

    codedeploy.continue_deployment(deployment_id)
    codedeploy.continue_deployment(deployment_id)  # a resumed run repeating the call is harmless
    done = _wait(lambda: codedeploy.get_deployment(deployment_id),
                 lambda s: s.status in ('Succeeded', 'Failed', 'Stopped'))
    assert done.status == 'Succeeded' and done.traffic_shifted
    assert all(event.status in ('Succeeded', 'Skipped') for event in done.events)
    after = traffic.traffic(spec=world.spec)
    assert after.active_color == 'green' and after.green_url == f'http://{world.dns_name}'
    # Finished, and still found: a resumed run never starts a second deployment.
    assert codedeploy.find_deployment(spec=world.spec, run_id='dep_aaaaaaaaaa') == deployment_id


def test_stopped_with_rollback_traffic_stays_blue(session: boto3.session.Session) -> None:
    world = _world(session)
    _, second = _deployed_service(session, world)
    codedeploy = CodeDeployDeployments(session=session)
    deployment_id = codedeploy.create_deployment(spec=world.spec, task_definition_arn=second, run_id='dep_bbbbbbbbbb')
    _wait(lambda: codedeploy.get_deployment(deployment_id), lambda s: s.ready_for_traffic)

    codedeploy.stop_deployment(deployment_id, rollback=True)
    stopped = _wait(lambda: codedeploy.get_deployment(deployment_id), lambda s: s.status in ('Stopped', 'Failed'))
    assert stopped.status == 'Stopped' and stopped.error
    codedeploy.stop_deployment(deployment_id, rollback=True)  # already stopped: harmless
    assert ListenerTraffic(session=session).traffic(spec=world.spec).active_color == 'blue'
    with pytest.raises(StageFailed, match='cannot continue'):
        codedeploy.continue_deployment(deployment_id)


def test_missing_deployment_group_without_spec_layout_names_what_is_missing(session: boto3.session.Session) -> None:
    world = _world(session, group=False)
    with pytest.raises(StageFailed) as failed:
        CodeDeployDeployments(session=session).create_deployment(
            spec=world.spec, task_definition_arn='arn:aws:ecs:us-east-1:123456789012:task-definition/x:1',
            run_id='dep_cccccccccc')
    error = failed.value
    assert error.reason == Reason.BLUE_GREEN_FAILED
    assert f'CodeDeploy application {world.spec.blue_green.code_deploy.application} does not exist' in error.message
    assert 'spec.blueGreen.loadBalancer' in error.message
    assert CodeDeployDeployments(session=session).find_deployment(spec=world.spec, run_id='dep_cccccccccc') is None


def test_group_that_does_not_wait_for_us_is_refused(session: boto3.session.Session) -> None:
    world = _world(session, ready_action='CONTINUE_DEPLOYMENT')
    with pytest.raises(StageFailed, match='STOP_DEPLOYMENT'):
        CodeDeployDeployments(session=session).create_deployment(
            spec=world.spec, task_definition_arn='arn:aws:ecs:us-east-1:123456789012:task-definition/x:1',
            run_id='dep_dddddddddd')


def test_missing_application_and_group_are_created_from_the_spec_layout(session: boto3.session.Session) -> None:
    world = _world(session, group=False)
    spec = _with_layout(world)

    ecs = EcsService(session=session)
    arn, _ = ecs.register_task_definition(task_definition(spec, image_uri=_image('a' * 40)))
    assert ecs.ensure_service(spec=spec, task_definition_arn=arn).created  # blue from the spec: no group yet
    codedeploy = CodeDeployDeployments(session=session)
    deployment_id = codedeploy.create_deployment(spec=spec, task_definition_arn=arn, run_id='dep_eeeeeeeeee')

    code_deploy = spec.blue_green.code_deploy
    group = session.client('codedeploy').get_deployment_group(
        applicationName=code_deploy.application,
        deploymentGroupName=code_deploy.deployment_group)['deploymentGroupInfo']
    pair = group['loadBalancerInfo']['targetGroupPairInfoList'][0]
    assert [g['name'] for g in pair['targetGroups']] == [world.blue_arn.split('/')[1], world.green_arn.split('/')[1]]
    assert pair['prodTrafficRoute'] == {'listenerArns': [world.production_listener_arn]}
    assert group['blueGreenDeploymentConfiguration']['deploymentReadyOption']['actionOnTimeout'] == 'STOP_DEPLOYMENT'
    assert group['ecsServices'] == [{'serviceName': spec.ecs.service, 'clusterName': spec.ecs.cluster}]
    assert codedeploy.find_deployment(spec=spec, run_id='dep_eeeeeeeeee') == deployment_id
    ready = _wait(lambda: codedeploy.get_deployment(deployment_id),  # the group made for us waits for us
                  lambda s: s.ready_for_traffic or s.status in ('Succeeded', 'Failed', 'Stopped'))
    assert ready.status == 'Ready', ready


# -- CodeDeploy request shapes, pinned against the service model ----------------------------


def test_request_shapes_match_the_codedeploy_service_model() -> None:
    cd = boto3.client('codedeploy', region_name=REGION, aws_access_key_id='x', aws_secret_access_key='y')
    spec = _spec('stub')
    code_deploy = spec.blue_green.code_deploy
    arn = 'arn:aws:ecs:us-east-1:123456789012:task-definition/svc-stub:7'
    group = {'deploymentGroupInfo': {
        'applicationName': code_deploy.application, 'deploymentGroupName': code_deploy.deployment_group,
        'computePlatform': 'ECS',
        'blueGreenDeploymentConfiguration': {'deploymentReadyOption': {'actionOnTimeout': 'STOP_DEPLOYMENT',
                                                                       'waitTimeInMinutes': 30}},
        'loadBalancerInfo': {'targetGroupPairInfoList': [{
            'targetGroups': [{'name': 'blue'}, {'name': 'green'}],
            'prodTrafficRoute': {'listenerArns': ['arn:aws:elasticloadbalancing:us-east-1:1:listener/app/x/1/2']}}]}}}
    with botocore.stub.Stubber(cd) as stub:
        stub.add_response('get_deployment_group', group, {'applicationName': code_deploy.application,
                                                          'deploymentGroupName': code_deploy.deployment_group})
        content = json.dumps(appspec(spec, task_definition_arn=arn), separators=(',', ':'))
        stub.add_response('create_deployment', {'deploymentId': 'd-ABCDEFGHI'}, {
            'applicationName': code_deploy.application,
            'deploymentGroupName': code_deploy.deployment_group,
            'deploymentConfigName': 'CodeDeployDefault.ECSAllAtOnce',
            'description': 'panda-deploy run dep_ffffffffff (task definition svc-stub:7)',
            'revision': {'revisionType': 'AppSpecContent', 'appSpecContent': {
                'content': content, 'sha256': hashlib.sha256(content.encode()).hexdigest()}},
        })
        stub.add_response('continue_deployment', {}, {'deploymentId': 'd-ABCDEFGHI',
                                                      'deploymentWaitType': 'READY_WAIT'})
        stub.add_response('stop_deployment', {'status': 'Pending', 'statusMessage': 'stopping'},
                          {'deploymentId': 'd-ABCDEFGHI', 'autoRollbackEnabled': True})
        stub.add_client_error('stop_deployment', service_error_code='ThrottlingException', http_status_code=400)

        codedeploy = CodeDeployDeployments(clients={'codedeploy': cd})
        created = codedeploy.create_deployment(spec=spec, task_definition_arn=arn, run_id='dep_ffffffffff')
        assert created == 'd-ABCDEFGHI'
        codedeploy.continue_deployment('d-ABCDEFGHI')
        codedeploy.stop_deployment('d-ABCDEFGHI', rollback=True)
        with pytest.raises(Transient, match='ThrottlingException'):
            codedeploy.stop_deployment('d-ABCDEFGHI', rollback=True)
        stub.assert_no_pending_responses()


# -- HTTP -----------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        if self.path == '/slow':
            time.sleep(1.0)
        status, location = {'/ok': (200, None), '/fail': (503, None), '/loop': (302, '/loop'),
                            '/slow': (200, None)}.get(self.path, (404, None))
        if self.path.startswith('/chain/'):  # /chain/N: N redirects, then 200
            left = int(self.path.rsplit('/', 1)[1])
            status, location = (302, f'/chain/{left - 1}') if left else (200, None)
        body = b'{"status": "ok"}' if status == 200 else b'no'
        try:
            self.send_response(status)
            if location:
                self.send_header('Location', location)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the probe gave up (timeout test)
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope='module')
def web() -> Iterator[tuple[str, list[str]]]:
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    server.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}', server.hits  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def test_http_probe_reports_status_and_time(web: tuple[str, list[str]]) -> None:
    url, _ = web
    probe = HttpProbe()
    ok = probe.get(f'{url}/ok', timeout=5)
    assert ok.status == 200 and ok.error is None and 0 < ok.seconds < 5
    failing = probe.get(f'{url}/fail', timeout=5)
    assert failing.status == 503 and failing.error is None  # an HTTP answer: the caller compares statuses
    missing = probe.get(f'{url}/nothing', timeout=5)
    assert missing.status == 404 and missing.error is None


def test_http_probe_follows_at_most_three_redirects(web: tuple[str, list[str]]) -> None:
    url, hits = web
    before = len(hits)
    looped = HttpProbe().get(f'{url}/loop', timeout=5)
    assert looped.status == 302 and looped.error == 'more than 3 redirects'
    assert hits[before:] == ['/loop'] * 4  # the request and three redirects

    followed = HttpProbe().get(f'{url}/chain/3', timeout=5)
    assert followed.status == 200 and followed.error is None
    too_long = HttpProbe().get(f'{url}/chain/4', timeout=5)
    assert too_long.status == 302 and too_long.error == 'more than 3 redirects'


def test_http_probe_never_raises_for_connection_errors(web: tuple[str, list[str]]) -> None:
    with socket.socket() as closed:
        closed.bind(('127.0.0.1', 0))
        port = closed.getsockname()[1]
    refused = HttpProbe().get(f'http://127.0.0.1:{port}/', timeout=2)
    assert refused.status is None and refused.error and 'refused' in refused.error.lower()

    url, _ = web
    slow = HttpProbe().get(f'{url}/slow', timeout=0.2)
    assert slow.status is None and slow.error == 'timed out'
    bad = HttpProbe().get('not a url', timeout=1)
    assert bad.status is None and bad.error
