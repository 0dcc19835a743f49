"""Finding the Dockerfile in a checkout: given path, root, shallowest, ties and absence."""
from __future__ import annotations

import pathlib

import pytest

from controller.errors import StageFailed
from controller.pipeline.build import find_dockerfile


def tree(root: pathlib.Path, *files: str) -> pathlib.Path:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('FROM scratch\n')
    return root


def test_the_root_dockerfile_wins(tmp_path):
    root = tree(tmp_path, 'Dockerfile', 'services/api/Dockerfile')
    assert find_dockerfile(root, path=None, context=None) == ('Dockerfile', '.')


def test_otherwise_the_shallowest_one_with_its_directory_as_context(tmp_path):
    root = tree(tmp_path, 'app/Dockerfile', 'app/tools/x/Dockerfile')
    assert find_dockerfile(root, path=None, context=None) == ('app/Dockerfile', 'app')


def test_two_at_the_same_depth_are_an_error_naming_both(tmp_path):
    root = tree(tmp_path, 'api/Dockerfile', 'web/Dockerfile', 'deep/er/Dockerfile')
    with pytest.raises(StageFailed) as info:
        find_dockerfile(root, path=None, context=None)
    assert info.value.reason == 'AmbiguousDockerfile'
    assert 'api/Dockerfile, web/Dockerfile' in info.value.message and 'spec.source.dockerfile' in info.value.message


def test_none_at_all_is_dockerfile_not_found(tmp_path):
    root = tree(tmp_path, 'README')
    (tmp_path / '.git').mkdir()
    (tmp_path / '.git' / 'Dockerfile').write_text('not this one')
    with pytest.raises(StageFailed) as info:
        find_dockerfile(root, path=None, context=None)
    assert (info.value.reason, info.value.message) == ('DockerfileNotFound', 'Dockerfile not found in repository')


def test_a_given_path_and_context_are_used_as_given(tmp_path):
    root = tree(tmp_path, 'api/Dockerfile', 'web/Dockerfile')
    assert find_dockerfile(root, path='web/Dockerfile', context='.') == ('web/Dockerfile', '.')
    with pytest.raises(StageFailed) as info:
        find_dockerfile(root, path='nope/Dockerfile', context=None)
    assert info.value.reason == 'DockerfileNotFound' and "'nope/Dockerfile'" in info.value.message
