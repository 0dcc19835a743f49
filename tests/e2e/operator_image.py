"""The operator image as CI builds and runs it: a Debian base made here, the repository's Dockerfile, `docker run`.

Why a base of our own: CI machines pull nothing from an image hub, so the
Dockerfile's default base (`python:3.11-slim`) is out of reach. `debootstrap`
makes a Debian bookworm root filesystem from the Debian mirror instead (the
same Python 3.11 at /usr/bin, plus a `python` link as the official image
has), imported into the engine under a tag that names the recipe: it is made
once per machine and recipe, and reused after that (it also keeps Docker's
layer cache of the operator image valid).

Why the machine's CA bundle goes into it: HTTPS from these machines goes
through a TLS-intercepting proxy whose CA no stock image trusts. The bundle
joins the base's own CAs (`update-ca-certificates`), and the build passes
`PIP_CERT` so that pip, which trusts only its own `certifi` copy, uses it:
the same recipe the README gives for a company's proxy.

The container runs the way deploy/manifests/deployment.yaml runs the pod: uid
10001, read-only root filesystem with a writable /tmp, no capabilities, no
privilege escalation; `--network host` so that it reaches the stand-ins on
127.0.0.1, and the engine's socket mounted for its builds (in production the
dind component shares a socket the same way).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Sequence

import docker
import docker.errors

from controller.sandbox.stack.operator import OPERATOR_ARGS

ROOT = pathlib.Path(__file__).resolve().parents[2]
SUITE = 'bookworm'
BASE_PACKAGES = ('python3', 'python3-venv', 'git', 'ca-certificates')
MIRROR = os.environ.get('PANDA_IMAGE_MIRROR', 'http://deb.debian.org/debian')
HOST_CA = pathlib.Path('/etc/ssl/certs/ca-certificates.crt')
IMAGE_CA = '/etc/ssl/certs/ca-certificates.crt'
BASE_REPOSITORY = 'panda-deploy-test-base'
IMAGE = 'panda-deploy:e2e'
UID = 10001
DEBOOTSTRAP_SECONDS = 1200
BUILD_SECONDS = 1800
BUILD_LOG_TAIL = 60
CREATE_SECONDS = 300


# What Debian's own images do to stay small (debuerreotype's "slimify"): apt keeps no package caches and
# fetches no translations; dpkg leaves out documentation, manual pages and translations (copyrights stay).
SLIM = {
    'etc/apt/apt.conf.d/docker-clean': (
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
        '/var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
        '/var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'),
    'etc/apt/apt.conf.d/docker-no-languages': 'Acquire::Languages "none";\n',
    'etc/dpkg/dpkg.cfg.d/docker': (
        'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n'
        'path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\n'),
}


class ImageFailed(Exception):
    """The base or the operator image could not be made; the message has the end of the tool's output."""


def base_tag() -> str:
    """The base's tag: a digest of the recipe and of the CA bundle it trusts, so that a change makes a new one."""
    recipe = hashlib.sha256(json.dumps([SUITE, BASE_PACKAGES, MIRROR, 'python-link', 'host-ca', SLIM]).encode())
    if HOST_CA.is_file():
        recipe.update(HOST_CA.read_bytes())
    return f'{BASE_REPOSITORY}:{SUITE}-{recipe.hexdigest()[:12]}'


def ensure_base(client: docker.DockerClient, work: pathlib.Path) -> tuple[str, bool]:
    """(the base image's tag, whether it was made now): debootstrap, the python link, the CA, `docker import`."""
    tag = base_tag()
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag, False
    rootfs, archive = work / 'rootfs', work / 'rootfs.tar'
    try:
        _run(['debootstrap', '--variant=minbase', f'--include={",".join(BASE_PACKAGES)}', SUITE, str(rootfs),
              MIRROR], timeout=DEBOOTSTRAP_SECONDS)
        (rootfs / 'usr' / 'bin' / 'python').symlink_to('python3')
        _slim(rootfs)
        if HOST_CA.is_file():
            shutil.copyfile(HOST_CA, rootfs / 'usr' / 'local' / 'share' / 'ca-certificates' / 'build-host.crt')
            _run(['chroot', str(rootfs), 'update-ca-certificates'], timeout=120)
        _run(['chroot', str(rootfs), 'apt-get', 'clean'], timeout=120)
        shutil.rmtree(rootfs / 'var' / 'lib' / 'apt' / 'lists', ignore_errors=True)
        _run(['tar', '--numeric-owner', '-C', str(rootfs), '-cf', str(archive), '.'], timeout=600)
        repository, version = tag.split(':')
        client.api.import_image_from_file(str(archive), repository=repository, tag=version, changes=[
            'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'ENV LANG=C.UTF-8',
            'CMD ["/bin/bash"]'])
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
        archive.unlink(missing_ok=True)
    client.images.get(tag)
    return tag, True


