"""Structural-schema validation, pruning and defaulting, as an API server does it.

Why this exists: the PandaDeploy CRD promises that invalid specs are refused by
the API server through its ``openAPIV3Schema``.  No real API server can run on
the machines where the tests and the sandbox run, so the Kubernetes API
emulator (:mod:`controller.sandbox.kube`) applies the schema itself, and the CRD
generator's tests check the generated schema against sample objects with the
same code.  The wording of the errors follows the real server (kube-openapi
and apiextensions-apiserver) so that what a user sees in the sandbox is what
they would see from a cluster.

This is the Kubernetes *structural schema* dialect, not general JSON Schema:
``type``, ``properties``, ``required``, ``items``, ``additionalProperties``
(a schema for map values), ``enum``, ``pattern``, ``minimum``/``maximum``
(and the exclusive flags), ``multipleOf``, ``minLength``/``maxLength``,
``minItems``/``maxItems``, ``minProperties``/``maxProperties``, ``format``,
``nullable``, ``x-kubernetes-int-or-string``,
``x-kubernetes-preserve-unknown-fields``, ``x-kubernetes-embedded-resource``,
``anyOf``/``oneOf``/``allOf``/``not`` (validation only), ``x-kubernetes-list-type``
and ``x-kubernetes-validations`` CEL rules (see :func:`validate`).

All functions are pure: they never modify their arguments.  The modules:
``errors`` (field errors worded as the server words them), ``formats`` (JSON
types and ``format`` values), ``regex`` (patterns as Go's RE2 matches them),
``cel`` (CEL rules, evaluated by cel-python), ``listtypes`` (set and map
lists), ``validation``, ``pruning`` (pruning and defaulting), ``structural``
(what makes a CRD's schema structural), ``crdchecks`` and ``celcost`` (what
else a server checks in a CRD's schema: RE2 compile, list-map keys, CEL
compile and estimated cost).
"""
from controller.sandbox.schema.crdchecks import schema_errors
from controller.sandbox.schema.errors import (
    DUPLICATE,
    FORBIDDEN,
    INVALID,
    NOT_SUPPORTED,
    REQUIRED,
    TOO_LONG,
    TOO_MANY,
    TYPE_INVALID,
    FieldError,
    field_error,
    format_errors,
)
from controller.sandbox.schema.pruning import apply_defaults, prune
from controller.sandbox.schema.structural import structural_errors
from controller.sandbox.schema.validation import validate

__all__ = [
    'FieldError',
    'REQUIRED', 'INVALID', 'NOT_SUPPORTED', 'TYPE_INVALID', 'TOO_LONG', 'TOO_MANY',
    'FORBIDDEN', 'DUPLICATE',
    'validate', 'prune', 'apply_defaults', 'structural_errors', 'schema_errors', 'format_errors', 'field_error',
]
