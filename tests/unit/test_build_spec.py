"""spec.build: the Docker engine or CodeBuild, what CodeBuild needs, the operator forcing an engine, and the
CRD's schema and CEL rules saying what the model says."""
from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.config import Config
from controller.crd import open_api_schema
from controller.models import BuildEngine, CodeBuild, PandaDeploySpec, code_build_for
from controller.sandbox.schema.validation import validate

ROLE = 'arn:aws:iam::123456789012:role/codebuild-panda'
BASE = {'source': {'repo': 'org/app'}, 'aws': {'region': 'eu-west-1'}}


def spec(**fields: Any) -> PandaDeploySpec:
    return PandaDeploySpec.model_validate({**BASE, **fields})


def test_the_docker_engine_is_the_default():
    assert spec().build.engine == BuildEngine.docker and spec().build.code_build is None


def test_code_build_with_a_managed_project_or_a_named_one():
    managed = spec(build={'engine': 'codeBuild', 'codeBuild': {'serviceRoleArn': ROLE}}).build.code_build
    assert managed is not None and managed.project is None and managed.service_role_arn == ROLE
    assert (managed.compute_type, managed.timeout_minutes, managed.source_bucket) == ('BUILD_GENERAL1_SMALL', 60, None)
    named = spec(build={'engine': 'codeBuild', 'codeBuild': {'project': 'platform-builds',
                                                             'sourceBucket': 'team-sources'}}).build.code_build
    assert named is not None and named.project == 'platform-builds' and named.source_bucket == 'team-sources'


@pytest.mark.parametrize(('build', 'says'), [
    ({'engine': 'codeBuild'}, 'spec.build.codeBuild is required with engine codeBuild'),
    ({'engine': 'codeBuild', 'codeBuild': {}}, 'serviceRoleArn is required when the operator manages'),
    ({'codeBuild': {'serviceRoleArn': ROLE}}, 'set spec.build.engine: codeBuild or remove it'),
    ({'engine': 'podman'}, 'engine'),
    ({'engine': 'codeBuild', 'codeBuild': {'project': 'x'}}, 'project'),  # CodeBuild's names: 2-255 characters
    ({'engine': 'codeBuild', 'codeBuild': {'project': 'p', 'computeType': 'BUILD_LAMBDA_1GB'}}, 'computeType'),
    ({'engine': 'codeBuild', 'codeBuild': {'project': 'pp', 'timeoutMinutes': 4}}, 'timeoutMinutes'),
    ({'engine': 'codeBuild', 'codeBuild': {'project': 'pp', 'timeoutMinutes': 2161}}, 'timeoutMinutes'),
    ({'engine': 'codeBuild', 'codeBuild': {'project': 'pp', 'sourceBucket': 'Upper_Case'}}, 'sourceBucket'),
    ({'engine': 'codeBuild', 'codeBuild': {'project': 'pp', 'image': 'img; rm -rf /'}}, 'image'),
    ({'engine': 'codeBuild', 'codeBuild': {'serviceRoleArn': 'arn:aws:iam::1:user/x'}}, 'serviceRoleArn'),
])
def test_build_settings_that_cannot_build_are_refused(build, says):
    with pytest.raises(ValidationError, match=says):
        spec(build=build)


@pytest.mark.parametrize(('build', 'valid'), [
    ({}, True),
    ({'engine': 'docker'}, True),
    ({'engine': 'codeBuild', 'codeBuild': {'serviceRoleArn': ROLE}}, True),
    ({'engine': 'codeBuild', 'codeBuild': {'project': 'platform-builds'}}, True),
    ({'engine': 'codeBuild', 'codeBuild': {}}, False),
    ({'engine': 'codeBuild', 'codeBuild': {'computeType': 'BUILD_GENERAL1_LARGE'}}, False),
    ({'engine': 'codeBuild', 'codeBuild': {'project': 'pp', 'timeoutMinutes': 4}}, False),
    ({'engine': 'codeBuild', 'codeBuild': {'project': 'pp', 'sourceBucket': 'Upper_Case'}}, False),
])
def test_the_crd_refuses_what_the_model_refuses(build, valid):
    manifest = {'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
                'metadata': {'name': 'app', 'namespace': 'default'}, 'spec': {**BASE, 'build': build}}
    errors = validate(open_api_schema(), manifest)
    assert (not errors) == valid, errors
    try:
        spec(build=build)
        model_valid = True
    except ValidationError:
        model_valid = False
    assert model_valid == valid


