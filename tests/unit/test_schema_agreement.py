"""The CRD's schema and the operator's models accept and refuse the same specs, case by case (issue 16).

A spec the API server admits but the models refuse stalls the operator with InvalidSpec after admission
(``timeouts.stageSeconds: "0s"``, ``branch: "main\\u00a0x"``); one the server refuses but the models accept
is a feature nobody can use.  The cases are generated from the generated CRD itself: for every field of
three complete specs (CodeDeploy, Canary, Linear) the limits the schema states and the values that
engines read differently: lengths at and beyond each ``maxLength``/``minLength``, list sizes at and beyond
``maxItems``, duplicates, numbers on and past each bound, every enum value and one more, Unicode spaces,
separators and controls inside a value, a trailing newline, boundary durations, a field removed, an
unknown field added, and the cross-field combinations the CEL rules cover.  The schema is applied as a
server applies it (``fieldValidation=Strict`` pruning, defaults, RE2 patterns, CEL rules through
cel-python, formats, bounds) by the sandbox's schema package; the models by ``PandaDeploySpec``.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from controller import crd
from controller.models import PandaDeploySpec
from controller.sandbox import schema as schemas

ROLE = 'arn:aws:iam::123456789012:role/panda'
LISTENER = 'arn:aws:elasticloadbalancing:ap-northeast-2:123456789012:listener/app/lb/1/2'
RULE = 'arn:aws:elasticloadbalancing:ap-northeast-2:123456789012:listener-rule/app/lb/1/2/3'
TG = 'arn:aws:elasticloadbalancing:ap-northeast-2:123456789012:targetgroup/blue/1'
ECS = {'cluster': 'c', 'service': 's', 'containerName': 'app', 'containerPort': 8080, 'cpu': '256', 'memory': '512',
       'desiredCount': 1, 'launchType': 'FARGATE', 'executionRoleArn': ROLE, 'taskRoleArn': ROLE,
       'networking': {'subnets': ['subnet-0a'], 'securityGroups': ['sg-0a'], 'assignPublicIp': False}}
ROLLOUT_LB = {'targetGroupArn': TG, 'alternateTargetGroupArn': TG, 'productionListenerRuleArn': RULE,
              'testListenerRuleArn': RULE, 'roleArn': ROLE}
BASES: dict[str, dict[str, Any]] = {
    'codedeploy': {
        'source': {'repo': 'panda/app', 'branch': 'main', 'tokenSecretRef': {'name': 'gh', 'key': 'token'},
                   'dockerfile': 'docker/Dockerfile', 'context': 'docker', 'buildArgs': {'A': 'b'}},
        'aws': {'region': 'ap-northeast-2', 'credentialsSecretRef': {'name': 'aws'}, 'roleArn': ROLE},
        'image': {'repository': 'panda/app'},
        'ecs': ECS,
        'blueGreen': {'codeDeploy': {'application': 'a', 'deploymentGroup': 'g',
                                     'deploymentConfig': 'CodeDeployDefault.ECSAllAtOnce', 'serviceRoleArn': ROLE},
                      'promotion': 'auto', 'hooks': {'beforeAllowTraffic': 'f', 'afterAllowTraffic': 'g'},
                      'loadBalancer': {'productionListenerArn': LISTENER, 'testListenerArn': LISTENER,
                                       'blueTargetGroupArn': TG, 'greenTargetGroupArn': TG}},
        'healthCheck': {'url': 'https://green.example/health', 'path': '/health', 'checks': 5, 'intervalSeconds': 5,
                        'timeoutSeconds': 5, 'expectedStatus': 200},
        'timeouts': {'stageSeconds': '10m', 'totalSeconds': 1800},
        'historyLimit': 10, 'suspend': False,
    },
    'canary': {
        'source': {'url': 'https://git.example/panda/app.git', 'revision': 'abcdef0'},
        'aws': {'region': 'us-east-1'}, 'image': {'repository': 'app'}, 'ecs': ECS,
        'rollout': {'strategy': 'Canary', 'loadBalancer': ROLLOUT_LB, 'bakeTimeMinutes': 0,
                    'canary': {'percent': 10, 'bakeMinutes': 5}, 'promotion': 'manual'},
        'healthCheck': {'path': '/'}, 'timeouts': {'stageSeconds': 600, 'totalSeconds': '1h30m'},
    },
    'linear': {
        'source': {'url': 'ssh://git@git.example/panda/app.git', 'branch': 'release/1.0', 'interval': '5m',
                   'paths': ['services/web/**', 'lib/*.py']},
        'aws': {'region': 'eu-west-1'}, 'image': {'repository': 'app'},
        'build': {'engine': 'codeBuild', 'codeBuild': {'project': 'builds'}},
        'notify': {'commitStatus': True,
                   'webhook': {'url': 'https://hooks.example/panda', 'secretRef': {'name': 'hook', 'key': 'k'}}},
        'rollout': {'strategy': 'Linear', 'loadBalancer': ROLLOUT_LB, 'linear': {'stepPercent': 20,
                                                                                 'stepBakeMinutes': 2}},
    },
}
# Inside a value: spaces RE2's \s misses, separators, controls, and characters that are none of these.
INSERTED = ('\u00a0', '\u2003', '\u3000', '\u202f', '\u2028', '\u0085', '\u1680', '\t', '\x0b', '\n', '\r',
            '\x00', '\x7f', '\x9f', ' ', '\u200b', '\ufeff', 'é', '~', ':', '@', '/')
DURATIONS = ('0s', '1s', '999ms', '1000ms', '0.999s', '1.001s', '0.5s', '500ms', '1h', '168h', '168.001h',
             '200h', '167h59m60s', '167h60m0.001s', '604800s', '604801s', '10080m', '10081m', '1h30m', '1.5h',
             '0.1h0.2h', '1.0001s', '99999999999999999999h', '', ' 1s', '1s\n', '1 s', '+1s', '-1s', '.5s',
             '5.s', '1d', '1us', '1ns', '0.001ms', '1000.000ms', '600', '1e3s', 0, 1, 604800, 604801, -1, 1.5, True)
PATHS = ('..', '../x', 'a/..', 'a/../b', '/abs', 'a/..b', '..a/b', 'a/b..', './x', '.')


def object_schema() -> dict[str, Any]:
    return crd.build_crd()['spec']['versions'][0]['schema']['openAPIV3Schema']


SCHEMA = object_schema()
SPEC_SCHEMA = SCHEMA['properties']['spec']


def schema_admits(spec: dict[str, Any]) -> bool:
    """What a server answers: Strict pruning, defaulting, then validation of the whole object."""
    obj = {'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy', 'metadata': {'name': 'x'},
           'spec': spec}
    pruned, errors = schemas.prune(SCHEMA, obj, strict=True)
    return not errors and not schemas.validate(SCHEMA, schemas.apply_defaults(SCHEMA, pruned))


def models_admit(spec: dict[str, Any]) -> bool:
    try:
        PandaDeploySpec.model_validate(spec)
    except pydantic.ValidationError:
        return False
    return True


# ---------------------------------------------------------------------------
# Case generation.

def _with(spec: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    node: Any = spec
    for key in path[:-1]:
        node = node[key]
    if value is _ABSENT:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return spec


_ABSENT = object()


def _padded(value: str, length: int) -> str:
    return (value + 'a' * length)[:length] if length >= len(value) else value[:length]


def _string_values(schema: dict[str, Any], value: str) -> Iterator[tuple[str, Any]]:
    for bound in ('maxLength', 'minLength'):
        if isinstance(schema.get(bound), int):
            limit = schema[bound]
            yield f'{bound}', _padded(value or 'a', limit)
            yield f'{bound}{"+" if bound == "maxLength" else "-"}1', _padded(
                value or 'a', limit + 1 if bound == 'maxLength' else max(limit - 1, 0))
    for option in schema.get('enum') or ():
        yield f'enum {option}', option
    middle = max(1, len(value) // 2)
    for char in INSERTED:
        yield f'inserted U+{ord(char):04X}', value[:middle] + char + value[middle:]
    yield 'trailing newline', value + '\n'
    yield 'empty', ''


def _number_values(schema: dict[str, Any], value: Any) -> Iterator[tuple[str, Any]]:
    step = 1 if schema.get('type') == 'integer' else 0.1
    for bound in ('minimum', 'maximum'):
        if isinstance(schema.get(bound), (int, float)):
            for delta in (-step, 0, step):
                yield f'{bound}{delta:+}', round(schema[bound] + delta, 6)
    if schema.get('type') == 'integer':
        yield 'fraction', 1.5
    yield 'string', str(value)
    yield 'boolean', True


def _list_values(schema: dict[str, Any], value: list[Any]) -> Iterator[tuple[str, Any]]:
    if value:
        yield 'duplicate', value + value[:1]
        if isinstance(schema.get('maxItems'), int):
            for size in (schema['maxItems'], schema['maxItems'] + 1):
                yield f'{size} items', [f'{value[0]}{index:x}' for index in range(size)]
    yield 'empty list', []


def _map_values(schema: dict[str, Any], value: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    if isinstance(schema.get('maxProperties'), int):
        for size in (schema['maxProperties'], schema['maxProperties'] + 1):
            yield f'{size} entries', {f'K{index}': 'v' for index in range(size)}


def _values(schema: dict[str, Any], value: Any) -> Iterator[tuple[str, Any]]:
    if schema.get('x-kubernetes-int-or-string'):
        yield from ((f'duration {d!r}', d) for d in DURATIONS)
    elif schema.get('type') == 'string':
        yield from _string_values(schema, value)
    elif schema.get('type') in ('integer', 'number'):
        yield from _number_values(schema, value)
    elif schema.get('type') == 'array':
        yield from _list_values(schema, value)
    elif schema.get('type') == 'object' and 'additionalProperties' in schema:
        yield from _map_values(schema, value)
    elif schema.get('type') == 'boolean':
        yield 'string', 'true'
        yield 'number', 1


def _cases_under(schema: dict[str, Any], value: Any, path: tuple[Any, ...]) -> Iterator[tuple[str, tuple[Any, ...], Any]]:
    where = '.'.join(str(p) for p in path)
    for label, new in _values(schema, value):
        yield f'{where}: {label}', path, new
    if schema.get('type') == 'object' and isinstance(value, dict) and 'properties' in schema:
        yield f'{where}: unknown field', path + ('bogusField',), 'x'
        for key, item in value.items():
            yield f'{where}.{key}: removed', path + (key,), _ABSENT
            yield from _cases_under(schema['properties'][key], item, path + (key,))
    if path and path[-1] in ('dockerfile', 'context'):
        yield from ((f'{where}: path {p!r}', path, p) for p in PATHS)
    if path and path[-1] == 'paths':
        yield from ((f'{where}: glob {p!r}', path, [p]) for p in PATHS + (':(exclude)x', ':x'))


CROSS_FIELD: tuple[tuple[str, str, tuple[Any, ...], Any], ...] = (
    ('codedeploy', 'source: repo and url', ('source', 'url'), 'https://git.example/a/b.git'),
    ('codedeploy', 'source: branch and revision', ('source', 'revision'), 'abcdef0'),
    ('canary', 'source: neither repo nor url', ('source', 'url'), _ABSENT),
    ('canary', 'rollout with blueGreen', ('blueGreen',), {'promotion': 'auto'}),
    ('canary', 'rollout with empty blueGreen', ('blueGreen',), {}),
    ('canary', 'canary with strategy Linear', ('rollout', 'strategy'), 'Linear'),
    ('canary', 'canary with strategy BlueGreen', ('rollout', 'strategy'), 'BlueGreen'),
    ('canary', 'strategy CodeDeploy with loadBalancer', ('rollout', 'strategy'), 'CodeDeploy'),
    ('linear', 'no strategy, linear steps', ('rollout', 'strategy'), _ABSENT),
    ('linear', 'no loadBalancer', ('rollout', 'loadBalancer'), _ABSENT),
    ('codedeploy', 'rollout CodeDeploy with blueGreen', ('rollout',), {'strategy': 'CodeDeploy'}),
    ('codedeploy', 'rollout promotion with blueGreen', ('rollout',), {'strategy': 'CodeDeploy', 'promotion': 'auto'}),
)


def all_cases() -> Iterator[Any]:
    for base_name, base in BASES.items():
        for label, path, value in _cases_under(SPEC_SCHEMA, base, ()):
            yield pytest.param(_with(base, path, value), id=f'{base_name} {label}')
    for base_name, label, path, value in CROSS_FIELD:
        yield pytest.param(_with(BASES[base_name], path, value), id=f'{base_name} {label}')


CASES = list(all_cases())


def test_the_bases_are_valid_on_both_sides():
    for spec in BASES.values():
        assert models_admit(spec) and schema_admits(spec)


def test_the_cases_cover_refusals_and_admissions():
    verdicts = [models_admit(case.values[0]) for case in CASES]
    assert len(CASES) > 1000
    assert verdicts.count(True) > 200 and verdicts.count(False) > 200


@pytest.mark.parametrize('spec', CASES)
def test_schema_and_models_agree(spec):
    assert schema_admits(spec) == models_admit(spec)


def test_the_crd_passes_the_servers_own_checks():
    """RE2 compiles every pattern, every CEL rule parses within the cost budget, list-map keys are named."""
    assert schemas.structural_errors(SCHEMA) == []
    assert schemas.schema_errors(SCHEMA, 'openAPIV3Schema') == []


def _strings_and_lists(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if schema.get('type') in ('string', 'array') or schema.get('x-kubernetes-int-or-string'):
        yield path, schema
    for key, sub in (schema.get('properties') or {}).items():
        yield from _strings_and_lists(sub, f'{path}.{key}')
    for key in ('items', 'additionalProperties'):
        if isinstance(schema.get(key), dict):
            yield from _strings_and_lists(schema[key], f'{path}[]')


def test_every_string_and_list_in_the_spec_is_bounded():
    """What a CEL rule reads is sized by its bounds (the server's cost estimate); the spec bounds them all."""
    unbounded = [path for path, node in _strings_and_lists(SPEC_SCHEMA, 'spec')
                 if not (node.get('maxLength') or node.get('maxItems') or node.get('enum'))]
    assert unbounded == []


def test_the_schema_carries_no_defaults():
    """The defaults rule (README, "Defaults"): the operator's models apply every default, at every level."""
    assert '"default"' not in str(SCHEMA).replace("'", '"')
