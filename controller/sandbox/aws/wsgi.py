"""The WSGI application: moto's whole application, with deployment operations answered by the simulators.

The sandbox serves moto's whole application (every service, on one port, as
``moto_server`` does) behind this thin WSGI wrapper.  Requests whose
``X-Amz-Target`` is a CodeDeploy *deployment* operation (``CreateDeployment``,
``GetDeployment``, ``ContinueDeployment``, ``StopDeployment``,
``PutLifecycleEventHookExecutionStatus``, the target operations, ...) go to
:class:`DeploymentSimulator`, and those of ECS service deployments
(``CreateService``/``UpdateService`` with a native strategy,
``DescribeServiceDeployments``, ``ContinueServiceDeployment``, ...) to
:class:`EcsDeploymentSimulator`, and CodeBuild's build operations (``StartBuild``, ``BatchGetBuilds``,
``StopBuild``, ...) to :class:`CodeBuildSimulator`, which runs them; everything else goes to moto unchanged.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from controller.sandbox.aws import codebuild_simulator
from controller.sandbox.aws.codebuild_simulator import CodeBuildSimulator
from controller.sandbox.aws.ecs_responses import ECS_OPERATIONS, EcsResponses
from controller.sandbox.aws.ecs_simulator import EcsDeploymentSimulator
from controller.sandbox.aws.exceptions import AwsJsonError
from controller.sandbox.aws.responses import CodeDeployResponses, Forward
from controller.sandbox.aws.simulator import DeploymentSimulator

log = logging.getLogger(__name__)

TARGET_PREFIX = 'CodeDeploy_20141006.'
ECS_TARGET_PREFIX = 'AmazonEC2ContainerServiceV20141113.'
HOOKS_PATH = '/_sandbox/codedeploy/hooks'
JSON_CONTENT_TYPE = 'application/x-amz-json-1.1'

#: CodeDeploy operations answered by the simulator rather than by moto.
SIMULATED_OPERATIONS = frozenset({
    'CreateDeployment', 'GetDeployment', 'BatchGetDeployments', 'ListDeployments', 'ContinueDeployment',
    'StopDeployment', 'ListDeploymentTargets', 'GetDeploymentTarget', 'BatchGetDeploymentTargets',
    'PutLifecycleEventHookExecutionStatus',
})
#: CodeDeploy operations on resources that moto keeps, checked or completed on the way through.
ADJUSTED_OPERATIONS = frozenset({'CreateDeploymentGroup', 'GetDeploymentGroup', 'GetDeploymentConfig'})

_CREDENTIAL = re.compile(r'Credential=([^/,\s]+)/\d{8}/([^/]+)/')

StartResponse = Callable[..., Any]
Responses = CodeDeployResponses | EcsResponses | CodeBuildSimulator


def _request_scope(environ: Mapping[str, Any]) -> tuple[str, str]:
    """(account, region) of a request, the way moto decides them."""
    match = _CREDENTIAL.search(environ.get('HTTP_AUTHORIZATION', ''))
    region = match.group(2) if match else 'us-east-1'
    if 'MOTO_ACCOUNT_ID' in os.environ:
        return os.environ['MOTO_ACCOUNT_ID'], region
    if account := environ.get('HTTP_X_MOTO_ACCOUNT_ID'):
        return str(account), region
    from moto.iam.models import get_account_id_from
    return (get_account_id_from(match.group(1)) if match else DEFAULT_ACCOUNT_ID), region


class SandboxApp:
    """moto's application, with CodeDeploy and ECS deployment operations answered by the simulators."""

    def __init__(self, *, simulator: DeploymentSimulator, ecs_simulator: EcsDeploymentSimulator | None = None,
                 moto_app: Callable[..., Iterable[bytes]] | None = None,
                 codebuild: CodeBuildSimulator | None = None) -> None:
        self.simulator = simulator
        self.ecs_simulator = ecs_simulator or EcsDeploymentSimulator(timings=simulator.timings)
        self.codebuild = codebuild or CodeBuildSimulator(minute_seconds=simulator.timings.minute_seconds)
        self.responses = CodeDeployResponses(simulator=simulator)
        self.ecs_responses = EcsResponses(simulator=self.ecs_simulator)
        self._answering: dict[str, tuple[Responses, frozenset[str]]] = {
            TARGET_PREFIX: (self.responses, SIMULATED_OPERATIONS | ADJUSTED_OPERATIONS),
            ECS_TARGET_PREFIX: (self.ecs_responses, ECS_OPERATIONS),
            codebuild_simulator.TARGET_PREFIX: (self.codebuild, codebuild_simulator.OPERATIONS),
        }
        self.moto: Callable[..., Iterable[bytes]] = moto_app or DomainDispatcherApplication(create_backend_app)
        #: None: any access key is accepted (moto's default). A set: requests signed with another key
        #: are refused as AWS refuses unknown keys (see `AwsSandbox.refuse_unknown_keys`).
        self.known_access_keys: frozenset[str] | None = None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if self.known_access_keys is not None:
            found = re.search(r'Credential=([^/,\s]+)/', environ.get('HTTP_AUTHORIZATION', ''))
            if found and found.group(1) not in self.known_access_keys:
                return self._unknown_key(environ, start_response)
        prefix, _, operation = environ.get('HTTP_X_AMZ_TARGET', '').partition('.')
        responses, operations = self._answering.get(prefix + '.', (None, frozenset()))
        if responses is not None and operation in operations:
            return self._simulated(responses, operation, environ, start_response)
        path = environ.get('PATH_INFO', '')
        if path == HOOKS_PATH and environ.get('REQUEST_METHOD') == 'GET':
            hooks = [h.serialise() for h in self.simulator.pending_hooks()]
            return self._respond(start_response, 200, {'hookExecutions': hooks}, content_type='application/json')
        if path == '/moto-api/reset' and environ.get('REQUEST_METHOD') == 'POST':
            self.simulator.reset()
            self.ecs_simulator.reset()
            self.codebuild.reset()
        return self.moto(environ, start_response)

    def _simulated(self, responses: Responses, operation: str, environ: dict[str, Any],
                   start_response: StartResponse) -> Iterable[bytes]:
        body = self._read_body(environ)
        try:
            request = json.loads(body or b'{}')
            if not isinstance(request, dict):
                raise ValueError('not an object')
        except ValueError:
            return self._respond(start_response, 400, {'__type': 'SerializationException',
                                                       'message': 'The request body is not a JSON object.'})
        account, region = _request_scope(environ)
        try:
            answer = responses.dispatch(operation, request, account=account, region=region)
        except AwsJsonError as error:
            return self._respond(start_response, error.status, error.body())
        except Exception as exc:  # noqa: BLE001 -- answered as AWS answers its own failures
            log.exception('%s failed in the sandbox', operation)
            return self._respond(start_response, 500, {'__type': 'InternalFailure', 'message': repr(exc)})
        if isinstance(answer, Forward):
            return self._forward(environ, start_response, body=body if answer.body is None
                                 else json.dumps(answer.body).encode(), merge=answer.merge)
        return self._respond(start_response, 200, answer)

    def _forward(self, environ: dict[str, Any], start_response: StartResponse, *, body: bytes,
                 merge: Callable[[dict[str, Any]], dict[str, Any]] | None) -> Iterable[bytes]:
        """Let moto answer (with this body); pass its answer on, merged when it succeeded."""
        environ = {**environ, 'wsgi.input': io.BytesIO(body), 'CONTENT_LENGTH': str(len(body))}
        captured: dict[str, Any] = {}
        chunks: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured.update(status=status, headers=headers)
            return chunks.append

        result = self.moto(environ, capture)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, 'close'):
                result.close()
        payload = b''.join(chunks)
        status = str(captured.get('status', '500 INTERNAL SERVER ERROR'))
        if merge is not None and status.startswith('200'):
            return self._respond(start_response, 200, merge(json.loads(payload or b'{}')))
        headers = [(k, v) for k, v in captured.get('headers', []) if k.lower() != 'content-length']
        start_response(status, [*headers, ('Content-Length', str(len(payload)))])
        return [payload]

    def _unknown_key(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """AWS's answer to an access key it does not know: JSON protocols (ECS, ECR, CodeDeploy) say
        UnrecognizedClientException, query protocols (STS, ELBv2, IAM) InvalidClientTokenId; HTTP 403."""
        self._read_body(environ)
        message = 'The security token included in the request is invalid.'
        if environ.get('HTTP_X_AMZ_TARGET'):
            return self._respond(start_response, 403, {'__type': 'UnrecognizedClientException', 'message': message})
        payload = (f'<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code>'
                   f'<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>'
                   ).encode()
        start_response('403 Forbidden', [('Content-Type', 'text/xml'), ('Content-Length', str(len(payload)))])
        return [payload]

    @staticmethod
    def _read_body(environ: Mapping[str, Any]) -> bytes:
        try:
            length = int(environ.get('CONTENT_LENGTH') or 0)
        except ValueError:
            length = 0
        body: bytes = environ['wsgi.input'].read(length) if length > 0 else b''
        return body

    @staticmethod
    def _respond(start_response: StartResponse, status: int, document: Mapping[str, Any], *,
                 content_type: str = JSON_CONTENT_TYPE) -> list[bytes]:
        payload = json.dumps(document).encode()
        reason = {200: 'OK', 400: 'Bad Request', 500: 'Internal Server Error'}.get(status, 'Error')
        start_response(f'{status} {reason}', [('Content-Type', content_type), ('Content-Length', str(len(payload))),
                                              ('x-amzn-RequestId', str(uuid.uuid4()))])
        return [payload]
