"""AWS CodeBuild builds through boto3: the `RemoteBuilds` of spec.build.engine codeBuild.

A build's source is the packed context uploaded to S3 under
`panda-deploy/<repository>/<tag>/<run id>.zip`: the image's identity and the
run. StartBuild overrides the project's source, buildspec and environment
(privileged, for Docker), so one project serves every build of a repository,
and sets the run in an environment variable too; `find` looks through the
project's newest builds for that key, so a run whose build id never reached
status (a restart between StartBuild and the status write) finds its build
instead of starting a second. An idempotency token (the run and the tag)
makes a StartBuild retried within AWS's five minutes start nothing new.

The project is the platform team's (`spec.build.codeBuild.project`: only
builds are started in it) or the operator's own, `panda-deploy-<repository>`,
created and kept up to date with the spec's role, compute type and timeout.
Without `sourceBucket` the operator uses `panda-deploy-builds-<account>-
<region>`, creating it with a lifecycle rule that expires sources after a day
(the object is also deleted when its build ends).
"""
from __future__ import annotations

import pathlib
import re
import tempfile
import threading
from typing import Any

from controller.adapters import ImageBuild, RemoteBuildState
from controller.adapters.aws import AwsAdapter, error_code
from controller.adapters.codebuild_source import RUN_VARIABLE, buildspec, pack_zip
from controller.errors import Reason, StageFailed
from controller.models import CodeBuild

KEY_PREFIX = 'panda-deploy/'
SOURCE_EXPIRY_DAYS = 1
FIND_LOOKBACK = 100  # the newest builds of the project `find` reads (one ListBuildsForProject page)
BATCH_GET_LIMIT = 100  # BatchGetBuilds takes at most 100 ids
LOG_TAIL_LINES = 20
LOG_LINE_CHARACTERS = 500


def source_key(build: ImageBuild) -> str:
    """Where the build's source is uploaded: names the image (repository and tag) and the run."""
    return f'{KEY_PREFIX}{build.repository}/{build.tag}/{build.run_id}.zip'


def managed_project_name(repository: str) -> str:
    """The operator's own project for an ECR repository (CodeBuild's names: letters, digits, - and _)."""
    return ('panda-deploy-' + re.sub(r'[^A-Za-z0-9_-]+', '-', repository))[:255]


