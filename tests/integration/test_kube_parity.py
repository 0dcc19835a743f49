"""The emulator refuses what a real API server refuses, and accepts what it accepts (issue 16, item 3).

Each test is one difference the emulator once had from a cluster: Python ``re`` for patterns, CEL rules
ignored on strings (and all but three ``has()`` forms), strategic-merge patches accepted on custom
resources, duplicate map-list keys, no defaulting on read, no ``generation`` bump when a finalizer holds a
deleted object, and CRDs accepted that a server refuses (list-map keys, CEL that does not compile or costs
too much, patterns RE2 refuses, printer-column JSONPaths).  The server's own rules are cited in the
emulator's modules (controller/sandbox/schema/, controller/sandbox/kube/).
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

from controller.sandbox.kube import ClusterServer

GROUP, VERSION, PLURAL, KIND = 'parity.panda.dev', 'v1', 'gadgets', 'Gadget'
NS = 'default'

GADGET_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'spec': {
            'type': 'object',
            'x-kubernetes-validations': [
                {'rule': '!has(self.low) || !has(self.high) || self.low <= self.high',
                 'message': 'low must not exceed high'},
            ],
            'properties': {
                'dockerfile': {'type': 'string', 'maxLength': 64, 'x-kubernetes-validations': [
                    {'rule': "!self.startsWith('/')", 'message': 'must be a relative path'}]},
                'revision': {'type': 'string', 'pattern': '^[0-9a-f]{7,40}$'},
                'branch': {'type': 'string', 'pattern': r'^[^\s]+$'},
                'low': {'type': 'integer'},
                'high': {'type': 'integer'},
                'size': {'type': 'integer'},
            },
        },
        'status': {
            'type': 'object',
            'properties': {
                'conditions': {
                    'type': 'array', 'x-kubernetes-list-type': 'map', 'x-kubernetes-list-map-keys': ['type'],
                    'items': {'type': 'object', 'required': ['type'],
                              'properties': {'type': {'type': 'string'}, 'status': {'type': 'string'}}},
                },
            },
        },
    },
}


def gadget_crd(schema: dict[str, Any] | None = None, **version: Any) -> dict[str, Any]:
    return {
        'apiVersion': 'apiextensions.k8s.io/v1', 'kind': 'CustomResourceDefinition',
        'metadata': {'name': f'{PLURAL}.{GROUP}'},
        'spec': {
            'group': GROUP, 'scope': 'Namespaced',
            'names': {'plural': PLURAL, 'singular': 'gadget', 'kind': KIND},
            'versions': [{'name': VERSION, 'served': True, 'storage': True, 'subresources': {'status': {}},
                          'schema': {'openAPIV3Schema': schema or GADGET_SCHEMA}, **version}],
        },
    }


@pytest.fixture(scope='module')
def server() -> Iterator[ClusterServer]:
    with ClusterServer() as server:
        yield server


@pytest.fixture(scope='module')
def api(server: ClusterServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[kubernetes.client.ApiClient]:
    kubeconfig = server.write_kubeconfig(tmp_path_factory.mktemp('parity') / 'kubeconfig')
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield client
    client.close()


@pytest.fixture
def extensions(api: kubernetes.client.ApiClient) -> kubernetes.client.ApiextensionsV1Api:
    return kubernetes.client.ApiextensionsV1Api(api)


@pytest.fixture
def custom(api: kubernetes.client.ApiClient, extensions: kubernetes.client.ApiextensionsV1Api,
           ) -> Iterator[kubernetes.client.CustomObjectsApi]:
    extensions.create_custom_resource_definition(gadget_crd())
    yield kubernetes.client.CustomObjectsApi(api)
    extensions.delete_custom_resource_definition(f'{PLURAL}.{GROUP}')


def gadget(name: str = 'g1', **spec: Any) -> dict[str, Any]:
    return {'apiVersion': f'{GROUP}/{VERSION}', 'kind': KIND, 'metadata': {'name': name}, 'spec': spec}


def create(custom: kubernetes.client.CustomObjectsApi, body: dict[str, Any]) -> dict[str, Any]:
    return custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)


def refusal(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as info:
        call()
    return info.value.status, json.loads(info.value.body)


def messages(body: dict[str, Any]) -> list[str]:
    return [f"{c.get('field')}: {c['message']}" for c in body.get('details', {}).get('causes', [])]


# ---------------------------------------------------------------------------
# Validation of objects.

def test_a_cel_rule_on_a_string_refuses_the_value(custom):
    status, body = refusal(lambda: create(custom, gadget(dockerfile='/etc/passwd')))
    assert status == 422
    assert messages(body) == ['spec.dockerfile: Invalid value: "string": must be a relative path']
    create(custom, gadget(dockerfile='docker/Dockerfile'))


def test_a_cel_rule_beyond_has_is_evaluated(custom):
    status, body = refusal(lambda: create(custom, gadget(low=5, high=2)))
    assert status == 422
    assert messages(body) == ['spec: Invalid value: "object": low must not exceed high']
    create(custom, gadget(low=2, high=5))


def test_dollar_does_not_match_before_a_trailing_newline(custom):
    status, body = refusal(lambda: create(custom, gadget(revision='abcdef0\n')))
    assert status == 422
    assert "should match '^[0-9a-f]{7,40}$'" in messages(body)[0]


def test_backslash_s_is_ascii_whitespace_as_in_go(custom):
    """RE2's \\s is [\\t\\n\\f\\r ]: a no-break space passes ^[^\\s]+$ on a cluster (Python's re refuses it)."""
    assert create(custom, gadget(branch='main\u00a0x'))['spec']['branch'] == 'main\u00a0x'
    status, _ = refusal(lambda: create(custom, gadget('g2', branch='main x')))
    assert status == 422


def test_duplicate_keys_in_a_map_list_are_refused(custom):
    create(custom, gadget())
    patch = {'status': {'conditions': [{'type': 'Ready', 'status': 'True'}, {'type': 'Ready', 'status': 'False'}]}}
    status, body = refusal(lambda: custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, 'g1', patch, _content_type='application/merge-patch+json'))
    assert status == 422
    assert messages(body) == ['status.conditions[1]: Duplicate value: {"type": "Ready"}']


# ---------------------------------------------------------------------------
# Requests.

def test_a_strategic_merge_patch_on_a_custom_resource_is_415(custom, api):
    create(custom, gadget(size=1))
    status, body = refusal(lambda: custom.patch_namespaced_custom_object(
        GROUP, VERSION, NS, PLURAL, 'g1', {'spec': {'size': 2}},
        _content_type='application/strategic-merge-patch+json'))
    assert status == 415
    assert body['reason'] == 'UnsupportedMediaType'
    core = kubernetes.client.CoreV1Api(api)  # built-in kinds still take them
    core.create_namespaced_config_map(NS, {'metadata': {'name': 'smp'}, 'data': {'a': '1'}})
    patched = core.patch_namespaced_config_map('smp', NS, {'data': {'b': '2'}})
    assert patched.data == {'a': '1', 'b': '2'}
    core.delete_namespaced_config_map('smp', NS)


def test_defaults_are_applied_on_read(custom, extensions):
    create(custom, gadget())
    crd = extensions.read_custom_resource_definition(f'{PLURAL}.{GROUP}')
    schema = copy.deepcopy(GADGET_SCHEMA)
    schema['properties']['spec']['properties']['size']['default'] = 3
    crd.spec.versions[0].schema.open_apiv3_schema = schema
    extensions.replace_custom_resource_definition(f'{PLURAL}.{GROUP}', crd)
    assert custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'g1')['spec']['size'] == 3
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)['items']
    assert [item['spec'].get('size') for item in listed] == [3]


def test_deletion_held_by_a_finalizer_bumps_generation(custom):
    body = gadget()
    body['metadata']['finalizers'] = ['parity.panda.dev/hold']
    assert create(custom, body)['metadata']['generation'] == 1
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'g1')
    held = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'g1')
    assert held['metadata']['deletionTimestamp']
    assert held['metadata']['generation'] == 2
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'g1', {'metadata': {'finalizers': None}},
                                          _content_type='application/merge-patch+json')


# ---------------------------------------------------------------------------
# CRD checks at creation.

def _spec_with(**properties: Any) -> dict[str, Any]:
    schema = copy.deepcopy(GADGET_SCHEMA)
    schema['properties']['spec']['properties'].update(properties)
    return schema


@pytest.mark.parametrize(('schema', 'version', 'expected'), [
    pytest.param(_spec_with(items={'type': 'array', 'x-kubernetes-list-type': 'map',
                                   'items': {'type': 'object', 'properties': {'name': {'type': 'string'}}}}),
                 {}, 'x-kubernetes-list-map-keys: Required value', id='list-map-without-keys'),
    pytest.param(_spec_with(name={'type': 'string', 'maxLength': 10,
                                  'x-kubernetes-validations': [{'rule': 'self.startsWith(('}]}),
                 {}, 'x-kubernetes-validations[0].rule: Invalid value', id='cel-does-not-compile'),
    pytest.param(_spec_with(name={'type': 'object', 'properties': {'first': {'type': 'string', 'maxLength': 9}},
                                  'x-kubernetes-validations': [{'rule': "self.frist != 'x'"}]}),
                 {}, "undefined field 'frist'", id='cel-reads-an-undeclared-field'),
    pytest.param(_spec_with(tags={'type': 'array', 'items': {'type': 'string', 'x-kubernetes-validations': [
        {'rule': "self.contains('x') || self.endsWith('y') || self.startsWith('z')"}]}}),
                 {}, 'estimated rule cost exceeds budget', id='cel-cost-over-budget'),
    pytest.param(_spec_with(name={'type': 'string', 'pattern': '^(?!x)'}),
                 {}, 'pattern: Invalid value', id='pattern-re2-refuses'),
    pytest.param(GADGET_SCHEMA, {'additionalPrinterColumns': [{'name': 'Phase', 'type': 'string',
                                                               'jsonPath': 'status.phase'}]},
                 'must be a simple json path starting with .', id='printer-column-jsonpath'),
    pytest.param(GADGET_SCHEMA, {'additionalPrinterColumns': [{'name': 'Phase', 'type': 'text',
                                                               'jsonPath': '.status.phase'}]},
                 'type: Invalid value', id='printer-column-type'),
])
def test_a_crd_a_server_refuses_is_refused(extensions, schema, version, expected):
    try:
        status, body = refusal(lambda: extensions.create_custom_resource_definition(gadget_crd(schema, **version)))
    finally:  # a CRD wrongly accepted must not turn the next cases into 409s
        if extensions.list_custom_resource_definition().items:
            extensions.delete_custom_resource_definition(f'{PLURAL}.{GROUP}')
    assert status == 422
    assert any(expected in message for message in messages(body)), messages(body)
