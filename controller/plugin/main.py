"""`kubectl pd` (the console script `kubectl-pd`): argument parsing and exit codes.

  kubectl pd get [NAME] [-n NS | -A]      a table: name, phase, stage, revision, colour, age
  kubectl pd watch NAME                   the current run, replayed then live; exit 0 Succeeded, 1 otherwise
  kubectl pd promote NAME                 let the run waiting for a manual promotion shift traffic
  kubectl pd abort NAME                   stop the run in flight with rollback
  kubectl pd retry NAME                   run the failed newest run again at its revision
  kubectl pd undo NAME [--to ID]          go back to a succeeded run's image and task definition
  kubectl pd reconcile NAME               a run now at the branch head (deploy.panda.dev/requestedAt)

Exit codes: 0 done, 1 refused or failed (the API's answer, or the resource's state, is printed), 2 bad usage
(the argument at fault is named).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
REQUESTS = ('promote', 'abort', 'retry', 'undo', 'reconcile')


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('-n', '--namespace', help='the namespace (default: the kubeconfig context\'s, or default)')
    common.add_argument('--kubeconfig', help='path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)')
    common.add_argument('--context', help='the kubeconfig context to use')
    top = argparse.ArgumentParser(prog='kubectl pd', description='Watch and steer PandaDeploy rollouts.')
    sub = top.add_subparsers(dest='command', required=True, metavar='COMMAND')
    get = sub.add_parser('get', parents=[common], help='list PandaDeploys')
    get.add_argument('name', nargs='?', metavar='NAME')
    get.add_argument('-A', '--all-namespaces', action='store_true', help='in every namespace')
    follow = sub.add_parser('watch', parents=[common], help="follow the current run's progress to its end")
    follow.add_argument('name', metavar='NAME')
    for command, text in (('promote', 'let the run waiting for a manual promotion shift traffic'),
                          ('abort', 'stop the run in flight with rollback'),
                          ('retry', 'run the failed newest run again at its revision'),
                          ('undo', "go back to a succeeded run's image and task definition"),
                          ('reconcile', 'start a run at the branch head now')):
        each = sub.add_parser(command, parents=[common], help=text)
        each.add_argument('name', metavar='NAME')
        if command == 'undo':
            each.add_argument('--to', metavar='ID', help='the deploymentId of a status.history entry (default: the '
                              'newest succeeded run with another image than the current)')
    return top


def run(argv: Sequence[str], out: TextIO, err: TextIO) -> int:
    top = parser()
    args = top.parse_args(argv)  # bad usage: argparse names the argument and exits 2
    if args.command == 'get' and args.all_namespaces and args.namespace:
        top.error('argument -A/--all-namespaces: not allowed with -n/--namespace')
    # Imported once the arguments are good: the Kubernetes client and the models take seconds on a busy machine.
    from controller.plugin import commands
    from controller.plugin.api import ApiError, Cluster
    from controller.plugin.watch import watch
    try:
        cluster = Cluster.connect(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
        if args.command == 'get':
            return commands.get(cluster, out, name=args.name, all_namespaces=args.all_namespaces)
        if args.command == 'watch':
            return watch(cluster, out, name=args.name)
        return commands.request(cluster, out, name=args.name, command=args.command, to=getattr(args, 'to', None))
    except commands.BadArgument as exc:
        print(f'kubectl pd {args.command}: error: {exc}', file=err)
        return EXIT_USAGE
    except (commands.Refused, ApiError) as exc:
        print(f'Error: {exc}', file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return run(sys.argv[1:] if argv is None else argv, sys.stdout, sys.stderr)
