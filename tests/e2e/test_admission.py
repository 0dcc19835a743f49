"""Bad manifests are refused by the API server through the CRD schema, naming the field at fault."""
from __future__ import annotations

import json
import pathlib
import re

import kubernetes
import pytest
import yaml

from tests.e2e.conftest import GROUP, PLURAL, ROOT, VERSION, Cluster

BAD = sorted((ROOT / 'examples' / 'bad').glob('*.yaml'))


def expectation(path: pathlib.Path) -> tuple[str, bool]:
    text = path.read_text()
    field = re.search(r'^# expect: (\S+)', text, re.M).group(1)
    return field, '# fieldValidation: Strict' in text


@pytest.mark.parametrize('path', BAD, ids=[p.stem for p in BAD])
def test_a_bad_manifest_is_refused_with_the_field_path(cluster: Cluster, path: pathlib.Path):
    field, strict = expectation(path)
    body = yaml.safe_load(path.read_text())
    kwargs = {'field_validation': 'Strict'} if strict else {}
    with pytest.raises(kubernetes.client.ApiException) as info:
        cluster.custom.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, body, **kwargs)
    assert info.value.status == 422
    status = json.loads(info.value.body)
    assert status['reason'] == 'Invalid'
    assert field in [cause['field'].lstrip('.') for cause in status['details']['causes']]
    assert field in status['message']
    assert cluster.get(body['metadata']['name']) is None, 'nothing was stored'


def test_the_sample_manifest_is_accepted_and_stored_as_written(cluster: Cluster):
    """The schema has no defaults (README, "Defaults and limits"): etcd holds what was written, at every level."""
    body = yaml.safe_load((ROOT / 'examples' / 'pandadeploy.yaml').read_text())
    created = cluster.custom.create_namespaced_custom_object(GROUP, VERSION, 'default', PLURAL, body)
    assert created['metadata']['generation'] == 1
    assert created['spec'] == body['spec']
