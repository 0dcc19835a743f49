"""The CodeBuild adapter: its requests pinned with botocore Stubbers (which check every request and every
answer against botocore's CodeBuild, S3, STS and CloudWatch Logs models), its source zip (the Docker path's
rules and limits), and its buildspec, played against by a hostile build argument and label.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import subprocess
import zipfile
from typing import Any

import boto3.session
import pytest
import yaml
from botocore.stub import ANY, Stubber

from controller.adapters import AdapterSettings, ImageBuild
from controller.adapters.build_context import ContextTooLarge
from controller.adapters.codebuild import CodeBuildBuilds, build_state, managed_project_name, source_key
from controller.adapters.codebuild_source import RUN_VARIABLE, buildspec, pack_zip
from controller.adapters.wiring import make_adapters
from controller.config import Config
from controller.credentials import Credentials
from controller.errors import StageFailed
from controller.models import BuildEngine, CodeBuild, PandaDeploySpec, code_build_for

REGION, ACCOUNT = 'eu-west-1', '123456789012'
ROLE = f'arn:aws:iam::{ACCOUNT}:role/codebuild'
ECR = f'{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com'
IMAGE = ImageBuild(run_id='dep_abcdefghij', repository='org-app', tag='c0ffee', target=f'{ECR}/org-app:c0ffee',
                   labels={'org.opencontainers.image.revision': 'c0ffee'}, build_args={'MODE': 'prod'})
BUILD_ID = 'panda-deploy-org-app:0b1c'
BUCKET = f'panda-deploy-builds-{ACCOUNT}-{REGION}'


def adapter(settings: CodeBuild, *services: str) -> tuple[CodeBuildBuilds, dict[str, Stubber]]:
    session = boto3.session.Session(aws_access_key_id='AKIAEXAMPLE', aws_secret_access_key='x', region_name=REGION)
    clients = {service: session.client(service) for service in services}
    stubs = {service: Stubber(client) for service, client in clients.items()}
    for stub in stubs.values():
        stub.activate()
    return CodeBuildBuilds(settings=settings, region=REGION, max_context_bytes=1024 ** 2, clients=clients), stubs


@pytest.fixture
def context(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / 'context'
    root.mkdir()
    (root / 'Dockerfile').write_text('FROM scratch\nCOPY app.py /\n')
    (root / 'app.py').write_text('print("hi")\n')
    (root / 'keys.env').write_text('TOKEN=1\n')
    (root / '.dockerignore').write_text('*.env\n')
    (root / 'link').symlink_to('/etc/passwd')
    return root


def test_a_managed_project_bucket_and_build_are_made_and_the_build_started(context):
    builds, stubs = adapter(CodeBuild(service_role_arn=ROLE), 'sts', 's3', 'codebuild')
    stubs['sts'].add_response('get_caller_identity', {'Account': ACCOUNT})
    stubs['s3'].add_client_error('head_bucket', service_error_code='404', http_status_code=404,
                                 expected_params={'Bucket': BUCKET})
    stubs['s3'].add_response('create_bucket', {}, {'Bucket': BUCKET, 'CreateBucketConfiguration': {
        'LocationConstraint': REGION}})
    stubs['s3'].add_response('put_bucket_lifecycle_configuration', {}, {'Bucket': BUCKET, 'LifecycleConfiguration': {
        'Rules': [{'ID': 'panda-deploy-sources', 'Status': 'Enabled', 'Filter': {'Prefix': 'panda-deploy/'},
                   'Expiration': {'Days': 1}}]}})
    key = source_key(IMAGE)
    assert key == 'panda-deploy/org-app/c0ffee/dep_abcdefghij.zip'
    stubs['s3'].add_response('put_object', {}, {'Bucket': BUCKET, 'Key': key, 'Body': ANY})
    project = managed_project_name('org-app')
    stubs['codebuild'].add_response('batch_get_projects', {'projects': []}, {'names': [project]})
    stubs['codebuild'].add_response('create_project', {'project': {'name': project}}, {
        'name': project, 'source': {'type': 'S3', 'location': f'{BUCKET}/panda-deploy/org-app/'},
        'artifacts': {'type': 'NO_ARTIFACTS'}, 'serviceRole': ROLE, 'timeoutInMinutes': 60,
        'environment': {'type': 'LINUX_CONTAINER', 'image': 'aws/codebuild/standard:7.0',
                        'computeType': 'BUILD_GENERAL1_SMALL', 'privilegedMode': True}, 'description': ANY})
    text, variables = buildspec(IMAGE)
    stubs['codebuild'].add_response('start_build', {'build': {'id': BUILD_ID, 'buildStatus': 'IN_PROGRESS'}}, {
        'projectName': project, 'sourceTypeOverride': 'S3', 'sourceLocationOverride': f'{BUCKET}/{key}',
        'buildspecOverride': text, 'environmentVariablesOverride': variables, 'privilegedModeOverride': True,
        'environmentTypeOverride': 'LINUX_CONTAINER', 'computeTypeOverride': 'BUILD_GENERAL1_SMALL',
        'imageOverride': 'aws/codebuild/standard:7.0', 'timeoutInMinutesOverride': 60,
        'artifactsOverride': {'type': 'NO_ARTIFACTS'}, 'idempotencyToken': 'dep_abcdefghij-c0ffee'})

    assert builds.start(build=IMAGE, context=context) == BUILD_ID
    for stub in stubs.values():
        stub.assert_no_pending_responses()
    assert {v['name']: v['value'] for v in variables}[RUN_VARIABLE] == 'dep_abcdefghij'


def test_a_platform_project_and_bucket_are_used_as_they_are(context):
    builds, stubs = adapter(CodeBuild(project='platform-builds', source_bucket='team-src'), 's3', 'codebuild')
    stubs['s3'].add_response('put_object', {}, {'Bucket': 'team-src', 'Key': source_key(IMAGE), 'Body': ANY})
    stubs['codebuild'].add_response('start_build', {'build': {'id': 'platform-builds:1'}}, {
        'projectName': 'platform-builds', 'sourceTypeOverride': 'S3',
        'sourceLocationOverride': f'team-src/{source_key(IMAGE)}', 'buildspecOverride': ANY,
        'environmentVariablesOverride': ANY, 'privilegedModeOverride': True, 'environmentTypeOverride': ANY,
        'computeTypeOverride': ANY, 'imageOverride': ANY, 'timeoutInMinutesOverride': 60,
        'artifactsOverride': ANY, 'idempotencyToken': ANY})
    assert builds.start(build=IMAGE, context=context) == 'platform-builds:1'  # no project created or changed
    stubs['codebuild'].assert_no_pending_responses()


def _build(build_id: str, *, location: str, run: str, **fields: Any) -> dict[str, Any]:
    return {'id': build_id, 'source': {'type': 'S3', 'location': location},
            'environment': {'type': 'LINUX_CONTAINER', 'image': 'i', 'computeType': 'BUILD_GENERAL1_SMALL',
                            'environmentVariables': [{'name': RUN_VARIABLE, 'value': run, 'type': 'PLAINTEXT'}]},
            **fields}


def test_find_recognises_the_runs_build_by_its_source_key_and_run():
    builds, stubs = adapter(CodeBuild(service_role_arn=ROLE), 'codebuild')
    project = managed_project_name('org-app')
    stubs['codebuild'].add_response('list_builds_for_project', {'ids': ['p:3', 'p:2', 'p:1']},
                                    {'projectName': project, 'sortOrder': 'DESCENDING'})
    stubs['codebuild'].add_response('batch_get_builds', {'builds': [
        _build('p:3', location=f'{BUCKET}/panda-deploy/org-app/c0ffee/dep_other00000.zip', run='dep_other00000'),
        _build('p:2', location=f'{BUCKET}/{source_key(IMAGE)}', run='dep_abcdefghij'),
        _build('p:1', location=f'{BUCKET}/{source_key(IMAGE)}', run='dep_abcdefghij')]}, {'ids': ['p:3', 'p:2', 'p:1']})
    assert builds.find(build=IMAGE) == 'p:2'  # the newest of the run's


def test_find_without_a_project_finds_nothing():
    builds, stubs = adapter(CodeBuild(service_role_arn=ROLE), 'codebuild')
    stubs['codebuild'].add_client_error('list_builds_for_project', 'ResourceNotFoundException')
    assert builds.find(build=IMAGE) is None


def test_a_failed_build_reports_its_failing_phase_and_the_tail_of_its_log():
    builds, stubs = adapter(CodeBuild(service_role_arn=ROLE), 'codebuild', 'logs')
    failed = _build(BUILD_ID, location=f'{BUCKET}/{source_key(IMAGE)}', run=IMAGE.run_id, buildStatus='FAILED',
                    currentPhase='COMPLETED', logs={'groupName': '/aws/codebuild/p', 'streamName': '0b1c'}, phases=[
                        {'phaseType': 'SUBMITTED', 'phaseStatus': 'SUCCEEDED'},
                        {'phaseType': 'PRE_BUILD', 'phaseStatus': 'SUCCEEDED'},
                        {'phaseType': 'BUILD', 'phaseStatus': 'FAILED', 'contexts': [
                            {'statusCode': 'COMMAND_EXECUTION_ERROR', 'message': 'Error while executing command'}]},
                        {'phaseType': 'POST_BUILD', 'phaseStatus': 'SUCCEEDED'},
                        {'phaseType': 'COMPLETED'}])
    stubs['codebuild'].add_response('batch_get_builds', {'builds': [failed]}, {'ids': [BUILD_ID]})
    state = builds.get(BUILD_ID)
    assert (state.status, state.ended, state.succeeded) == ('FAILED', True, False)
    assert (state.failed_phase, state.failure) == ('BUILD', 'Error while executing command')
    stubs['codebuild'].add_response('batch_get_builds', {'builds': [failed]}, {'ids': [BUILD_ID]})
    stubs['logs'].add_response('get_log_events', {'events': [{'message': 'x' * 5000 + '\n'}, {'message': 'end\n'}]},
                               {'logGroupName': '/aws/codebuild/p', 'logStreamName': '0b1c', 'limit': 20,
                                'startFromHead': False})
    assert builds.log_tail(BUILD_ID) == ['x' * 500, 'end']  # each line bounded


def test_a_running_build_is_in_progress_with_its_phase():
    state = build_state({'id': 'p:1', 'buildStatus': 'IN_PROGRESS', 'currentPhase': 'BUILD',
                         'phases': [{'phaseType': 'SUBMITTED', 'phaseStatus': 'SUCCEEDED'}, {'phaseType': 'BUILD'}]})
    assert (state.ended, state.phase, state.failed_phase) == (False, 'BUILD', None)


def test_the_source_is_removed_only_when_the_operator_uploaded_it():
    builds, stubs = adapter(CodeBuild(project='platform-builds'), 'codebuild', 's3')
    mine = _build('p:1', location=f'{BUCKET}/{source_key(IMAGE)}', run=IMAGE.run_id)
    stubs['codebuild'].add_response('batch_get_builds', {'builds': [mine]}, {'ids': ['p:1']})
    stubs['s3'].add_response('delete_object', {}, {'Bucket': BUCKET, 'Key': source_key(IMAGE)})
    builds.remove_source('p:1')
    theirs = _build('p:2', location='team-src/their/own.zip', run='')
    stubs['codebuild'].add_response('batch_get_builds', {'builds': [theirs]}, {'ids': ['p:2']})
    builds.remove_source('p:2')  # no DeleteObject
    stubs['s3'].assert_no_pending_responses()
    stubs['codebuild'].assert_no_pending_responses()


def test_the_zip_holds_what_the_engine_would_get(context):
    packed = io.BytesIO()
    pack_zip(context, dockerfile='Dockerfile', max_bytes=1024 ** 2, into=packed)
    archive = zipfile.ZipFile(packed)
    assert sorted(archive.namelist()) == ['.dockerignore', 'Dockerfile', 'app.py', 'link']
    link = archive.getinfo('link')
    assert (link.external_attr >> 16) & 0o170000 == 0o120000 and archive.read('link') == b'/etc/passwd'


def test_a_context_over_the_limit_is_refused_before_any_upload(context):
    (context / 'big.bin').write_bytes(os.urandom(2 * 1024 ** 2))
    builds, stubs = adapter(CodeBuild(project='platform-builds', source_bucket='team-src'), 's3', 'codebuild')
    with pytest.raises(ContextTooLarge):
        builds.start(build=IMAGE, context=context)
    stubs['s3'].assert_no_pending_responses()  # no PutObject was expected, none was made


def test_no_value_becomes_a_command_in_the_buildspec(tmp_path):
    hostile = ImageBuild(run_id='dep_abcdefghij', repository='org-app', tag='t', target='127.0.0.1:5000/org-app:t',
                         dockerfile='sub dir/Dockerfile',
                         labels={'l': '$(touch pwned-label)'}, build_args={'A;touch pwned-name': '`touch pwned`"\''})
    text, variables = buildspec(hostile)
    spec = yaml.safe_load(text)
    assert 'pre_build' not in spec['phases']  # no ECR login for a plain registry
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'docker').write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    (bin_dir / 'docker').chmod(0o755)
    env = {'PATH': f'{bin_dir}:/usr/bin:/bin', **{v['name']: v['value'] for v in variables}}
    argv = subprocess.run(['sh', '-ec', spec['phases']['build']['commands'][0]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert argv == ['build', '--file', 'sub dir/Dockerfile', '--tag', '127.0.0.1:5000/org-app:t',
                    '--label', 'l=$(touch pwned-label)', '--build-arg', 'A;touch pwned-name=`touch pwned`"\'', '.']
    assert not list(tmp_path.glob('pwned*'))
    assert '$(touch' not in text and 'pwned' not in text


def test_an_ecr_target_logs_in_with_the_projects_role():
    spec = yaml.safe_load(buildspec(IMAGE)[0])
    assert spec['phases']['pre_build']['commands'] == [
        'aws ecr get-login-password --region "$AWS_REGION" | docker login --username AWS --password-stdin '
        '"$PANDA_REGISTRY"']
    assert spec['phases']['build']['commands'][-1] == 'docker push "$PANDA_IMAGE"'


BASE = {'source': {'repo': 'org/app'}, 'aws': {'region': REGION}}
ON_CODEBUILD = {**BASE, 'build': {'engine': 'codeBuild', 'codeBuild': {'serviceRoleArn': ROLE}}}


@pytest.mark.parametrize(('spec', 'settings', 'on_codebuild'), [
    (BASE, AdapterSettings(), False),
    (ON_CODEBUILD, AdapterSettings(), True),
    (ON_CODEBUILD, AdapterSettings(build_engine=BuildEngine.docker), False),
    (BASE, AdapterSettings(build_engine=BuildEngine.code_build, code_build=CodeBuild(project='pp')), True),
])
def test_the_wiring_builds_where_the_operator_or_the_spec_says(spec, settings, on_codebuild):
    adapters = make_adapters(PandaDeploySpec.model_validate(spec), Credentials(), settings=settings)
    assert isinstance(adapters.builds, CodeBuildBuilds) == on_codebuild
    assert (adapters.builds is None) == (not on_codebuild)


def test_forced_onto_codebuild_without_settings_the_run_fails_with_invalid_spec():
    with pytest.raises(StageFailed, match='PANDA_DEPLOY_BUILD_ENGINE') as failed:
        make_adapters(PandaDeploySpec.model_validate(BASE), Credentials(),
                      settings=AdapterSettings(build_engine=BuildEngine.code_build))
    assert failed.value.reason == 'InvalidSpec'


ROOT = pathlib.Path(__file__).resolve().parents[2]
# IAM actions of the API operations whose names differ from their action (S3's HeadBucket is allowed by ListBucket).
IAM_ACTIONS = {'s3:HeadBucket': 's3:ListBucket',
               's3:PutBucketLifecycleConfiguration': 's3:PutLifecycleConfiguration'}
NO_PERMISSION = {'sts:GetCallerIdentity'}  # needs none


def _policy_actions(name: str) -> set[str]:
    policy = json.loads((ROOT / 'deploy' / 'iam' / name).read_text())
    actions: set[str] = set()
    for statement in policy['Statement']:
        found = statement['Action']
        actions |= {found} if isinstance(found, str) else set(found)
    return actions


def test_the_operator_policy_allows_every_call_the_adapter_makes(context):
    """The calls of a managed project's whole life (bucket, project, build, poll, log, stop, clean-up)."""
    builds, stubs = adapter(CodeBuild(service_role_arn=ROLE), 'sts', 's3', 'codebuild', 'logs')
    called: set[str] = set()
    for service, stub in stubs.items():
        prefix = 's3' if service == 's3' else service
        stub.client.meta.events.register('before-parameter-build', lambda model, p=prefix, **_: called.add(f'{p}:{model.name}'))
    stubs['sts'].add_response('get_caller_identity', {'Account': ACCOUNT})
    stubs['s3'].add_client_error('head_bucket', service_error_code='404', http_status_code=404)
    for operation in ('create_bucket', 'put_bucket_lifecycle_configuration', 'put_object', 'delete_object'):
        stubs['s3'].add_response(operation, {})
    mine = _build(BUILD_ID, location=f'{BUCKET}/{source_key(IMAGE)}', run=IMAGE.run_id,
                  logs={'groupName': '/aws/codebuild/p', 'streamName': 's'})
    stubs['codebuild'].add_response('batch_get_projects', {'projects': [{'name': 'pp', 'serviceRole': 'old'}]})
    stubs['codebuild'].add_response('update_project', {'project': {}})
    stubs['codebuild'].add_response('start_build', {'build': {'id': BUILD_ID}})
    stubs['codebuild'].add_response('list_builds_for_project', {'ids': [BUILD_ID]})
    for _ in range(3):  # find, get, log_tail
        stubs['codebuild'].add_response('batch_get_builds', {'builds': [mine]})
    stubs['codebuild'].add_response('stop_build', {'build': mine})
    for _ in range(2):  # remove_source, get
        stubs['codebuild'].add_response('batch_get_builds', {'builds': [mine]})
    stubs['logs'].add_response('get_log_events', {'events': []})
    builds.start(build=IMAGE, context=context)
    builds.find(build=IMAGE)
    builds.get(BUILD_ID)
    builds.log_tail(BUILD_ID)
    builds.stop(BUILD_ID)
    builds.remove_source(BUILD_ID)
    builds.get(BUILD_ID)
    needed = {IAM_ACTIONS.get(call, call) for call in called} - NO_PERMISSION
    allowed = _policy_actions('operator-codebuild-policy.json')
    assert needed == allowed - {'iam:PassRole', 'codebuild:CreateProject'}
    assert 'iam:PassRole' in allowed and 'codebuild:CreateProject' in allowed  # CreateProject: a first build


def test_the_build_role_may_log_in_push_and_read_its_source():
    allowed = _policy_actions('codebuild-service-role-policy.json')
    assert {'ecr:GetAuthorizationToken', 'ecr:PutImage', 'ecr:CompleteLayerUpload', 's3:GetObject',
            'logs:PutLogEvents'} <= allowed
    assert not {a for a in allowed if a.endswith('*')}, 'no wildcard actions'


def test_the_codebuild_component_configures_a_valid_operator():
    patch = yaml.safe_load((ROOT / 'deploy' / 'manifests' / 'codebuild' / 'deployment-patch.yaml').read_text())
    env = {e['name']: e['value'] for e in patch['spec']['template']['spec']['containers'][0]['env']}
    config = Config.from_env(env)
    assert config.build_engine == BuildEngine.code_build and config.code_build is not None
    assert code_build_for(PandaDeploySpec.model_validate(BASE).build, engine=config.build_engine,
                          default=config.code_build) == config.code_build
