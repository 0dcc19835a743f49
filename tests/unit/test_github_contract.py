"""The GitHub contract the stand-in applies refuses what GitHub's description does not allow."""
from __future__ import annotations

import json

import pytest

from tests.github_contract import ContractError, GitHubContract
from tests.github_openapi import extract

PATH = '/repos/o/r/statuses/' + 'a' * 40
JSON = {'Content-Type': 'application/json'}


def test_the_vendored_operations_come_from_the_pinned_package():
    found = json.loads(extract.OUT.read_text())
    assert (found['package'], found['version'], found['sha256']) == (extract.PACKAGE, extract.VERSION, extract.SHA256)
    assert set(found['descriptions']) == set(extract.DESCRIPTIONS)


def test_a_commit_status_github_accepts_passes():
    matched = GitHubContract().check_request('POST', PATH, JSON, b'{"state": "pending", "context": "c"}')
    assert matched.operation_id == 'repos/create-commit-status' and matched.params['sha'] == 'a' * 40


@pytest.mark.parametrize('method, target, headers, body, error', [
    ('POST', PATH, JSON, b'{"state": "deploying"}', "'deploying' is not one of"),
    ('POST', PATH, JSON, b'{"context": "c"}', "'state' is a required property"),
    ('POST', PATH, JSON, b'{"state": "success", "targetUrl": "x"}', 'Additional properties are not allowed'),
    ('POST', PATH, {'Content-Type': 'text/plain'}, b'{"state": "success"}', "Content-Type 'text/plain'"),
    ('POST', PATH + '?force=1', JSON, b'{"state": "success"}', "undeclared query parameter 'force'"),
    ('PUT', PATH, JSON, b'{"state": "success"}', 'no operation'),
    ('POST', '/repos/o/statuses/' + 'a' * 40, JSON, b'{"state": "success"}', 'no operation'),
])
def test_what_github_would_not_take_is_refused(method, target, headers, body, error):
    with pytest.raises(ContractError, match=error):
        GitHubContract().check_request(method, target, headers, body)


def test_an_answer_outside_the_description_is_refused():
    contract = GitHubContract()
    matched = contract.match('POST', PATH)
    with pytest.raises(ContractError, match='HTTP 200 is not a declared response'):
        contract.check_answer(matched, 200, b'{}')
    with pytest.raises(ContractError, match="'creator' is a required property"):
        contract.check_answer(matched, 201, json.dumps({'url': 'u', 'avatar_url': None, 'id': 1, 'node_id': 'n',
                                                        'state': 's', 'description': None, 'target_url': None,
                                                        'context': 'c', 'created_at': 't',
                                                        'updated_at': 't'}).encode())
