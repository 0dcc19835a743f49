"""Requests to GitHub's REST API and its answers, checked against GitHub's published OpenAPI description.

The description is `@octokit/openapi` (pinned; the operations the operator
calls are extracted by tests/github_openapi/extract.py into operations.json).
`check_request` finds the operation by method and path template and checks
the path parameters, that no query parameter is sent that the operation does
not declare, the Content-Type and the JSON body against the request schema;
`check_answer` checks a status code and body against the declared responses.
OpenAPI 3.0's `nullable` becomes JSON Schema's `null` type, and a request body
may hold only the properties the schema declares (GitHub ignores others; a
property it ignores is a bug of ours).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import jsonschema

OPERATIONS = pathlib.Path(__file__).parent / 'github_openapi' / 'operations.json'


class ContractError(AssertionError):
    """A request or an answer that GitHub's description does not allow."""


@dataclasses.dataclass(frozen=True)
class Matched:
    operation_id: str
    operation: Mapping[str, Any]
    params: Mapping[str, str]


def _json_schema(schema: Any, *, closed: bool = False) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: `nullable` as a null type; `closed`: no undeclared properties."""
    if isinstance(schema, list):
        return [_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _json_schema(value) for key, value in schema.items() if key not in ('nullable', 'example')}
    if schema.get('nullable') and 'type' in out:
        out['type'] = [out['type'], 'null']
    if closed and out.get('type') == 'object' and 'properties' in out:
        out.setdefault('additionalProperties', False)
    return out


class GitHubContract:
    def __init__(self, description: str = 'api.github.com') -> None:
        found = json.loads(OPERATIONS.read_text())
        self.version = found['version']
        self.operations: dict[str, Any] = found['descriptions'][description]['operations']

    def match(self, method: str, path: str) -> Matched:
        """The operation whose method and path template fit, with the path parameters (decoded)."""
        for operation_id, entry in self.operations.items():
            pattern = re.sub(r'\\\{(\w+)\\\}', r'(?P<\1>[^/]+)', re.escape(entry['path']))
            found = re.fullmatch(pattern, path)
            if entry['method'] == method and found:
                params = {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}
                return Matched(operation_id, entry['operation'], params)
        raise ContractError(f'{method} {path}: no operation of GitHub\'s REST description')

    def check_request(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Matched:
        parts = urllib.parse.urlsplit(target)
        matched = self.match(method, parts.path)
        declared = {p['name']: p for p in matched.operation.get('parameters', [])}
        for name, value in matched.params.items():
            jsonschema.validate(value, _json_schema(declared[name]['schema']))
            if not value:
                raise ContractError(f'path parameter {name} is empty')
        queries = {p for p, d in declared.items() if d['in'] == 'query'}
        for name in urllib.parse.parse_qs(parts.query, keep_blank_values=True):
            if name not in queries:
                raise ContractError(f'{matched.operation_id}: undeclared query parameter {name!r}')
        request = matched.operation.get('requestBody')
        if request is not None:
            kind = (headers.get('Content-Type') or '').split(';')[0].strip()
            if kind not in request['content']:
                raise ContractError(f'{matched.operation_id}: Content-Type {kind!r}, not one of {list(request["content"])}')
            try:
                document = json.loads(body)
            except ValueError as exc:
                raise ContractError(f'{matched.operation_id}: body is not JSON: {exc}') from None
            self._validate(document, request['content'][kind]['schema'], matched, 'request', closed=True)
        return matched

    def check_answer(self, matched: Matched, status: int, body: bytes) -> None:
        answer = matched.operation['responses'].get(str(status))
        if answer is None:
            raise ContractError(f'{matched.operation_id}: HTTP {status} is not a declared response')
        content = answer.get('content', {}).get('application/json')
        if content is not None:
            self._validate(json.loads(body), content['schema'], matched, f'HTTP {status} answer')

    @staticmethod
    def _validate(document: Any, schema: Any, matched: Matched, what: str, *, closed: bool = False) -> None:
        try:
            jsonschema.validate(document, _json_schema(copy.deepcopy(schema), closed=closed))
        except jsonschema.ValidationError as exc:
            raise ContractError(f'{matched.operation_id} {what}: {exc.message} at {list(exc.absolute_path)}') from None
