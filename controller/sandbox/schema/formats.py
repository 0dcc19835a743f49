"""JSON types and the ``format`` values the API server knows; unknown formats are ignored."""
from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import re
import uuid
from collections.abc import Callable
from typing import Any


def type_name(value: Any) -> str:
    """The JSON type of ``value`` as the server names it in errors (``1.0`` is an integer)."""
    match value:
        case None:
            return 'null'
        case bool():
            return 'boolean'
        case int():
            return 'integer'
        case float():
            return 'integer' if value.is_integer() else 'number'
        case str():
            return 'string'
        case list():
            return 'array'
        case dict():
            return 'object'
        case _:
            return type(value).__name__


def is_type(value: Any, type_: str) -> bool:
    """True if ``value`` is of the schema ``type`` (unknown types are not ours to refuse)."""
    match type_:
        case 'object':
            return isinstance(value, dict)
        case 'array':
            return isinstance(value, list)
        case 'string':
            return isinstance(value, str)
        case 'boolean':
            return isinstance(value, bool)
        case 'integer':
            return (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer())
        case 'number':
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        case _:
            return True


def same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


_RFC3339 = re.compile(
    r'^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$')
_DATE = re.compile(r'^\d{4}-\d{2}-\d{2}$')
_HOSTNAME = re.compile(
    r'^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?'
    r'(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$')
_EMAIL = re.compile(r'^[^@\s]+@[^@\s]+$')
_URI = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:\S*$')
_DURATION = re.compile(r'^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')


def _date_time(value: str) -> bool:
    if not _RFC3339.match(value):
        return False
    datetime.datetime.fromisoformat(value.replace('z', 'Z').replace('Z', '+00:00'))
    return True


def _date(value: str) -> bool:
    return bool(_DATE.match(value)) and bool(datetime.date.fromisoformat(value))


def _parses(parse: Callable[[str], object]) -> Callable[[str], bool]:
    """A check that passes when ``parse`` does not raise ``ValueError``."""
    def check(value: str) -> bool:
        parse(value)
        return True
    return check


def _matches(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: bool(pattern.match(value))


# Formats of strings; a check may also raise ValueError (or binascii.Error) for "no".
_STRING_FORMATS: dict[str, Callable[[str], bool]] = {
    'date-time': _date_time,
    'datetime': _date_time,
    'date': _date,
    'hostname': _matches(_HOSTNAME),
    'email': _matches(_EMAIL),
    'uri': _matches(_URI),
    'uuid': _parses(uuid.UUID),
    'ipv4': _parses(ipaddress.IPv4Address),
    'ipv6': _parses(ipaddress.IPv6Address),
    'cidr': _parses(lambda value: ipaddress.ip_network(value, strict=False)),
    'byte': _parses(lambda value: base64.b64decode(value, validate=True)),
    'duration': _matches(_DURATION),
}


def check_format(fmt: str, value: Any) -> bool:
    """True if ``value`` matches ``fmt`` (or the format is not one we know)."""
    if fmt == 'int32':
        return not isinstance(value, int) or -2**31 <= value < 2**31
    if fmt == 'int64':
        return not isinstance(value, int) or -2**63 <= value < 2**63
    check = _STRING_FORMATS.get(fmt)
    if check is None or not isinstance(value, str):
        return True
    try:
        return check(value)
    except (ValueError, binascii.Error):
        return False
