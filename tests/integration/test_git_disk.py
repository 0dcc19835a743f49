"""What a git server may write onto the operator's disk: the fetched pack is held to the checkout limit.

A commit's files are measured from its tree before they are written (`max_checkout_bytes`), but the pack the
server sends comes first, and the server decides what is in it. Here a commit of 64 MiB of incompressible
data stands in for a server that sends far more than the limit: the fetch must be stopped near the limit,
not after the whole pack is on disk (an emptyDir over its sizeLimit evicts the operator, and every run with
it).
"""
from __future__ import annotations

import os
import pathlib
import threading

import pytest

from controller.adapters.git import GitRepository, RepositoryTooLarge
from tests.integration.test_git import run_git

MiB = 1 << 20
LIMIT = 2 * MiB


def bytes_under(root: pathlib.Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


def test_a_pack_far_over_the_checkout_limit_is_stopped_while_it_is_fetched(tmp_path: pathlib.Path) -> None:
    work = tmp_path / 'work'
    run_git('init', '--quiet', '--initial-branch=main', str(work))
    for i in range(4):
        (work / f'random-{i}.bin').write_bytes(os.urandom(16 * MiB))
    run_git('add', '-A', cwd=work)
    run_git('commit', '--quiet', '-m', 'big', cwd=work)
    head = run_git('rev-parse', 'HEAD', cwd=work)
    bare = tmp_path / 'srv' / 'big.git'
    run_git('clone', '--quiet', '--bare', str(work), str(bare))

    into = tmp_path / 'checkout'
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], bytes_under(into))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with pytest.raises(RepositoryTooLarge) as caught:
            GitRepository(max_checkout_bytes=LIMIT).checkout(url=bare.as_uri(), revision=head, token=None, into=into)
    finally:
        done.set()
        sampler.join()
    print(f'\npeak on disk during the fetch: {peak[0] / MiB:.1f} MiB (limit {LIMIT / MiB:.0f} MiB, pack 64 MiB)')
    assert '2.0 MiB' in caught.value.message and 'PANDA_DEPLOY_MAX_CHECKOUT_BYTES' in caught.value.message
    assert peak[0] < 32 * MiB, f'{peak[0] / MiB:.1f} MiB were on disk before the fetch was stopped'
