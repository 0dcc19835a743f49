"""``pattern`` as the API server matches it: Go's ``regexp`` (RE2 syntax and semantics), not Python's ``re``.

Why not ``re``: the meanings differ exactly where specs go wrong. In RE2 ``\\s`` is ``[\\t\\n\\f\\r ]``
(Python: any Unicode space, so ``"main\\u00a0x"`` fails ``^[^\\s]+$`` in Python and passes on a cluster);
``$`` matches only at the end of the text (Python: also before a trailing newline, so ``"abc\\n"`` passes
``^abc$`` in Python and fails on a cluster); and RE2 has no look-around or back-references, so a pattern
Python compiles may be refused by the server when the CRD is created.  Google's RE2 (the ``google-re2``
wheel) shares Go's syntax: apiextensions-apiserver compiles patterns with ``regexp.Compile``
(``pkg/apiserver/validation/validation.go``, ``validateSchemaPattern``) and kube-openapi matches with
``regexp.MatchString`` (``pkg/validation/validate/values.go``, ``Pattern``), both unanchored searches.
"""
from __future__ import annotations

import functools
from typing import Any

import re2


class PatternError(ValueError):
    """A pattern RE2 (and so the API server) cannot compile."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is ours to report, not RE2's to print on stderr
    return options


_OPTIONS = _options()


@functools.lru_cache(maxsize=512)
def compiled(pattern: str) -> Any:
    """The RE2 program for ``pattern``; :class:`PatternError` when RE2 refuses it."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        detail = e.args[0] if e.args else e
        raise PatternError(detail.decode() if isinstance(detail, bytes) else str(detail)) from None


def compile_error(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern``, or None when it compiles."""
    try:
        compiled(pattern)
    except PatternError as e:
        return str(e)
    return None


def matches(pattern: str, value: str) -> bool:
    """True if ``pattern`` matches anywhere in ``value`` (Go's ``regexp.MatchString``).

    A pattern RE2 cannot compile matches nothing: the server would have refused the CRD that holds it.
    """
    try:
        return compiled(pattern).search(value) is not None
    except PatternError:
        return False
