"""Finding the Dockerfile in a checkout: given path, root, shallowest, ties and absence; outside the context;
read through a symlink, or a link in the context leading out of the clone."""
from __future__ import annotations

import pathlib

import pytest

from controller.errors import StageFailed
from controller.pipeline.build import find_dockerfile
from controller.pipeline.checkout_paths import check_context_links


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


def test_a_dockerfile_outside_the_context_has_its_own_reason(tmp_path):
    root = tree(tmp_path, 'Dockerfile', 'app/index.html')
    with pytest.raises(StageFailed) as info:
        find_dockerfile(root, path='Dockerfile', context='app')
    assert info.value.reason == 'DockerfileOutsideContext'
    assert "'Dockerfile' is outside the build context 'app'" in info.value.message
    # The same directory spelled another way is inside.
    tree(tmp_path, 'app/Dockerfile')
    assert find_dockerfile(root, path='app/Dockerfile', context='./app/') == ('app/Dockerfile', './app/')


# -- symlinks: nothing is read through one, no link in the context leads out of the clone ------------

def test_a_dockerfile_that_is_a_symlink_is_refused_given_or_discovered(tmp_path):
    root = tree(tmp_path, 'real.Dockerfile')
    (root / 'Dockerfile').symlink_to('/etc/hostname')
    for given in ('Dockerfile', None):
        with pytest.raises(StageFailed) as info:
            find_dockerfile(root, path=given, context=None)
        assert info.value.reason == 'SymlinkNotAllowed'
        assert "'Dockerfile' is a symlink to /etc/hostname" in info.value.message


def test_a_dockerfile_under_a_linked_directory_is_refused(tmp_path):
    outside = tree(tmp_path / 'outside', 'Dockerfile')
    root = tree(tmp_path / 'clone', 'README')
    (root / 'app').symlink_to(outside)
    with pytest.raises(StageFailed) as info:
        find_dockerfile(root, path='app/Dockerfile', context=None)
    assert info.value.reason == 'SymlinkNotAllowed' and f"'app' is a symlink to {outside}" in info.value.message
    with pytest.raises(StageFailed) as info:  # discovery does not enter a linked directory
        find_dockerfile(root, path=None, context=None)
    assert info.value.reason == 'DockerfileNotFound'


def test_a_context_that_is_a_symlink_is_refused_even_inside_the_clone(tmp_path):
    root = tree(tmp_path, 'Dockerfile', 'real/index.html')
    (root / 'ctx').symlink_to('real')
    with pytest.raises(StageFailed) as info:
        find_dockerfile(root, path='Dockerfile', context='ctx')
    assert info.value.reason == 'SymlinkNotAllowed' and "'ctx' is a symlink to real" in info.value.message


def test_links_in_the_context_may_point_anywhere_in_the_clone(tmp_path):
    root = tree(tmp_path / 'clone', 'app/Dockerfile', 'app/real.txt', 'lib/shared.txt')
    (root / 'app' / 'alias.txt').symlink_to('real.txt')
    (root / 'app' / 'shared').symlink_to('../lib')
    (root / 'app' / 'dangling').symlink_to('missing.txt')
    check_context_links(root, 'app')


@pytest.mark.parametrize(('link', 'target'), [
    ('up', '..'), ('app/up', '../..'), ('app/token', '/var/run/secrets/kubernetes.io/serviceaccount/token'),
    ('app/zero', '/dev/zero'),
])
def test_a_link_in_the_context_resolving_out_of_the_clone_is_refused(tmp_path, link, target):
    root = tree(tmp_path / 'clone', 'Dockerfile', 'app/x')
    (root / link).symlink_to(target)
    with pytest.raises(StageFailed) as info:
        check_context_links(root, '.')
    assert info.value.reason == 'SymlinkNotAllowed'
    assert f"'{link}' is a symlink to {target} in the build context '.', which resolves outside the repository" \
        in info.value.message


def test_a_dockerignore_that_is_a_symlink_is_refused_wherever_it_points(tmp_path):
    root = tree(tmp_path, 'Dockerfile', 'ignore-list')
    (root / '.dockerignore').symlink_to('ignore-list')
    with pytest.raises(StageFailed) as info:
        check_context_links(root, '.')
    assert info.value.reason == 'SymlinkNotAllowed'
    assert ".dockerignore of the build context '.': '.dockerignore' is a symlink to ignore-list" in info.value.message