def test_the_crd_says_the_engine_rules_in_cel():
    """The sandbox's schema check reads only `has(a) || has(b)` forms; the others are checked as text here."""
    build = open_api_schema()['properties']['spec']['properties']['build']
    rules = {rule['rule']: rule['message'] for rule in build['x-kubernetes-validations']}
    assert rules == {
        "!has(self.engine) || self.engine != 'codeBuild' || has(self.codeBuild)":
            'spec.build.codeBuild is required with engine codeBuild',
        "!has(self.codeBuild) || (has(self.engine) && self.engine == 'codeBuild')":
            'spec.build.codeBuild configures engine codeBuild; set spec.build.engine: codeBuild or remove it'}
    # No defaults in the schema (README, Defaults and limits): the models apply it, the description names it.
    engine = build['properties']['engine']
    assert 'default' not in engine and engine['description'].endswith('Default: docker.')


def test_the_status_has_a_field_for_the_build_id():
    status = open_api_schema()['properties']['status']['properties']
    assert status['codeBuildId']['type'] == 'string'


SETTINGS = CodeBuild(project='platform-builds')


@pytest.mark.parametrize(('build', 'engine', 'default', 'wanted'), [
    ({}, None, SETTINGS, None),  # each spec decides: docker
    ({'engine': 'codeBuild', 'codeBuild': {'serviceRoleArn': ROLE}}, BuildEngine.docker, None, None),  # forced
    ({}, BuildEngine.code_build, SETTINGS, SETTINGS),  # forced, the operator's settings
    ({'engine': 'codeBuild', 'codeBuild': {'serviceRoleArn': ROLE}}, BuildEngine.code_build, SETTINGS,
     CodeBuild(service_role_arn=ROLE)),  # the spec's own settings win over the operator's
])
def test_the_operator_may_force_an_engine(build, engine, default, wanted):
    assert code_build_for(spec(build=build).build, engine=engine, default=default) == wanted


def test_forced_onto_code_build_without_settings_says_what_is_missing():
    with pytest.raises(ValueError, match='PANDA_DEPLOY_BUILD_ENGINE.*spec.build.codeBuild is required'):
        code_build_for(spec().build, engine=BuildEngine.code_build, default=None)


def test_config_reads_the_engine_and_the_code_build_defaults():
    config = Config.from_env({'PANDA_DEPLOY_BUILD_ENGINE': 'codeBuild', 'PANDA_DEPLOY_CODEBUILD_PROJECT': 'builds',
                              'PANDA_DEPLOY_CODEBUILD_BUCKET': 'team-sources'})
    assert config.build_engine == BuildEngine.code_build
    assert config.code_build == CodeBuild(project='builds', source_bucket='team-sources')
    settings = config.adapter_settings()
    assert settings.build_engine == BuildEngine.code_build and settings.code_build == config.code_build
    unset = Config.from_env({})
    assert unset.build_engine is None and unset.code_build is None


@pytest.mark.parametrize(('env', 'says'), [
    ({'PANDA_DEPLOY_BUILD_ENGINE': 'kaniko'}, 'PANDA_DEPLOY_BUILD_ENGINE must be docker or codeBuild'),
    ({'PANDA_DEPLOY_CODEBUILD_SERVICE_ROLE_ARN': 'role'}, 'PANDA_DEPLOY_CODEBUILD_SERVICE_ROLE_ARN is not a valid'),
    ({'PANDA_DEPLOY_CODEBUILD_BUCKET': 'A'}, 'PANDA_DEPLOY_CODEBUILD_BUCKET is not a valid'),
])
def test_config_names_the_variable_at_fault(env, says):
    with pytest.raises(ValueError, match=says):
        Config.from_env(env)
