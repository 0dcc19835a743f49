"""Extract the GitHub REST operations the operator calls from a pinned `@octokit/openapi` package.

The package is 28 MB (GitHub's whole REST description for api.github.com,
GHEC and three GHES versions); the tests need two operations of it. So this
script, not the tests, reads the package: it checks the tarball's SHA-256
against the pinned one, takes the dereferenced description of each operation
below from api.github.com and from the newest GHES, and writes them to
`operations.json` beside it, which is committed. A clean clone needs neither
npm nor the registry to run the tests, and anyone can re-derive the file:

    npm pack @octokit/openapi@23.0.2
    python tests/github_openapi/extract.py octokit-openapi-23.0.2.tgz
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import sys
import tarfile

PACKAGE = '@octokit/openapi'
VERSION = '23.0.2'
SHA256 = '71a18407dd5e8464f4e0525daf03deabbe65abd9287d6adc7b5d98f516cd0d0c'
DESCRIPTIONS = {'api.github.com': 'package/generated/api.github.com.deref.json',
                'ghes-3.19': 'package/generated/ghes-3.19.deref.json'}
OPERATIONS = [('post', '/repos/{owner}/{repo}/statuses/{sha}')]  # repos/create-commit-status
OUT = pathlib.Path(__file__).with_name('operations.json')


def extract(tarball: pathlib.Path) -> dict[str, object]:
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != SHA256:
        raise SystemExit(f'{tarball}: sha256 {digest}, not the pinned {SHA256} of {PACKAGE}@{VERSION}')
    found: dict[str, object] = {'package': PACKAGE, 'version': VERSION, 'sha256': SHA256, 'descriptions': {}}
    with tarfile.open(tarball) as archive:
        for name, member in DESCRIPTIONS.items():
            handle = archive.extractfile(member)
            assert handle is not None, member
            description = json.load(handle)
            operations = {}
            for method, path in OPERATIONS:
                operation = description['paths'][path][method]
                operations[operation['operationId']] = {'method': method.upper(), 'path': path,
                                                        'operation': operation}
            found['descriptions'][name] = {  # type: ignore[index]
                'openapi': description['openapi'], 'servers': description['servers'], 'operations': operations}
    return found


if __name__ == '__main__':
    OUT.write_text(json.dumps(extract(pathlib.Path(sys.argv[1])), indent=1, sort_keys=True) + '\n')
    print(f'wrote {OUT}')
