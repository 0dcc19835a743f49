"""botocore's service model as the contract between a client and the AWS sandbox: every request and answer checked.

The sandbox answers some AWS operations itself (CodeDeploy deployments, ECS
service deployments). boto3 validates what it sends (botocore's
``ParamValidator``) but not what it is answered: its parsers drop keys the
model does not know and pass enum values through. So :class:`ContractCheck`
hooks a client's events and checks

- each request's parameters with ``ParamValidator`` (as boto3 does), and the
  JSON body on the wire against the operation's input shape;
- each answer's raw JSON body (AWS JSON protocols) against the output shape:
  no key the model does not define, every required member, the type of every
  value (timestamps are epoch numbers on the wire), every enum value in the
  model's enum, lists and maps of the right members;
- each error's code is one the operation declares (or one of AWS's common
  errors) and its body has only the error shape's members.

Query-protocol services (ELBv2, STS, IAM) answer in XML: only their requests are checked.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from botocore.model import OperationModel, Shape
from botocore.validate import ParamValidator

#: Errors any AWS operation may answer (AWS's "Common Errors"), beside those its model declares.
COMMON_ERRORS = frozenset({
    'AccessDeniedException', 'IncompleteSignature', 'InternalFailure', 'InvalidAction', 'InvalidClientTokenId',
    'NotAuthorized', 'OptInRequired', 'RequestExpired', 'ServiceUnavailable', 'ThrottlingException',
    'ValidationError', 'UnrecognizedClientException', 'SerializationException',
})
JSON_PROTOCOLS = frozenset({'json', 'rest-json'})


def violations(shape: Shape | None, value: Any, path: str = '$') -> list[str]:
    """Where ``value`` (a decoded JSON document) breaks ``shape``: unknown keys, types, enums, required members."""
    if shape is None:
        return [] if value in ({}, None) else [f'{path}: the operation answers nothing, got {value!r}']
    kind = shape.type_name
    if kind == 'structure':
        return _structure(shape, value, path)
    if kind == 'list':
        if not isinstance(value, list):
            return [f'{path}: expected a list ({shape.name}), got {type(value).__name__}']
        return [v for i, item in enumerate(value) for v in violations(shape.member, item, f'{path}[{i}]')]
    if kind == 'map':
        if not isinstance(value, dict):
            return [f'{path}: expected a map ({shape.name}), got {type(value).__name__}']
        return [v for key, item in value.items() for v in (*violations(shape.key, key, f'{path}.<key>'),
                                                          *violations(shape.value, item, f'{path}[{key!r}]'))]
    return _scalar(shape, value, path)


def _structure(shape: Shape, value: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f'{path}: expected an object ({shape.name}), got {type(value).__name__}']
    if shape.metadata.get('document'):
        return []
    found = [f'{path}.{key}: not a member of {shape.name}' for key in value if key not in shape.members]
    found += [f'{path}.{key}: required by {shape.name}, missing' for key in shape.required_members if key not in value]
    for key, item in value.items():
        if key in shape.members:
            found += violations(shape.members[key], item, f'{path}.{key}')
    return found


_SCALARS: dict[str, tuple[type, ...]] = {
    'string': (str,), 'blob': (str,), 'boolean': (bool,), 'integer': (int,), 'long': (int,),
    'float': (int, float), 'double': (int, float), 'timestamp': (int, float),
}


def _scalar(shape: Shape, value: Any, path: str) -> list[str]:
    expected = _SCALARS.get(shape.type_name)
    if expected is None:  # a document: anything JSON
        return []
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        return [f'{path}: expected {shape.type_name} ({shape.name}), got {value!r}']
    enum = getattr(shape, 'enum', None) or []
    if enum and value not in enum:
        return [f'{path}: {value!r} is not in the {shape.name} enum {enum}']
    return []


@dataclasses.dataclass
class ContractCheck:
    """Checks every request and answer of the clients it watches; ``problems`` lists what broke the model."""

    problems: list[str] = dataclasses.field(default_factory=list)
    requests: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    answers: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    _requests_checked: bool = True

    def watch(self, client: Any) -> Any:
        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f'before-parameter-build.{service}', self._parameters)
        client.meta.events.register(f'before-call.{service}', self._wire_request)
        client.meta.events.register(f'after-call.{service}', self._answer)
        return client

    @contextlib.contextmanager
    def sending_invalid_requests(self) -> Iterator[None]:
        """A test sends values the model refuses on purpose (to see the sandbox refuse them): answers still checked."""
        self._requests_checked = False
        try:
            yield
        finally:
            self._requests_checked = True

    def _parameters(self, params: dict[str, Any], model: OperationModel, **_: Any) -> None:
        if not self._requests_checked:
            return
        report = ParamValidator().validate(params, model.input_shape)
        if report.has_errors():
            self.problems.append(f'{model.name} request: {report.generate_report()}')

    def _wire_request(self, model: OperationModel, params: dict[str, Any], **_: Any) -> None:
        self.requests[model.name] += 1
        if model.service_model.resolved_protocol not in JSON_PROTOCOLS or not self._requests_checked:
            return
        body = params.get('body') or b'{}'
        document = json.loads(body.decode() if isinstance(body, bytes) else body)
        self.problems += [f'{model.name} request {v}' for v in violations(model.input_shape, document)]

    def _answer(self, http_response: Any, parsed: dict[str, Any], model: OperationModel, **_: Any) -> None:
        if model.service_model.resolved_protocol not in JSON_PROTOCOLS:
            return
        self.answers[model.name] += 1
        document = json.loads(http_response.content or b'{}')
        if http_response.status_code < 300:
            self.problems += [f'{model.name} answer {v}' for v in violations(model.output_shape, document)]
            return
        code = str(parsed.get('Error', {}).get('Code', ''))
        declared = {error.name: error for error in model.error_shapes}
        if code not in declared and code not in COMMON_ERRORS:
            self.problems.append(f'{model.name} error {code!r}: not declared by the operation ({sorted(declared)})')
        if code in declared:
            members = set(declared[code].members) | {'__type', 'message', 'Message'}
            self.problems += [f'{model.name} error {code}: {key} is not a member of {code}'
                              for key in document if key not in members]

    def assert_clean(self) -> None:
        problems, self.problems = self.problems, []
        assert problems == [], 'answers or requests that break botocore\'s model:\n' + '\n'.join(problems)
