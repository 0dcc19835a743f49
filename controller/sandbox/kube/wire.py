"""Reading requests and writing responses: JSON (or YAML) bodies, query flags, the Table media type."""
from __future__ import annotations

import json
from typing import Any

import aiohttp.web
import yaml
from kmock._internal import rendering

from controller.sandbox.kube.errors import bad_request


def json_response(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(body).encode(), status=status, content_type='application/json')


def truthy(value: str | None) -> bool:
    """A query flag as Go's strconv.ParseBool reads it (clients send ``true``, ``True``, ``1``)."""
    return value in ('1', 't', 'T', 'true', 'True', 'TRUE')


def header(request: rendering.Request, name: str) -> str:
    """A request header as the client sent it (kmock's own copy may be missing when its parsing failed)."""
    raw = request._raw_request
    return (raw.headers.get(name) if raw is not None else request.headers.get(name)) or ''


def wants_table(request: rendering.Request) -> bool:
    return 'as=Table' in header(request, 'Accept')


def request_body(request: rendering.Request) -> Any:
    """The request's body: JSON, or YAML (as kubectl sends for server-side apply)."""
    if request.data is not None:
        return request.data
    if request.text.strip():
        try:
            return yaml.safe_load(request.text)
        except yaml.YAMLError as e:
            raise bad_request(f'the body of the request could not be decoded: {e}') from None
    raise bad_request('the body of the request is empty')
