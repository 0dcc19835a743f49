"""CodeBuild builds in the sandbox: StartBuild runs the build (codebuild_runner), the rest reads or stops it.

Projects stay moto's (CreateProject, BatchGetProjects, DeleteProject, as moto
answers them); UpdateProject, which moto lacks, changes moto's project here.
Builds are the simulator's: StartBuild (with the source, buildspec and
environment overrides the operator sends, and an idempotency token honoured
for five minutes as AWS says), BatchGetBuilds, ListBuildsForProject (newest
first by default), ListBuilds, StopBuild. Each build runs in a worker thread
of its own pool (`workers` at once; more wait QUEUED, as an account's
concurrent-build quota makes them).
"""
from __future__ import annotations

import concurrent.futures
import re
import threading
import time
import uuid
from typing import Any

from moto.backends import get_backend

from controller.sandbox.aws.codebuild_builds import SandboxBuild
from controller.sandbox.aws.codebuild_runner import run_build
from controller.sandbox.aws.exceptions import AwsJsonError

TARGET_PREFIX = 'CodeBuild_20161006.'
OPERATIONS = frozenset({'StartBuild', 'BatchGetBuilds', 'ListBuildsForProject', 'ListBuilds', 'StopBuild',
                        'UpdateProject'})
IDEMPOTENCY_SECONDS = 300
Answer = dict[str, Any]


def _error(code: str, message: str) -> AwsJsonError:
    return AwsJsonError(code, message)


class CodeBuildSimulator:
    def __init__(self, *, workers: int = 20, minute_seconds: float = 60.0) -> None:
        self.minute_seconds = minute_seconds  # one minute of timeoutInMinutes (the sandbox's Timings)
        self.lock = threading.Lock()
        self.builds: dict[str, SandboxBuild] = {}
        self.tokens: dict[tuple[str, str], tuple[float, str]] = {}
        self.numbers: dict[str, int] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix='sandbox-codebuild')

    def dispatch(self, operation: str, request: dict[str, Any], *, account: str, region: str) -> Answer:
        method = getattr(self, re.sub(r'(?<!^)(?=[A-Z])', '_', operation).lower())
        answer: Answer = method(request, account=account, region=region)
        return answer

    def stop_all(self) -> None:
        with self.lock:
            for build in self.builds.values():
                build.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def reset(self) -> None:
        with self.lock:
            for build in self.builds.values():
                build.stop.set()
            self.builds.clear()
            self.tokens.clear()
            self.numbers.clear()

    # -- operations --------------------------------------------------------------------

    def start_build(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        name = str(request.get('projectName') or '')
        project = self._project(name, account=account, region=region)
        token = request.get('idempotencyToken')
        with self.lock:
            if token and (found := self.tokens.get((name, token))) and time.time() - found[0] < IDEMPOTENCY_SECONDS:
                return {'build': self.builds[found[1]].answer()}
            build = self._new_build(project, request, account=account, region=region)
            self.builds[build.id] = build
            if token:
                self.tokens[(name, token)] = (time.time(), build.id)
            build.enter('SUBMITTED')
        self.pool.submit(run_build, build)
        return {'build': build.answer()}

    def batch_get_builds(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        ids = [str(i) for i in request.get('ids') or []]
        if not 1 <= len(ids) <= 100:
            raise _error('InvalidInputException', 'ids must have between 1 and 100 items')
        with self.lock:
            found = [self.builds[i].answer() for i in ids if i in self.builds and self._mine(self.builds[i], account)]
            missing = [i for i in ids if i not in self.builds or not self._mine(self.builds[i], account)]
        return {'builds': found, 'buildsNotFound': missing}

    def list_builds_for_project(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        name = str(request.get('projectName') or '')
        self._project(name, account=account, region=region)
        with self.lock:
            ids = [b.id for b in sorted(self.builds.values(), key=lambda b: b.number)
                   if b.project == name and b.account == account and b.region == region]
        return {'ids': ids[::-1] if request.get('sortOrder', 'DESCENDING') == 'DESCENDING' else ids}

    def list_builds(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        with self.lock:
            ids = [b.id for b in sorted(self.builds.values(), key=lambda b: b.started)
                   if b.account == account and b.region == region]
        return {'ids': ids[::-1] if request.get('sortOrder', 'DESCENDING') == 'DESCENDING' else ids}

    def stop_build(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        build_id = str(request.get('id') or '')
        with self.lock:
            build = self.builds.get(build_id)
            if build is None or not self._mine(build, account):
                raise _error('ResourceNotFoundException', f'Build {build_id} does not exist')
            build.stop.set()
            return {'build': build.answer()}

    def update_project(self, request: dict[str, Any], *, account: str, region: str) -> Answer:
        name = str(request.get('name') or '')
        project = self._project(name, account=account, region=region)
        for field in ('description', 'source', 'artifacts', 'environment', 'serviceRole', 'timeoutInMinutes'):
            if field in request:
                project.project_metadata[field] = request[field]
        project.project_metadata['lastModifiedDate'] = time.time()
        return {'project': project.project_metadata}

    # -- inside ------------------------------------------------------------------------

    @staticmethod
    def _mine(build: SandboxBuild, account: str) -> bool:
        return build.account == account

    @staticmethod
    def _project(name: str, *, account: str, region: str) -> Any:
        projects = get_backend('codebuild')[account][region].codebuild_projects
        if name not in projects:
            raise _error('ResourceNotFoundException', f'Project cannot be found: '
                                                      f'arn:aws:codebuild:{region}:{account}:project/{name}')
        return projects[name]

    def _new_build(self, project: Any, request: dict[str, Any], *, account: str, region: str) -> SandboxBuild:
        meta = project.project_metadata
        name = str(meta['name'])
        self.numbers[name] = number = self.numbers.get(name, 0) + 1
        stream = str(uuid.uuid4())
        source = {**meta.get('source', {})}
        if request.get('sourceTypeOverride'):
            source['type'] = request['sourceTypeOverride']
        if request.get('sourceLocationOverride'):
            source['location'] = request['sourceLocationOverride']
        if request.get('buildspecOverride'):
            source['buildspec'] = request['buildspecOverride']
        environment = {**meta.get('environment', {})}
        for override, field in (('environmentTypeOverride', 'type'), ('imageOverride', 'image'),
                                ('computeTypeOverride', 'computeType'), ('privilegedModeOverride', 'privilegedMode')):
            if override in request:
                environment[field] = request[override]
        variables = {v['name']: v for v in environment.get('environmentVariables') or []}
        variables.update({v['name']: v for v in request.get('environmentVariablesOverride') or []})
        environment['environmentVariables'] = list(variables.values())
        timeout = int(request.get('timeoutInMinutesOverride') or meta.get('timeoutInMinutes') or 60)
        return SandboxBuild(id=f'{name}:{stream}', arn=f'arn:aws:codebuild:{region}:{account}:build/{name}:{stream}',
                            number=number, project=name, account=account, region=region, source=source,
                            environment=environment, service_role=str(meta.get('serviceRole', '')),
                            timeout_minutes=timeout, log_group=f'/aws/codebuild/{name}', log_stream=stream,
                            minute_seconds=self.minute_seconds)
