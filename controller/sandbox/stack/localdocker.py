"""Local stand-ins for a Docker workflow with no network: a base image and an OCI registry.

Machines that build this project reach no image hub, so images are built
FROM a base made here (a busybox rootfs imported into the engine), and pushes
go to Debian's `docker-registry` started on a free port. The tests, the
benchmarks and the sandbox demo share these.
"""
from __future__ import annotations

import io
import os
import pathlib
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request

import docker
import docker.errors

BASE_IMAGE = 'panda-test-base:latest'
BUSYBOX_PATHS = ('/bin/busybox', '/usr/bin/busybox')


class Unavailable(Exception):
    """Something this machine needs for the sandbox is missing; the message says how to get it."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> int | None:
    """The HTTP status `url` answers with, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def _static_busybox() -> str | None:
    for path in BUSYBOX_PATHS:
        if os.path.isfile(path):
            with open(path, 'rb') as f:
                if b'ld-linux' not in f.read(8192):  # no program interpreter: statically linked
                    return path
    return None




def ensure_base_image(client: docker.DockerClient, *, name: str = BASE_IMAGE) -> str:
    """`name`: /bin/busybox and its applets imported from a tar; kept between runs so the layer
    cache of images built on it stays valid."""

    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    busybox = _static_busybox()
    if busybox is None:
        raise Unavailable('No statically linked busybox for the base image; apt-get install busybox-static')
    applets = subprocess.run([busybox, '--list'], check=True, capture_output=True, text=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w') as tar:
        for directory in ('bin', 'tmp', 'etc', 'root'):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == 'tmp' else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname='bin/busybox')
        for applet in applets:
            if applet == 'busybox':
                continue
            info = tarfile.TarInfo(f'bin/{applet}')
            info.type, info.linkname = tarfile.SYMTYPE, 'busybox'
            tar.addfile(info)
        passwd = b'root:x:0:0:root:/root:/bin/sh\n'
        info = tarfile.TarInfo('etc/passwd')
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    repository, tag = name.split(':')
    client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag)
    client.images.get(name)
    return name




def start_registry(root: pathlib.Path, *, auth: bool) -> tuple[subprocess.Popen[bytes], str, pathlib.Path]:
    """Debian's docker-registry on a free port, storing under `root`: (process, host:port, log file)."""
    binary = shutil.which('docker-registry')
    if binary is None:
        raise Unavailable('docker-registry is not installed (apt-get install docker-registry); '
                     'or set PANDA_TEST_REGISTRY=host:port')
    port = free_port()
    address = f'127.0.0.1:{port}'
    root.mkdir(parents=True, exist_ok=True)
    config = [
        'version: 0.1',
        'log: {level: info}',
        f'storage: {{filesystem: {{rootdirectory: {root / "data"}}}, delete: {{enabled: true}}}}',
        f'http: {{addr: "{address}"}}',
    ]
    if auth:  # a missing htpasswd file: the registry makes one with a generated user and logs its password
        config.append(f'auth: {{htpasswd: {{realm: panda-test, path: {root / "htpasswd"}}}}}')
    (root / 'config.yml').write_text('\n'.join(config) + '\n')
    log_path = root / 'registry.log'
    with log_path.open('wb') as log:
        process = subprocess.Popen([binary, 'serve', str(root / 'config.yml')], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while answers(f'http://{address}/v2/') is None:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise Unavailable(f'docker-registry did not start on {address}: {log_path.read_text()[-500:]}')
        time.sleep(0.1)
    return process, address, log_path


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
