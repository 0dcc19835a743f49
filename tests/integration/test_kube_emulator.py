"""The Kubernetes API emulator keeps the API server's contract.

The operator's e2e tests and the sandbox rely on the emulator behaving like a
cluster, so every rule they lean on is checked here through the real
``kubernetes`` client (reaching the emulator through a kubeconfig, exactly as
a cluster is reached) and, once, through a real Kopf operator.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import kopf.testing
import kubernetes
import kubernetes.client
import kubernetes.watch
import pytest
import yaml
from kubernetes.client.rest import ApiException

from controller.sandbox import schema as schemas
from controller.sandbox.kube import ClusterEmulator, ClusterServer, Write

GROUP, VERSION, PLURAL, KIND = 'test.panda.dev', 'v1', 'widgets', 'Widget'
NS = 'default'

WIDGET_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'properties': {
        'spec': {
            'type': 'object',
            'required': ['source'],
            'properties': {
                'source': {
                    'type': 'object',
                    'x-kubernetes-validations': [
                        {'rule': 'has(self.url) != has(self.repo)', 'message': 'exactly one of url or repo must be set'},
                        {'rule': '!(has(self.branch) && has(self.revision))',
                         'message': 'branch and revision are mutually exclusive'},
                    ],
                    'properties': {
                        'repo': {'type': 'string', 'pattern': '^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$'},
                        'url': {'type': 'string'},
                        'branch': {'type': 'string'},
                        'revision': {'type': 'string'},
                    },
                },
                'replicas': {'type': 'integer', 'minimum': 0, 'default': 1},
                'promotion': {'type': 'string', 'enum': ['auto', 'manual'], 'default': 'auto'},
                'port': {'x-kubernetes-int-or-string': True, 'pattern': '^[a-z]+$'},
                'note': {'type': 'string', 'nullable': True},
                'title': {'type': 'string'},
                'extra': {'type': 'object', 'x-kubernetes-preserve-unknown-fields': True},
            },
        },
        'status': {'type': 'object', 'x-kubernetes-preserve-unknown-fields': True},
    },
}

WIDGET_CRD: dict[str, Any] = {
    'apiVersion': 'apiextensions.k8s.io/v1',
    'kind': 'CustomResourceDefinition',
    'metadata': {'name': f'{PLURAL}.{GROUP}'},
    'spec': {
        'group': GROUP,
        'scope': 'Namespaced',
        'names': {'plural': PLURAL, 'singular': 'widget', 'kind': KIND, 'shortNames': ['wd']},
        'versions': [{
            'name': VERSION, 'served': True, 'storage': True,
            'subresources': {'status': {}},
            'schema': {'openAPIV3Schema': WIDGET_SCHEMA},
        }],
    },
}


# ---------------------------------------------------------------------------
# Fixtures.

@pytest.fixture
def server() -> Iterator[ClusterServer]:
    with ClusterServer() as server:
        yield server


@pytest.fixture
def emulator(server: ClusterServer) -> ClusterEmulator:
    return server.emulator


@pytest.fixture
def api(server: ClusterServer, tmp_path: Any) -> Iterator[kubernetes.client.ApiClient]:
    kubeconfig = server.write_kubeconfig(tmp_path / 'kubeconfig')
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield client
    client.close()


@pytest.fixture
def core(api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


@pytest.fixture
def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


@pytest.fixture
def crd(api: kubernetes.client.ApiClient) -> dict[str, Any]:
    extensions = kubernetes.client.ApiextensionsV1Api(api)
    created = extensions.create_custom_resource_definition(WIDGET_CRD)
    return api.sanitize_for_serialization(created)


def widget(name: str = 'w1', **spec: Any) -> dict[str, Any]:
    return {'apiVersion': f'{GROUP}/{VERSION}', 'kind': KIND, 'metadata': {'name': name},
            'spec': {'source': {'repo': 'panda/app'}, **spec}}


def create(custom: kubernetes.client.CustomObjectsApi, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body, **kwargs)


def get(custom: kubernetes.client.CustomObjectsApi, name: str = 'w1') -> dict[str, Any]:
    return custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)


def merge_patch(custom: kubernetes.client.CustomObjectsApi, patch: dict[str, Any], name: str = 'w1',
                *, status: bool = False) -> dict[str, Any]:
    fn = custom.patch_namespaced_custom_object_status if status else custom.patch_namespaced_custom_object
    return fn(GROUP, VERSION, NS, PLURAL, name, patch, _content_type='application/merge-patch+json')


def refused(call: Callable[[], Any]) -> ApiException:
    with pytest.raises(ApiException) as info:
        call()
    return info.value


def causes(error: ApiException) -> list[dict[str, str]]:
    return json.loads(error.body)['details']['causes']


def status_body(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)


# ---------------------------------------------------------------------------
# Object metadata: uid, timestamps, generation, resourceVersion.

def test_create_sets_uid_creation_timestamp_generation_and_resource_version(custom, crd):
    obj = create(custom, widget())
    meta = obj['metadata']
    assert len(meta['uid']) == 36
    assert meta['creationTimestamp'].endswith('Z') and len(meta['creationTimestamp']) == 20
    assert meta['generation'] == 1
    assert int(meta['resourceVersion']) > 0
    assert meta['namespace'] == NS


def test_generation_bumps_on_spec_change_only(custom, crd):
    create(custom, widget())
    assert merge_patch(custom, {'metadata': {'labels': {'a': 'b'}}})['metadata']['generation'] == 1
    assert merge_patch(custom, {'status': {'phase': 'x'}}, status=True)['metadata']['generation'] == 1
    assert merge_patch(custom, {'spec': {'replicas': 3}})['metadata']['generation'] == 2
    assert merge_patch(custom, {'spec': {'replicas': 3}})['metadata']['generation'] == 2  # no change, no bump
    assert merge_patch(custom, {'spec': {'replicas': 4}})['metadata']['generation'] == 3


def test_resource_version_increases_on_every_write_and_lists_carry_it(custom, core, crd):
    first = int(create(custom, widget())['metadata']['resourceVersion'])
    core.create_namespaced_config_map(NS, {'metadata': {'name': 'cm'}, 'data': {'a': 'b'}})
    second = int(merge_patch(custom, {'metadata': {'labels': {'a': 'b'}}})['metadata']['resourceVersion'])
    third = int(merge_patch(custom, {'status': {'phase': 'x'}}, status=True)['metadata']['resourceVersion'])
    assert first < second < third
    listing = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
    assert int(listing['metadata']['resourceVersion']) == third
    unchanged = merge_patch(custom, {'metadata': {'labels': {'a': 'b'}}})  # a no-op write
    assert int(unchanged['metadata']['resourceVersion']) == third


# ---------------------------------------------------------------------------
# Writes: patch types, PUT, conflicts, not-found.

def test_merge_patch_null_deletes_a_key(custom, crd):
    create(custom, widget(title='hello', extra={'keep': 1, 'drop': 2}))
    patched = merge_patch(custom, {'spec': {'title': None, 'extra': {'drop': None}}})
    assert 'title' not in patched['spec']
    assert patched['spec']['extra'] == {'keep': 1}


def test_json_patch_applies_operations_and_a_failed_test_is_422(custom, crd):
    obj = create(custom, widget(replicas=2))
    rv = obj['metadata']['resourceVersion']
    patched = custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'w1', [
        {'op': 'test', 'path': '/metadata/resourceVersion', 'value': rv},
        {'op': 'replace', 'path': '/spec/replicas', 'value': 5},
        {'op': 'add', 'path': '/metadata/finalizers', 'value': ['test/x']},
    ], _content_type='application/json-patch+json')
    assert patched['spec']['replicas'] == 5
    assert patched['metadata']['finalizers'] == ['test/x']
    error = refused(lambda: custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'w1', [
        {'op': 'test', 'path': '/metadata/resourceVersion', 'value': rv},  # stale now
        {'op': 'replace', 'path': '/spec/replicas', 'value': 6},
    ], _content_type='application/json-patch+json'))
    assert error.status == 422


def test_status_subresource_changes_only_status(custom, crd):
    create(custom, widget(replicas=2))
    patched = merge_patch(custom, {'spec': {'replicas': 9}, 'metadata': {'labels': {'x': 'y'}},
                                   'status': {'phase': 'Ready'}}, status=True)
    assert patched['status'] == {'phase': 'Ready'}
    assert patched['spec']['replicas'] == 2
    assert 'labels' not in patched['metadata']


def test_main_resource_writes_preserve_status(custom, crd):
    create(custom, {**widget(), 'status': {'phase': 'ignored-on-create'}})
    assert 'status' not in get(custom)
    merge_patch(custom, {'status': {'phase': 'Ready'}}, status=True)
    patched = merge_patch(custom, {'spec': {'replicas': 3}, 'status': {'phase': 'Hacked'}})
    assert patched['status'] == {'phase': 'Ready'}
    current = get(custom)
    current['status'] = {'phase': 'Hacked'}
    replaced = custom.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'w1', current)
    assert replaced['status'] == {'phase': 'Ready'}


def test_status_is_404_for_resources_without_the_subresource(server, api, core):
    core.create_namespaced_config_map(NS, {'metadata': {'name': 'cm'}})
    for method in ('GET', 'PATCH'):
        error = refused(lambda method=method: api.rest_client.request(
            method, f'{server.url}/api/v1/namespaces/default/configmaps/cm/status',
            headers={'Content-Type': 'application/merge-patch+json'}, body={'status': {}} if method == 'PATCH' else None))
        assert error.status == 404


def test_put_with_stale_resource_version_is_a_409_conflict(custom, crd):
    stale = create(custom, widget())
    merge_patch(custom, {'spec': {'replicas': 3}})
    stale['spec']['replicas'] = 7
    error = refused(lambda: custom.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'w1', stale))
    assert error.status == 409
    assert status_body(error)['reason'] == 'Conflict'
    # The same through a merge patch carrying the stale resourceVersion.
    error = refused(lambda: merge_patch(custom, {'metadata': {'resourceVersion': stale['metadata']['resourceVersion']},
                                                 'spec': {'replicas': 8}}))
    assert error.status == 409


def test_creating_an_existing_object_is_a_409_already_exists(core):
    core.create_namespaced_secret(NS, {'metadata': {'name': 's'}, 'stringData': {'token': 'x'}})
    error = refused(lambda: core.create_namespaced_secret(NS, {'metadata': {'name': 's'}}))
    assert error.status == 409
    assert status_body(error)['reason'] == 'AlreadyExists'
    assert status_body(error)['message'] == 'secrets "s" already exists'


def test_a_missing_object_is_a_404_not_found(core, custom, crd):
    error = refused(lambda: core.read_namespaced_secret('nope', NS))
    assert error.status == 404
    assert status_body(error)['reason'] == 'NotFound'
    assert status_body(error)['message'] == 'secrets "nope" not found'
    assert refused(lambda: get(custom, 'nope')).status == 404
    assert refused(lambda: merge_patch(custom, {'spec': {}}, 'nope')).status == 404
    assert refused(lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'nope')).status == 404


def test_secret_string_data_is_stored_as_base64_data(core):
    core.create_namespaced_secret(NS, {'metadata': {'name': 's'}, 'stringData': {'token': 'abc'}})
    secret = core.read_namespaced_secret('s', NS)
    assert secret.data == {'token': 'YWJj'}
    assert secret.string_data is None


# ---------------------------------------------------------------------------
# Deletion.

def test_finalizers_hold_deletion_until_they_are_removed(custom, crd, emulator):
    created = create(custom, {**widget(), 'metadata': {'name': 'w1', 'finalizers': ['test/hold']}})
    deleting = custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'w1')
    assert deleting['metadata']['deletionTimestamp']
    held = get(custom)
    assert held['metadata']['uid'] == created['metadata']['uid']
    assert int(held['metadata']['resourceVersion']) > int(created['metadata']['resourceVersion'])
    error = refused(lambda: merge_patch(custom, {'metadata': {'finalizers': ['test/hold', 'test/new']}}))
    assert error.status == 422  # no new finalizers on a deleting object
    released = merge_patch(custom, {'metadata': {'finalizers': None}})
    assert released['metadata']['uid'] == created['metadata']['uid']
    assert refused(lambda: get(custom)).status == 404
    assert emulator.get(PLURAL, NS, 'w1') is None


def test_delete_without_finalizers_removes_at_once_and_returns_the_object(custom, crd):
    create(custom, widget())
    deleted = custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'w1')
    assert deleted['metadata']['name'] == 'w1'
    assert refused(lambda: get(custom)).status == 404
    create(custom, widget())  # the name is free again


# ---------------------------------------------------------------------------
# CRDs: registration, discovery, schema.

def test_a_crd_registers_its_resource_for_discovery(api, crd):
    groups = kubernetes.client.ApisApi(api).get_api_versions()
    group = next(g for g in groups.groups if g.name == GROUP)
    assert group.preferred_version.version == VERSION
    resources = kubernetes.client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION)
    by_name = {r.name: r for r in resources.resources}
    assert by_name[PLURAL].kind == KIND
    assert by_name[PLURAL].namespaced is True
    assert by_name[PLURAL].short_names == ['wd']
    assert by_name[PLURAL].singular_name == 'widget'
    assert 'watch' in by_name[PLURAL].verbs
    assert f'{PLURAL}/status' in by_name
    assert crd['status']['acceptedNames']['kind'] == KIND
    assert {c['type']: c['status'] for c in crd['status']['conditions']}['Established'] == 'True'


def test_deleting_a_crd_unregisters_its_resource(api, custom, crd):
    create(custom, widget())
    kubernetes.client.ApiextensionsV1Api(api).delete_custom_resource_definition(f'{PLURAL}.{GROUP}')
    assert refused(lambda: custom.get_api_resources(GROUP, VERSION)).status == 404
    assert refused(lambda: custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)).status == 404


def test_a_non_structural_crd_is_refused(api):
    bad = {**WIDGET_CRD, 'metadata': {'name': f'gadgets.{GROUP}'}, 'spec': {
        **WIDGET_CRD['spec'], 'names': {'plural': 'gadgets', 'kind': 'Gadget'},
        'versions': [{'name': 'v1', 'served': True, 'storage': True, 'schema': {'openAPIV3Schema': {
            'type': 'object', 'properties': {'spec': {'properties': {'x': {'type': 'string'}}}}}}}]}}
    error = refused(lambda: kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(bad))
    assert error.status == 422
    assert causes(error)[0]['field'] == 'spec.versions[0].schema.openAPIV3Schema.properties[spec].type'


def test_a_pattern_violation_is_422_with_the_field_path(custom, crd):
    error = refused(lambda: create(custom, widget(source={'repo': 'not a repo'})))
    assert error.status == 422
    body = status_body(error)
    assert body['reason'] == 'Invalid'
    assert body['details']['kind'] == KIND and body['details']['group'] == GROUP
    assert causes(error) == [{
        'reason': 'FieldValueInvalid', 'field': 'spec.source.repo',
        'message': 'Invalid value: "not a repo": spec.source.repo in body should match'
                   " '^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$'",
    }]
    assert body['message'] == (
        'Widget.test.panda.dev "w1" is invalid: spec.source.repo: Invalid value: "not a repo":'
        " spec.source.repo in body should match '^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$'")


def test_a_missing_required_field_is_422(custom, crd):
    body = widget()
    del body['spec']['source']
    error = refused(lambda: create(custom, body))
    assert error.status == 422
    assert causes(error) == [{'reason': 'FieldValueRequired', 'field': 'spec.source', 'message': 'Required value'}]


def test_a_wrong_type_is_422_and_several_causes_are_joined(custom, crd):
    error = refused(lambda: create(custom, widget(replicas='three', promotion='never')))
    assert error.status == 422
    assert {(c['field'], c['reason']) for c in causes(error)} == {
        ('spec.replicas', 'FieldValueTypeInvalid'), ('spec.promotion', 'FieldValueNotSupported')}
    message = status_body(error)['message']
    assert 'is invalid: [' in message
    assert 'spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"' in message
    assert 'spec.promotion: Unsupported value: "never": supported values: "auto", "manual"' in message


def test_updates_and_patches_are_validated_too(custom, crd):
    create(custom, widget())
    error = refused(lambda: merge_patch(custom, {'spec': {'replicas': -1}}))
    assert error.status == 422
    assert causes(error)[0]['field'] == 'spec.replicas'
    assert get(custom)['spec']['replicas'] == 1


def test_unknown_fields_are_refused_with_strict_field_validation(custom, crd):
    error = refused(lambda: create(custom, widget(foo='bar'), field_validation='Strict'))
    assert error.status == 422
    assert causes(error) == [{'reason': 'FieldValueInvalid', 'field': 'spec.foo',
                              'message': '.spec.foo: field not declared in schema'}]


def test_unknown_fields_are_pruned_without_strict_field_validation(custom, crd):
    obj = create(custom, widget(foo='bar', extra={'anything': {'goes': True}}))
    assert 'foo' not in obj['spec']
    assert obj['spec']['extra'] == {'anything': {'goes': True}}  # x-kubernetes-preserve-unknown-fields
    assert 'foo' not in get(custom)['spec']


def test_nullable_fields_keep_null_and_other_nulls_are_dropped(custom, crd):
    obj = create(custom, widget(note=None, title=None))
    assert obj['spec']['note'] is None
    assert 'title' not in obj['spec']


def test_int_or_string_accepts_both_and_the_pattern_applies_to_strings_only(custom, crd):
    assert create(custom, widget('a', port=8080))['spec']['port'] == 8080
    assert create(custom, widget('b', port='http'))['spec']['port'] == 'http'
    error = refused(lambda: create(custom, widget('c', port='HTTP')))
    assert causes(error)[0]['field'] == 'spec.port'
    error = refused(lambda: create(custom, widget('d', port=True)))
    assert causes(error)[0]['reason'] == 'FieldValueTypeInvalid'


def test_cel_exactly_one_of_two_fields(custom, crd):
    for source in ({}, {'repo': 'a/b', 'url': 'file:///x'}):
        error = refused(lambda source=source: create(custom, widget(source=source)))
        assert causes(error) == [{'reason': 'FieldValueInvalid', 'field': 'spec.source',
                                  'message': 'Invalid value: "object": exactly one of url or repo must be set'}]
    create(custom, widget(source={'url': 'file:///x'}))


def test_cel_at_most_one_of_two_fields(custom, crd):
    error = refused(lambda: create(custom, widget(source={'repo': 'a/b', 'branch': 'main', 'revision': 'abc'})))
    assert causes(error) == [{'reason': 'FieldValueInvalid', 'field': 'spec.source',
                              'message': 'Invalid value: "object": branch and revision are mutually exclusive'}]
    create(custom, widget('ok', source={'repo': 'a/b', 'branch': 'main'}))


def test_schema_defaults_are_applied(custom, crd):
    obj = create(custom, widget())
    assert obj['spec']['replicas'] == 1
    assert obj['spec']['promotion'] == 'auto'
    replaced = custom.replace_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'w1', widget())
    assert replaced['spec']['replicas'] == 1


def test_validate_is_a_pure_function_with_the_servers_wording():
    errors = schemas.validate(WIDGET_SCHEMA, {'spec': {'source': {'repo': 'x'}, 'replicas': 'no'}})
    assert errors == [
        schemas.FieldError(field='spec.source.repo', reason='FieldValueInvalid',
                           message='Invalid value: "x": spec.source.repo in body should match'
                                   " '^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$'"),
        schemas.FieldError(field='spec.replicas', reason='FieldValueTypeInvalid',
                           message='Invalid value: "string": spec.replicas in body must be of type integer: "string"'),
    ]
    assert str(errors[1]).startswith('spec.replicas: Invalid value: "string"')
    pruned, unknown = schemas.prune(WIDGET_SCHEMA, {'metadata': {'x': 1}, 'spec': {'zzz': 1}}, strict=True)
    assert pruned == {'metadata': {'x': 1}, 'spec': {}}
    assert [e.field for e in unknown] == ['spec.zzz']
    assert schemas.apply_defaults(WIDGET_SCHEMA, {'spec': {}})['spec'] == {'replicas': 1, 'promotion': 'auto'}


# ---------------------------------------------------------------------------
# Built-in resources, selectors, watches.

def test_builtin_resources_are_served_and_namespaced_ones_listed_across_namespaces(api, core):
    core.create_namespace({'metadata': {'name': 'other'}})
    core.create_namespaced_config_map('other', {'metadata': {'name': 'c1'}})
    core.create_namespaced_config_map(NS, {'metadata': {'name': 'c2'}})
    names = sorted(cm.metadata.name for cm in core.list_config_map_for_all_namespaces().items)
    assert names == ['c1', 'c2']
    leases = kubernetes.client.CoordinationV1Api(api)
    leases.create_namespaced_lease(NS, {'metadata': {'name': 'leader'}, 'spec': {'holderIdentity': 'me'}})
    assert leases.read_namespaced_lease('leader', NS).spec.holder_identity == 'me'
    assert core.read_namespace('other').status.phase == 'Active'
    core.delete_namespace('other')
    assert refused(lambda: core.read_namespace('other')).status == 404
    assert [cm.metadata.name for cm in core.list_config_map_for_all_namespaces().items] == ['c2']


def test_events_are_listed_by_involved_object_field_selector(core):
    for name, kind in [('w1', 'Widget'), ('w2', 'Widget'), ('w1', 'Gadget')]:
        core.create_namespaced_event(NS, {
            'metadata': {'generateName': 'ev-'}, 'reason': 'Tested', 'message': f'{kind} {name}', 'type': 'Normal',
            'involvedObject': {'apiVersion': f'{GROUP}/{VERSION}', 'kind': kind, 'name': name, 'namespace': NS},
        })
    events = core.list_namespaced_event(NS, field_selector='involvedObject.name=w1').items
    assert sorted(e.message for e in events) == ['Gadget w1', 'Widget w1']
    events = core.list_namespaced_event(NS, field_selector='involvedObject.name=w1,involvedObject.kind=Widget').items
    assert [e.message for e in events] == ['Widget w1']
    events = core.list_event_for_all_namespaces(field_selector='involvedObject.kind!=Widget').items
    assert [e.message for e in events] == ['Gadget w1']


def test_label_selectors_filter_lists(core):
    for name, labels in [('a', {'app': 'x', 'tier': 'web'}), ('b', {'app': 'x'}), ('c', {'app': 'y'})]:
        core.create_namespaced_config_map(NS, {'metadata': {'name': name, 'labels': labels}})

    def names(selector: str) -> list[str]:
        return [cm.metadata.name for cm in core.list_namespaced_config_map(NS, label_selector=selector).items]
    assert names('app=x') == ['a', 'b']
    assert names('app=x,tier') == ['a']
    assert names('app=x,!tier') == ['b']
    assert names('app!=x') == ['c']
    assert names('app in (x, y),tier notin (web)') == ['b', 'c']


def test_watch_from_a_resource_version_sends_only_newer_events(custom, crd):
    create(custom, widget('old'))
    since = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)['metadata']['resourceVersion']
    create(custom, widget('new'))
    merge_patch(custom, {'spec': {'replicas': 2}}, 'old')
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'new')
    watch = kubernetes.watch.Watch()
    events = [(e['type'], e['object']['metadata']['name'], e['object']['metadata']['resourceVersion'])
              for e in watch.stream(custom.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL,
                                    resource_version=since, timeout_seconds=1)]
    assert [(t, n) for t, n, _ in events] == [('ADDED', 'new'), ('MODIFIED', 'old'), ('DELETED', 'new')]
    assert [int(rv) for _, _, rv in events] == sorted(int(rv) for _, _, rv in events)
    assert all(int(rv) > int(since) for _, _, rv in events)


def test_watch_without_resource_version_sends_current_objects_then_live_events(custom, crd):
    create(custom, widget('a'))

    def later() -> None:
        time.sleep(0.3)
        create(custom, widget('b', replicas=2))
    threading.Thread(target=later).start()
    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(custom.list_namespaced_custom_object, GROUP, VERSION, NS, PLURAL,
                              label_selector='!skip', timeout_seconds=2):
        seen.append((event['type'], event['object']['metadata']['name']))
        if len(seen) == 2:
            watch.stop()
    assert seen == [('ADDED', 'a'), ('ADDED', 'b')]


def test_watch_with_a_field_selector_sees_objects_enter_and_leave(core):
    core.create_namespaced_config_map(NS, {'metadata': {'name': 'x', 'labels': {'on': 'no'}}})
    since = core.list_namespaced_config_map(NS).metadata.resource_version
    core.patch_namespaced_config_map('x', NS, {'metadata': {'labels': {'on': 'yes'}}})
    core.patch_namespaced_config_map('x', NS, {'metadata': {'labels': {'on': 'no'}}})
    core.create_namespaced_config_map(NS, {'metadata': {'name': 'y'}})
    watch = kubernetes.watch.Watch()
    events = [(e['type'], e['object'].metadata.name) for e in watch.stream(
        core.list_namespaced_config_map, NS, label_selector='on=yes', field_selector='metadata.name=x',
        resource_version=since, timeout_seconds=1)]
    assert events == [('ADDED', 'x'), ('DELETED', 'x')]


def test_watch_from_a_resource_version_older_than_the_log_is_410_gone(tmp_path):
    with ClusterServer(emulator=ClusterEmulator(event_log_size=3)) as server:
        client = kubernetes.config.new_client_from_config(config_file=str(server.write_kubeconfig(tmp_path / 'kc')))
        core = kubernetes.client.CoreV1Api(client)
        since = core.list_namespaced_config_map(NS).metadata.resource_version
        for index in range(5):
            core.create_namespaced_config_map(NS, {'metadata': {'name': f'c{index}'}})
        watch = kubernetes.watch.Watch()
        with pytest.raises(ApiException) as info:
            list(watch.stream(core.list_namespaced_config_map, NS, resource_version=since, timeout_seconds=1))
        assert info.value.status == 410
        client.close()


# ---------------------------------------------------------------------------
# Test and sandbox plumbing.

def test_writes_are_logged_in_order(emulator, custom, crd):
    emulator.writes.clear()
    create(custom, widget())
    merge_patch(custom, {'status': {'phase': 'x'}}, status=True)
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'w1')
    assert emulator.writes == [
        Write('POST', PLURAL, NS, 'w1', None),
        Write('PATCH', PLURAL, NS, 'w1', 'status'),
        Write('DELETE', PLURAL, NS, 'w1', None),
    ]


def test_objects_can_be_read_from_another_thread(emulator, core):
    core.create_namespaced_secret(NS, {'metadata': {'name': 's'}, 'data': {'k': 'dg=='}})
    assert emulator.get('secrets', NS, 's')['data'] == {'k': 'dg=='}
    assert emulator.get('secrets', NS, 'nope') is None
    assert emulator.objects['v1/secrets', NS, 's'] >= {'data': {'k': 'dg=='}}  # kmock's view still works


def test_add_crd_from_python_is_visible_over_http(emulator, custom):
    emulator.add_crd(WIDGET_CRD)
    emulator.add_crd(WIDGET_CRD)  # idempotent
    emulator.create(widget())
    assert get(custom)['spec']['replicas'] == 1


def test_faults_can_be_injected_with_kmocks_dsl(emulator, core):
    core.create_namespaced_config_map(NS, {'metadata': {'name': 'c'}})
    emulator[f'get /api/v1/namespaces/{NS}/configmaps/c'][:1] << 503  # once
    assert refused(lambda: core.read_namespaced_config_map('c', NS)).status == 503
    assert core.read_namespaced_config_map('c', NS).metadata.name == 'c'


def test_the_command_line_serves_until_terminated(tmp_path):
    kubeconfig = tmp_path / 'kc'
    process = subprocess.Popen([sys.executable, '-m', 'controller.sandbox.kube', '--port', '0',
                                '--kubeconfig', str(kubeconfig)], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline().strip()
        assert line.startswith('listening on http://127.0.0.1:')
        client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        assert kubernetes.client.CoreV1Api(client).read_namespace('default').metadata.name == 'default'
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_the_kubeconfig_names_the_sandbox_context(server, tmp_path):
    config = yaml.safe_load(server.write_kubeconfig(tmp_path / 'kc').read_text())
    assert config['current-context'] == 'panda-sandbox'
    assert config['clusters'][0]['cluster']['server'] == f'http://127.0.0.1:{server.port}' == server.url


async def test_the_server_runs_inside_a_running_event_loop():
    async with ClusterServer() as server:
        async with aiohttp.ClientSession() as session:
            async with session.get(f'{server.url}/api/v1/namespaces/default') as response:
                assert response.status == 200
                assert (await response.json())['metadata']['name'] == 'default'


OPERATOR = '''
import kopf

@kopf.on.startup()
def configure(settings, **_):
    settings.watching.server_timeout = 5

@kopf.on.create('test.panda.dev', 'v1', 'widgets')
def created(body, spec, patch, **_):
    patch.status['phase'] = 'Seen'
    patch.status['replicas'] = spec['replicas']
    kopf.info(body, reason='Seen', message='The widget is seen.')

@kopf.on.delete('test.panda.dev', 'v1', 'widgets')
def deleted(body, **_):
    kopf.info(body, reason='Gone', message='The widget is gone.')
'''


def wait_for(condition: Callable[[], Any], *, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def reasons(emulator: ClusterEmulator, name: str) -> list[str]:
    return [e['reason'] for e in emulator.list_objects('events', NS) if e['involvedObject']['name'] == name]


def test_a_kopf_operator_works_against_the_emulator(server, custom, crd, tmp_path, monkeypatch):
    operator = tmp_path / 'operator.py'
    operator.write_text(OPERATOR)
    kubeconfig = str(server.write_kubeconfig(tmp_path / 'kubeconfig'))
    monkeypatch.setenv('KUBECONFIG', kubeconfig)
    # The client library reads $KUBECONFIG once, at import; Kopf logs in through it.
    monkeypatch.setattr(kubernetes.config.kube_config, 'KUBE_CONFIG_DEFAULT_LOCATION', kubeconfig)
    args = ['run', '--standalone', '--namespace', NS, '--verbose', str(operator)]
    emulator = server.emulator
    # A registry of its own: Kopf's default one may already hold the operator's handlers (pytest imports
    # controller.handlers when it collects tests/unit/test_handler_log.py), whose startup sets our finalizer.
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)  # what Kopf's default registry logs in with
    # `kopf run` makes the runner's registry the default one: the one before is put back afterwards.
    monkeypatch.setattr(kopf._core.intents.registries, '_default_registry', kopf.get_default_registry())
    with kopf.testing.KopfRunner(args, timeout=30, registry=registry) as runner:
        create(custom, widget(replicas=3))
        wait_for(lambda: 'Seen' in reasons(emulator, 'w1'))
        obj = get(custom)
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, 'w1')  # held by Kopf's finalizer
        wait_for(lambda: emulator.get(PLURAL, NS, 'w1') is None)
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
    assert obj['status'] == {'phase': 'Seen', 'replicas': 3}, runner.output
    assert obj['metadata']['generation'] == 1  # status patches never bump it
    assert obj['metadata']['finalizers'] == ['kopf.zalando.org/KopfFinalizerMarker']
    assert emulator.get(PLURAL, NS, 'w1') is None
    events = kubernetes.client.CoreV1Api(custom.api_client).list_namespaced_event(
        NS, field_selector='involvedObject.name=w1').items
    assert sorted((e.reason, e.message, e.type) for e in events) == [
        ('Gone', 'The widget is gone.', 'Normal'), ('Seen', 'The widget is seen.', 'Normal')]
