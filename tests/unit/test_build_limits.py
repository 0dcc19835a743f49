"""What a stranger's repository may cost: the build context as the engine gets it (.dockerignore meaning what
it means to docker-py, no link followed, its size bounded), the checkout (counted from git's tree), and the
build's output (read in bounded lines)."""
from __future__ import annotations

import io
import os
import pathlib
import tarfile

import pytest
from docker.utils.build import exclude_paths

from controller.adapters.build_context import ContextTooLarge, pack_context
from controller.adapters.build_output import LINE_LIMIT, BuildOutput, Lines
from controller.adapters.git import tree_bytes
from controller.errors import StageFailed

FILES = ('Dockerfile', 'app.py', 'debug.log', 'keep.log', 'build/out.bin', 'docs/a.md', 'docs/deep/b.md',
         'docs/deep/c.txt', 'node_modules/x/index.js', 'src/main.py', 'src/test_main.py', '.git/HEAD')
PATTERNS = ('# a comment', '', '*.log', '!keep.log', 'build', 'docs/**/*.md', 'node_modules', '.git',
            '**/test_*.py', 'Dockerfile')


def context(root: pathlib.Path, files: tuple[str, ...] = FILES, ignore: tuple[str, ...] = PATTERNS) -> pathlib.Path:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    (root / '.dockerignore').write_text('\n'.join(ignore) + '\n')
    return root


def packed(root: pathlib.Path, *, dockerfile: str = 'Dockerfile',
           max_bytes: int = 10 ** 9) -> dict[str, tarfile.TarInfo]:
    buffer = io.BytesIO()
    size = pack_context(root, dockerfile=dockerfile, max_bytes=max_bytes, into=buffer)
    assert size <= len(buffer.getvalue())  # the count is the tar's size (tarfile pads the last record)
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        return {member.name: member for member in tar.getmembers()}


def test_the_same_paths_as_docker_py_sends(tmp_path: pathlib.Path) -> None:
    root = context(tmp_path)
    patterns = [p for p in PATTERNS if p and not p.startswith('#')]
    assert set(packed(root)) == exclude_paths(str(root), patterns, dockerfile='Dockerfile')
    assert {'Dockerfile', '.dockerignore', 'keep.log', 'docs/deep/c.txt', 'src/main.py'} <= set(packed(root))
    assert not {'debug.log', 'build', 'docs/a.md', 'node_modules', 'src/test_main.py', '.git'} & set(packed(root))


def test_a_dockerfile_elsewhere_in_the_context_is_always_sent(tmp_path: pathlib.Path) -> None:
    root = context(tmp_path, files=('docker/Dockerfile', 'docker/other', 'app.py'), ignore=('docker',))
    sent = set(packed(root, dockerfile='docker/Dockerfile'))
    assert sent == exclude_paths(str(root), ['docker'], dockerfile='docker/Dockerfile')
    assert sent == {'.dockerignore', 'app.py', 'docker/Dockerfile'}


def test_links_are_sent_as_links_never_followed(tmp_path: pathlib.Path) -> None:
    outside = tmp_path / 'outside'
    (outside / 'secrets').mkdir(parents=True)
    (outside / 'secrets' / 'token').write_text('not-for-the-engine')
    root = context(tmp_path / 'ctx', files=('Dockerfile',), ignore=())
    (root / 'to-dir').symlink_to(outside / 'secrets')
    (root / 'zero').symlink_to('/dev/zero')
    members = packed(root)
    assert members['to-dir'].issym() and members['to-dir'].linkname == str(outside / 'secrets')
    assert members['zero'].issym() and members['zero'].size == 0
    assert not [name for name in members if name.startswith('to-dir/')]


def test_a_dockerignore_that_is_a_link_is_not_read(tmp_path: pathlib.Path) -> None:
    root = context(tmp_path, files=('Dockerfile',), ignore=())
    (root / '.dockerignore').unlink()
    (root / '.dockerignore').symlink_to('/dev/zero')
    with pytest.raises(StageFailed) as info:
        packed(root)
    assert info.value.reason == 'SymlinkNotAllowed'


def test_a_dockerignore_over_a_mebibyte_is_refused(tmp_path: pathlib.Path) -> None:
    root = context(tmp_path, files=('Dockerfile',), ignore=('x' * 1023,) * 1100)
    with pytest.raises(StageFailed) as info:
        packed(root)
    assert (info.value.reason, info.value.message) == \
        ('ContextTooLarge', '.dockerignore of the build context is over 1.0 MiB')


def test_a_context_over_the_limit_is_measured_whole(tmp_path: pathlib.Path) -> None:
    root = context(tmp_path, files=('Dockerfile',), ignore=('ignored.bin',))
    for name in ('a.bin', 'b.bin', 'ignored.bin'):
        (root / name).write_bytes(os.urandom(1024 ** 2))
    with pytest.raises(ContextTooLarge) as info:
        packed(root, max_bytes=1024 ** 2)
    assert 2 * 1024 ** 2 < info.value.size < 2 * 1024 ** 2 + 16 * 1024  # two files and the headers, not three
    assert info.value.message.startswith("build context is 2.0 MiB (as sent to the Docker engine, after "
                                         ".dockerignore), over the operator's limit of 1.0 MiB")


def test_a_line_without_end_keeps_a_bounded_beginning() -> None:
    lines = Lines()
    for _ in range(1000):  # 4 MB in 4 KiB pieces, no newline
        assert list(lines.feed('y' * 4096)) == []
        assert len(lines._partial) <= LINE_LIMIT
    (line,) = list(lines.feed('y\nnext\n'))[:1]
    assert line == 'y' * LINE_LIMIT + f' … [{4096 * 1000 + 1 - LINE_LIMIT} characters cut]'
    assert list(lines.feed('short\r\n')) == ['short']


def test_build_output_counts_its_size_and_keeps_a_bounded_tail() -> None:
    logged: list[str] = []
    output = BuildOutput(log=logged.append, tail_lines=3, max_bytes=100)
    for _ in range(50):
        output.take({'stream': 'x' * 10_000 + '\n'})
    output.take({'stream': 'Step 2/2 : RUN ' + 'z' * 400_000})
    output.flush()
    assert output.size == 50 * 10_001 + 15 + 400_000
    assert len(output.tail) == 3 and all(len(line) < LINE_LIMIT + 40 for line in output.tail)
    assert output.tail[-1].startswith('Step 2/2 : RUN zzz')
    output.emit('The command ' + 'c' * 400_000 + ' returned a non-zero code: 5')
    assert len(output.tail[-1]) == LINE_LIMIT and output.tail[-1].endswith('returned a non-zero code: 5')


def test_a_checkout_counts_its_files_as_a_tar_does() -> None:
    blob, sha = 'blob', '0' * 40
    listing = '\0'.join([f'100644 {blob} {sha}    1000\ta.txt', f'100644 {blob} {sha}       0\tempty',
                         f'120000 {blob} {sha}       7\tlink', f'160000 commit {sha}       -\tsubmodule',
                         f'100755 {blob} {sha} 1048576\tbig.bin']) + '\0'
    assert tree_bytes(listing) == (512 + 1024) + 512 + (512 + 512) + (512 + 1048576)
    assert tree_bytes('\0'.join(f'100644 blob {sha} 0\tf{i}' for i in range(1_000_000))) == 512_000_000
