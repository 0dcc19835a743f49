"""The `panda-deploy` command line (`python -m controller` is the same).

  panda-deploy operator [kopf run options]   run the operator
  panda-deploy run -f FILE [-s SECRETS]      run the six stages once, no Kubernetes
  panda-deploy crd                           print the CRD generated from the models
  panda-deploy sandbox kube|aws [options]    serve a sandbox stand-in (needs the [sandbox] extra)
  panda-deploy sandbox up --dir DIR          the whole sandbox for your own repository, until interrupted
  panda-deploy sandbox world --dir DIR --service NAME [--strategy S]
                                             one service's AWS world in it; prints its PandaDeploy
  panda-deploy demo                          the embedded sandbox, end to end

Exit codes of `run`: 0 Succeeded, 1 Failed, 2 invalid input (the field at fault is named).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import logging
import pathlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pydantic
import yaml

from controller import tenancy
from controller.config import Config
from controller.errors import Stall
from controller.models import (
    API_VERSION,
    KIND,
    PandaDeploySpec,
    PandaDeployStatus,
    RunResult,
    StageName,
    describe_validation_error,
)

if TYPE_CHECKING:
    from controller.pipeline import Engine

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class InvalidInput(Exception):
    """Bad command-line input: exit 2 with this message."""


class PrintSink:
    """Reports a run on the terminal: one line per progress event."""

    def __init__(self, out: Any = sys.stdout) -> None:
        self.out = out
        self.status: PandaDeployStatus | None = None

    async def save(self, status: PandaDeployStatus) -> None:
        self.status = status

    async def event(self, *, type: str, reason: str, message: str) -> None:
        if type == 'Warning':
            self.progress(f'{type} {reason}: {message}')

    def progress(self, line: str) -> None:
        print(line, file=self.out, flush=True)


def _load_documents(path: str) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == '-' else pathlib.Path(path).read_text()
        return [d for d in yaml.safe_load_all(text) if d]
    except OSError as exc:
        raise InvalidInput(f'{path}: {exc.strerror}') from exc
    except yaml.YAMLError as exc:
        raise InvalidInput(f'{path}: not valid YAML: {exc}') from exc


def load_manifest(path: str) -> tuple[dict[str, Any], PandaDeploySpec]:
    docs = [d for d in _load_documents(path) if isinstance(d, dict) and d.get('kind') == KIND]
    if len(docs) != 1:
        raise InvalidInput(f'{path}: expected exactly one {KIND}, found {len(docs)}')
    doc = docs[0]
    if doc.get('apiVersion') != API_VERSION:
        raise InvalidInput(f'{path}: apiVersion: expected {API_VERSION}, got {doc.get("apiVersion")!r}')
    if not isinstance(doc.get('spec'), dict):
        raise InvalidInput(f'{path}: spec: required')
    try:
        return doc, PandaDeploySpec.model_validate(doc['spec'])
    except pydantic.ValidationError as exc:
        raise InvalidInput(f'{path}: {describe_validation_error(exc)}') from exc


def load_secrets(paths: Sequence[str]) -> dict[str, dict[str, str]]:
    """Secret manifests by name, data decoded and stringData merged (as the API server does)."""
    found: dict[str, dict[str, str]] = {}
    for path in paths:
        for doc in _load_documents(path):
            if not isinstance(doc, dict) or doc.get('kind') != 'Secret':
                continue
            name = (doc.get('metadata') or {}).get('name')
            if not name:
                raise InvalidInput(f'{path}: a Secret without metadata.name')
            data: dict[str, str] = {}
            for key, value in (doc.get('data') or {}).items():
                try:
                    data[key] = base64.b64decode(str(value), validate=True).decode()
                except ValueError as exc:
                    raise InvalidInput(f'{path}: Secret {name}: data.{key} is not base64') from exc
            data.update({k: str(v) for k, v in (doc.get('stringData') or {}).items()})
            found[name] = data
    return found


def run_once(*, manifest: str, secret_files: Sequence[str], until: StageName | None,
             status_out: str | None, config: Config) -> int:
    from controller.assembly import build_engine, build_notifier
    from controller.pipeline import Recorder, Run

    doc, spec = load_manifest(manifest)
    secrets = load_secrets(secret_files)
    notifier = build_notifier(config=config)
    meta = doc.get('metadata') or {}
    namespace, name = str(meta.get('namespace') or 'default'), str(meta.get('name') or 'run')
    try:
        config.git_hosts.check_source(spec.source)  # SourceNotAllowed: before any connection, as the operator does
        notifier.check(spec)  # NotificationNotAllowed
        # No cluster: the caller's own AWS identity is allowed (tenancy.py).
        creds = tenancy.resolve(spec, namespace=namespace, name=name, lookup=secrets.get, annotations=None)
    except Stall as exc:
        raise InvalidInput(f'{exc.reason}: {exc.message}') from exc

    generation = int((doc.get('metadata') or {}).get('generation') or 1)
    recorder = Recorder(sink=PrintSink(), status=PandaDeployStatus(), generation=generation)
    run = Run(spec=spec, credentials=creds, recorder=recorder, logger=logging.getLogger('panda-deploy.run'),
              approval=lambda: recorder.status.deployment_id)  # a run from the command line approves itself
    recorder.notices = notifier.for_run(namespace=namespace, name=name, spec=spec, credentials=creds)
    recorder.begin()

    async def drive(engine: Engine) -> RunResult:
        result = await engine.drive(run, until=until)
        await notifier.drain()  # the run is over: its notices are delivered (or given up) before the exit
        return result

    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='deployment-worker') as pool:
        result = asyncio.run(drive(build_engine(config=config, pool=pool)))
    if status_out:
        pathlib.Path(status_out).write_text(yaml.safe_dump(recorder.status.dump(), sort_keys=False))
    return EXIT_OK if result == RunResult.succeeded else EXIT_FAILED


def _operator(args: Sequence[str]) -> None:
    import kopf.cli

    extra = list(args)
    if not any(a in ('-n', '--namespace', '-A', '--all-namespaces') or a.startswith('--namespace=')
               for a in extra):
        extra.append('--all-namespaces')
    kopf.cli.main.main(args=['run', '-m', 'controller.handlers', *extra], prog_name='panda-deploy operator')


def _sandbox(which: str, args: Sequence[str]) -> int:
    import importlib
    try:
        module = importlib.import_module(f'controller.sandbox.{which}')
    except ImportError as exc:
        print(f'panda-deploy sandbox {which}: {exc}; install the sandbox extra: pip install "panda-deploy[sandbox]"',
              file=sys.stderr)
        return EXIT_INVALID
    return int(module.main(list(args)) or 0)


def _stage(value: str) -> StageName:
    for name in StageName:
        if value.lower() in (name.value.lower(), str(name.number)):
            return name
    raise argparse.ArgumentTypeError(f'unknown stage {value!r}; one of {", ".join(n.value for n in StageName)}')


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['operator']:
        _operator(argv[1:])
        return
    if argv[:1] == ['sandbox'] and argv[1:2] in (['kube'], ['aws'], ['up'], ['world']):
        raise SystemExit(_sandbox(argv[1], argv[2:]))
    if argv[:1] == ['demo']:
        raise SystemExit(_sandbox('demo', argv[1:]))
    parser = argparse.ArgumentParser(prog='panda-deploy', description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    commands.add_parser('operator', help='run the operator (takes kopf run options)')
    run = commands.add_parser('run', help='run the six stages once for one manifest, without Kubernetes')
    run.add_argument('-f', '--filename', required=True, help='PandaDeploy manifest (- for stdin)')
    run.add_argument('-s', '--secrets', action='append', default=[], help='Secret manifests (repeatable)')
    run.add_argument('--until', type=_stage, help='stop after this stage (e.g. Push)')
    run.add_argument('--status-out', help='write the final status here as YAML')
    commands.add_parser('crd', help='print the CRD generated from the models')
    commands.add_parser('demo', help='run the embedded sandbox end to end (needs a Docker engine)')
    commands.add_parser('sandbox', help='kube (API emulator) or aws (moto + simulators): serve a stand-in; '
                                        'up: the whole sandbox for your repository; world: a service\'s AWS world')
    args = parser.parse_args(argv)

    if args.command == 'crd':
        from controller.crd import render_crd
        sys.stdout.write(render_crd())
        return
    if args.command == 'run':
        logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
        try:
            code = run_once(manifest=args.filename, secret_files=args.secrets, until=args.until,
                            status_out=args.status_out, config=Config.from_env())
        except InvalidInput as exc:
            print(f'panda-deploy run: {exc}', file=sys.stderr)
            code = EXIT_INVALID
        raise SystemExit(code)
