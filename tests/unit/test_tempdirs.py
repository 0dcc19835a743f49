"""Temporary directories a killed operator left behind are removed at the next start, and only those."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

from controller import tempdirs


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    return child.pid


def make(root: pathlib.Path, name: str) -> pathlib.Path:
    path = root / name
    (path / 'src' / '.git').mkdir(parents=True)
    (path / 'src' / 'Dockerfile').write_text('FROM scratch\n')
    return path


def test_prefix_names_the_kind_and_this_process() -> None:
    assert tempdirs.prefix('src') == f'panda-deploy-src-{os.getpid()}-'
    assert tempdirs.prefix('resolve') == f'panda-deploy-resolve-{os.getpid()}-'
    with pytest.raises(ValueError, match="unknown temporary directory kind 'build'; one of src, resolve"):
        tempdirs.prefix('build')


def test_a_directory_made_with_the_prefix_is_recognised_as_this_process_s(tmp_path: pathlib.Path) -> None:
    made = pathlib.Path(tempfile.mkdtemp(prefix=tempdirs.prefix('src'), dir=tmp_path))
    # At startup the process's own pid counts as gone (a restarted container is pid 1 again).
    assert tempdirs.remove_stale(tmp_path) == [made]
    assert not made.exists()


def test_removes_the_directories_of_dead_processes_and_keeps_live_ones_and_others(tmp_path: pathlib.Path) -> None:
    gone = dead_pid()
    stale_src = make(tmp_path, f'panda-deploy-src-{gone}-abc123')
    stale_resolve = make(tmp_path, f'panda-deploy-resolve-{gone}-def456')
    live = make(tmp_path, f'panda-deploy-src-{os.getppid()}-xyz789')  # another operator sharing /tmp
    unmarked = make(tmp_path, 'panda-deploy-src-abc123')  # no pid: not attributable, left alone
    foreign = make(tmp_path, f'other-tool-src-{gone}-abc')
    a_file = tmp_path / f'panda-deploy-src-{gone}-file'
    a_file.write_text('not a directory')

    removed = tempdirs.remove_stale(tmp_path)

    assert sorted(removed) == sorted([stale_src, stale_resolve])
    assert not stale_src.exists() and not stale_resolve.exists()
    assert live.is_dir() and unmarked.is_dir() and foreign.is_dir() and a_file.is_file()


def test_a_symlink_is_not_followed(tmp_path: pathlib.Path) -> None:
    target = make(tmp_path, 'keep-me')
    link = tmp_path / f'panda-deploy-src-{dead_pid()}-link'
    link.symlink_to(target, target_is_directory=True)
    assert tempdirs.remove_stale(tmp_path) == []
    assert (target / 'src' / 'Dockerfile').is_file()


def test_default_root_is_tempfile_s_and_a_missing_root_is_no_error(tmp_path: pathlib.Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    stale = make(tmp_path, f'panda-deploy-src-{dead_pid()}-q')
    assert tempdirs.remove_stale() == [stale]
    assert tempdirs.remove_stale(tmp_path / 'missing') == []

