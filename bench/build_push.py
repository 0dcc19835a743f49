"""Stages 1-2 through the operator's code vs. the same work by plain commands.

Operator: `panda-deploy run -f app.yaml -s secrets.yaml --until Push` (real
git, Docker engine, registry via PANDA_DEPLOY_REGISTRY, moto for STS/ECR).
Plain: `git clone --depth 1`, `docker build` (with the same four labels), `docker push`
in sequence.
Both build the sample app at a fresh commit each round (so both really
build), interleaved, against the same engine and registry. Also times the
skip path: a second operator run for a commit already in the registry.

    .venv/bin/python bench/build_push.py [--rounds 5]

Needs a Docker engine, Debian's docker-registry (or PANDA_TEST_REGISTRY) and
busybox-static (for the local base image); `.ci/run` shows how to start them.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import docker
import yaml
from moto.server import ThreadedMotoServer

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.models import PandaDeploySpec  # noqa: E402
from controller.pipeline.build import BUILD_IDENTITY_LABEL, build_identity_label  # noqa: E402
from controller.sandbox.stack import localdocker  # noqa: E402

GIT = ['git', '-c', 'user.name=bench', '-c', 'user.email=bench@example.test']


def commit(work: pathlib.Path, bare: pathlib.Path, n: int) -> None:
    (work / 'www' / 'round.txt').write_text(f'round {n} {time.time()}\n')
    subprocess.run([*GIT, '-C', str(work), 'add', '.'], check=True)
    subprocess.run([*GIT, '-C', str(work), 'commit', '-qm', f'round {n}'], check=True)
    subprocess.run([*GIT, '-C', str(work), 'push', '-q', str(bare), 'HEAD:main'], check=True)


def timed(command: list[str], **kwargs: object) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise SystemExit(f'{command[:3]} failed:\n{result.stdout}\n{result.stderr}')
    return time.perf_counter() - start


def plain(bare: pathlib.Path, registry: str, base: str, scratch: pathlib.Path, n: int, identity: str) -> float:
    """The same external work as stages 1-2, by hand."""
    start = time.perf_counter()
    clone = scratch / f'plain-{n}'
    timed(['git', 'clone', '-q', '--depth', '1', '-b', 'main', f'file://{bare}', str(clone)])
    sha = subprocess.run(['git', '-C', str(clone), 'rev-parse', 'HEAD'], capture_output=True, text=True,
                         check=True).stdout.strip()
    target = f'{registry}/plain-sample-app:{sha}'
    # The same four labels the operator sets (controller/pipeline/build.py): each is part of the work, since
    # the engine's classic builder makes one LABEL step of each, and on vfs a step costs a layer (~1 s here).
    labels = [f'org.opencontainers.image.source=file://{bare}', f'org.opencontainers.image.revision={sha}',
              f'dev.panda.deploy.deployment-id=plain-{n}', f'{BUILD_IDENTITY_LABEL}={identity}']
    timed(['docker', 'build', '-q', '--build-arg', f'BASE_IMAGE={base}', '-t', target,
           *[arg for label in labels for arg in ('--label', label)], str(clone)])
    timed(['docker', 'push', '-q', target])
    shutil.rmtree(clone)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--json', type=pathlib.Path, help='also write the summary rows here (for bench/table.py)')
    args = parser.parse_args()

    logging.getLogger('werkzeug').setLevel(logging.ERROR)  # moto's request log
    client = docker.from_env()
    base = localdocker.ensure_base_image(client)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix='panda-bench-'))
    registry_process = None
    registry = os.environ.get('PANDA_TEST_REGISTRY', '')
    if not registry:
        registry_process, registry, _ = localdocker.start_registry(scratch / 'registry', auth=False)
    moto = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
    moto.start()
    endpoint = 'http://%s:%d' % moto.get_host_and_port()
    try:
        work = scratch / 'work'
        shutil.copytree(ROOT / 'examples' / 'sample-app', work)
        subprocess.run(['git', 'init', '-q', '-b', 'main', str(work)], check=True)
        bare = scratch / 'sample-app.git'
        subprocess.run(['git', 'init', '-q', '--bare', '-b', 'main', str(bare)], check=True)
        manifest = {
            'apiVersion': 'deploy.panda.dev/v1alpha1', 'kind': 'PandaDeploy',
            'metadata': {'name': 'sample-app'},
            'spec': {'source': {'url': f'file://{bare}', 'branch': 'main', 'buildArgs': {'BASE_IMAGE': base}},
                     'aws': {'region': 'ap-northeast-2', 'credentialsSecretRef': {'name': 'aws-creds'}},
                     'image': {'repository': 'bench-sample-app'}},
        }
        secrets = {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': {'name': 'aws-creds'},
                   'stringData': {'accessKeyId': 'AKIDBENCH', 'secretAccessKey': 'bench-secret'}}
        identity = build_identity_label(PandaDeploySpec.model_validate(manifest['spec']).source)
        (scratch / 'app.yaml').write_text(yaml.safe_dump(manifest))
        (scratch / 'secrets.yaml').write_text(yaml.safe_dump(secrets))
        env = {k: v for k, v in os.environ.items() if not k.startswith('AWS_')}
        env.update(AWS_ENDPOINT_URL=endpoint, AWS_EC2_METADATA_DISABLED='true', PANDA_DEPLOY_REGISTRY=registry)
        env.pop('PANDA_DEPLOY_ADAPTERS', None)
        operator_cmd = [sys.executable, '-m', 'controller', 'run', '-f', 'app.yaml', '-s', 'secrets.yaml',
                        '--until', 'Push']

        ours, theirs, skips = [], [], []
        for n in range(args.rounds):
            commit(work, bare, 2 * n)
            ours.append(timed(operator_cmd, cwd=scratch, env=env))
            skips.append(timed(operator_cmd, cwd=scratch, env=env))
            commit(work, bare, 2 * n + 1)
            theirs.append(plain(bare, registry, base, scratch, n, identity))
            print(f'round {n + 1}: operator {ours[-1]:.2f}s  plain {theirs[-1]:.2f}s  skip {skips[-1]:.2f}s',
                  flush=True)
    finally:
        moto.stop()
        if registry_process is not None:
            localdocker.stop(registry_process)
        shutil.rmtree(scratch, ignore_errors=True)

    mo, mp, ms = statistics.median(ours), statistics.median(theirs), statistics.median(skips)
    where = (f'{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, '
             f'Docker {client.version()["Version"]} (storage {client.info()["Driver"]})')
    rows = [[f'panda-deploy run --until Push, new commit (median of {args.rounds})', f'{mo:.2f} s'],
            ['plain git clone + docker build + docker push', f'{mp:.2f} s'],
            ['ratio operator / plain', f'{mo / mp:.2f}'],
            ['panda-deploy run --until Push, commit already pushed (skip path)', f'{ms:.2f} s']]
    print()
    print(f'machine: {where}')
    print(f'| measure (median of {args.rounds}) | seconds |')
    print('|---|---|')
    for label, value in rows:
        print(f'| {label.replace(f" (median of {args.rounds})", "")} | {value.removesuffix(" s")} |')
    if args.json:
        import json
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({'bench': 'build_push', 'machine': where,
                                         'rows': [['stages 1-2', label, value, ''] for label, value in rows]}, indent=1))


if __name__ == '__main__':
    main()