class CodeBuildBuilds(AwsAdapter):
    failure_reason = Reason.BUILD_FAILED

    def __init__(self, *, settings: CodeBuild, region: str, max_context_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings, self.region, self.max_context_bytes = settings, region, max_context_bytes
        self._bucket: str | None = settings.source_bucket

    def project(self, build: ImageBuild) -> str:
        return self.settings.project or managed_project_name(build.repository)

    # -- RemoteBuilds -----------------------------------------------------------------

    def find(self, *, build: ImageBuild) -> str | None:
        codebuild, project, key = self._client('codebuild'), self.project(build), source_key(build)
        try:
            ids = codebuild.list_builds_for_project(projectName=project, sortOrder='DESCENDING')['ids']
        except Exception as exc:
            if error_code(exc) == 'ResourceNotFoundException':
                return None  # no project yet: no build
            raise self._error(exc, f'CodeBuild ListBuildsForProject {project}') from exc
        ids = ids[:FIND_LOOKBACK]
        for start in range(0, len(ids), BATCH_GET_LIMIT):
            for found in self._builds(ids[start:start + BATCH_GET_LIMIT]):
                location = str(found.get('source', {}).get('location', ''))
                variables = found.get('environment', {}).get('environmentVariables', [])
                run = next((v.get('value') for v in variables if v.get('name') == RUN_VARIABLE), None)
                if location.endswith(f'/{key}') and run in (None, build.run_id):
                    return str(found['id'])
        return None

    def start(self, *, build: ImageBuild, context: pathlib.Path, cancel: threading.Event | None = None) -> str:
        bucket, key = self._source_bucket(), source_key(build)
        with tempfile.TemporaryFile(prefix='panda-deploy-source-') as archive:
            pack_zip(context, dockerfile=build.dockerfile, max_bytes=self.max_context_bytes, into=archive)
            archive.seek(0)
            if cancel is not None and cancel.is_set():
                raise StageFailed('Build cancelled before its source was uploaded', reason=Reason.BUILD_FAILED)
            try:
                self._client('s3').put_object(Bucket=bucket, Key=key, Body=archive)
            except Exception as exc:
                raise self._error(exc, f'S3 PutObject s3://{bucket}/{key}') from exc
        project = self.project(build)
        if self.settings.project is None:
            self._ensure_project(project, source=f'{bucket}/{KEY_PREFIX}{build.repository}/')
        text, variables = buildspec(build)
        s = self.settings
        try:
            answer = self._client('codebuild').start_build(
                projectName=project, sourceTypeOverride='S3', sourceLocationOverride=f'{bucket}/{key}',
                buildspecOverride=text, environmentVariablesOverride=variables, privilegedModeOverride=True,
                environmentTypeOverride='LINUX_CONTAINER', computeTypeOverride=s.compute_type,
                imageOverride=s.image, timeoutInMinutesOverride=s.timeout_minutes,
                artifactsOverride={'type': 'NO_ARTIFACTS'}, idempotencyToken=f'{build.run_id}-{build.tag}'[:64])
        except Exception as exc:
            raise self._error(exc, f'CodeBuild StartBuild in {project}') from exc
        return str(answer['build']['id'])

    def get(self, build_id: str) -> RemoteBuildState:
        found = self._builds([build_id])
        if not found:
            raise StageFailed(f'CodeBuild build {build_id} not found', reason=Reason.BUILD_FAILED)
        return build_state(found[0])

    def log_tail(self, build_id: str) -> list[str]:
        found = self._builds([build_id])
        logs = found[0].get('logs', {}) if found else {}
        group, stream = logs.get('groupName'), logs.get('streamName')
        if not group or not stream:
            return []
        try:
            events = self._client('logs').get_log_events(logGroupName=group, logStreamName=stream,
                                                         limit=LOG_TAIL_LINES, startFromHead=False)['events']
        except Exception as exc:
            if error_code(exc) == 'ResourceNotFoundException':
                return []
            raise self._error(exc, f'CloudWatch Logs GetLogEvents {group}') from exc
        return [str(event.get('message', '')).rstrip('\n')[:LOG_LINE_CHARACTERS] for event in events]

    def stop(self, build_id: str) -> None:
        try:
            self._client('codebuild').stop_build(id=build_id)
        except Exception as exc:
            raise self._error(exc, f'CodeBuild StopBuild {build_id}') from exc

    def remove_source(self, build_id: str) -> None:
        found = self._builds([build_id])
        location = str(found[0].get('source', {}).get('location', '')) if found else ''
        bucket, _, key = location.partition('/')
        if not key.startswith(KEY_PREFIX):
            return  # not a source this operator uploaded
        try:
            self._client('s3').delete_object(Bucket=bucket, Key=key)
        except Exception as exc:
            raise self._error(exc, f'S3 DeleteObject s3://{bucket}/{key}') from exc

    # -- the project and the bucket ----------------------------------------------------

    def _builds(self, ids: list[str]) -> list[dict[str, Any]]:
        try:
            builds: list[dict[str, Any]] = self._client('codebuild').batch_get_builds(ids=ids)['builds']
        except Exception as exc:
            raise self._error(exc, 'CodeBuild BatchGetBuilds') from exc
        return builds

    def _ensure_project(self, name: str, *, source: str) -> None:
        """The operator's project: its source is where the repository's sources go (each build overrides it
        with its own object), its environment the spec's."""
        s = self.settings
        assert s.service_role_arn is not None, 'the model requires a role for a managed project'
        project = {'name': name, 'source': {'type': 'S3', 'location': source},
                   'artifacts': {'type': 'NO_ARTIFACTS'}, 'serviceRole': s.service_role_arn,
                   'timeoutInMinutes': s.timeout_minutes,
                   'environment': {'type': 'LINUX_CONTAINER', 'image': s.image, 'computeType': s.compute_type,
                                   'privilegedMode': True},
                   'description': 'Builds of panda-deploy (the operator manages this project)'}
        codebuild = self._client('codebuild')
        try:
            existing = codebuild.batch_get_projects(names=[name])['projects']
            if not existing:
                codebuild.create_project(**project)
            elif _differs(existing[0], project):
                codebuild.update_project(**project)
        except Exception as exc:
            raise self._error(exc, f'CodeBuild project {name}') from exc

    def _source_bucket(self) -> str:
        if self._bucket is not None:
            return self._bucket
        account = self._client('sts').get_caller_identity()['Account']
        bucket = f'panda-deploy-builds-{account}-{self.region}'
        s3 = self._client('s3')
        try:
            s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            if error_code(exc) not in ('404', 'NoSuchBucket', 'NotFound'):
                raise self._error(exc, f'S3 HeadBucket {bucket}') from exc
            self._create_bucket(bucket)
        self._bucket = bucket
        return bucket

    def _create_bucket(self, bucket: str) -> None:
        s3 = self._client('s3')
        where = {} if self.region == 'us-east-1' else {
            'CreateBucketConfiguration': {'LocationConstraint': self.region}}
        try:
            s3.create_bucket(Bucket=bucket, **where)
            s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={'Rules': [{
                'ID': 'panda-deploy-sources', 'Status': 'Enabled', 'Filter': {'Prefix': KEY_PREFIX},
                'Expiration': {'Days': SOURCE_EXPIRY_DAYS}}]})
        except Exception as exc:
            if error_code(exc) != 'BucketAlreadyOwnedByYou':
                raise self._error(exc, f'S3 CreateBucket {bucket}') from exc


def _differs(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    environment, want = existing.get('environment', {}), wanted['environment']
    return (existing.get('serviceRole') != wanted['serviceRole'] or existing.get('source') != wanted['source']
            or existing.get('timeoutInMinutes') != wanted['timeoutInMinutes']
            or any(environment.get(k) != want[k] for k in ('image', 'computeType', 'privilegedMode')))


def build_state(found: dict[str, Any]) -> RemoteBuildState:
    """A BatchGetBuilds entry as the stage reads it: status, current phase, and the first phase that failed."""
    failed = next((p for p in found.get('phases', [])
                   if p.get('phaseStatus') not in (None, 'SUCCEEDED')), None)
    failure = None
    if failed is not None:
        contexts = [c.get('message') for c in failed.get('contexts', []) if c.get('message')]
        failure = '; '.join(str(c) for c in contexts) or None
    return RemoteBuildState(id=str(found['id']), status=str(found.get('buildStatus', 'IN_PROGRESS')),
                            phase=found.get('currentPhase'),
                            failed_phase=failed.get('phaseType') if failed else None, failure=failure)