def build_image(base: str, *, tag: str = IMAGE) -> list[str]:
    """`docker build` of the repository's Dockerfile FROM `base`, host network; the build's output lines."""
    client = docker.from_env(timeout=BUILD_SECONDS)
    lines: list[str] = []
    try:
        for chunk in client.api.build(path=str(ROOT), tag=tag, network_mode='host', rm=True, forcerm=True,
                                      decode=True, buildargs={'PYTHON_IMAGE': base, 'PIP_CERT': IMAGE_CA}):
            if 'error' in chunk:
                raise ImageFailed(''.join(lines[-BUILD_LOG_TAIL:]) + str(chunk['error']))
            lines.append(str(chunk.get('stream', '')))
    finally:
        client.close()
    return lines


def docker_socket() -> str:
    """The engine's unix socket on this machine (the container gets it for its builds)."""
    host = os.environ.get('DOCKER_HOST') or 'unix:///var/run/docker.sock'
    parsed = urllib.parse.urlparse(host)
    if parsed.scheme != 'unix':
        raise ImageFailed(f'DOCKER_HOST={host}: the image test mounts a unix socket into the container')
    return parsed.path


def create_container(*, env: dict[str, str], name: str, shared: pathlib.Path, image: str = IMAGE,
                     args: Sequence[str] = OPERATOR_ARGS) -> list[str]:
    """`docker create` the operator's container, hardened as deployment.yaml does, with the sandbox's settings;
    the argv that starts it attached (its output is the operator's log; SIGTERM to it reaches the container).

    `env` is the operator's environment from the sandbox: what it sets beyond this process's own
    environment goes to the container (by name: `docker create` takes the values from its own
    environment, which is `env`). `shared` (the sandbox's directory: kubeconfig, git repository) is
    mounted read-only at the same path. Created apart from the start because a vfs engine copies the
    whole image for a new container, which can take longer than the operator's start-up allowance."""
    socket = docker_socket()
    settings = sorted(key for key, value in env.items()
                      if os.environ.get(key) != value and key not in ('PATH', 'HOME', 'TMPDIR'))
    argv = ['docker', 'create', '--rm', '--name', name, '--network', 'host', '--read-only',
            '--tmpfs', '/tmp:rw,nosuid,nodev,mode=1777', '--user', f'{UID}:{UID}',
            '--group-add', str(os.stat(socket).st_gid), '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
            '-v', f'{socket}:/var/run/docker.sock', '-v', f'{shared}:{shared}:ro',
            '-e', 'DOCKER_HOST=unix:///var/run/docker.sock']
    for key in settings:
        argv += ['-e', key]
    _run([*argv, image, *args], timeout=CREATE_SECONDS, env=env)
    return ['docker', 'start', '--attach', name]


def image_size(client: docker.DockerClient, image: str = IMAGE) -> int:
    """The image's size in bytes, as `docker images` counts it."""
    return int(client.images.get(image).attrs['Size'])


def _slim(rootfs: pathlib.Path) -> None:
    """`SLIM`'s settings for later installs, and what they leave out removed from what debootstrap installed."""
    for path, text in SLIM.items():
        (rootfs / path).write_text(text)
    for directory in ('man', 'info', 'locale'):
        shutil.rmtree(rootfs / 'usr' / 'share' / directory, ignore_errors=True)
    for path in (rootfs / 'usr' / 'share' / 'doc').glob('*/*'):
        if path.name != 'copyright':
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _run(argv: list[str], *, timeout: float, env: dict[str, str] | None = None) -> None:
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise ImageFailed(f'{argv[0]} took more than {timeout:.0f}s') from exc
    if done.returncode != 0:
        raise ImageFailed(f'{" ".join(argv[:3])}... exited {done.returncode} after '
                          f'{time.monotonic() - started:.0f}s:\n{(done.stdout + done.stderr)[-3000:]}')
