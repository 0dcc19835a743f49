"""`kubectl pd`: the PandaDeploy kubectl plugin (console script `kubectl-pd`).

It speaks only to the Kubernetes API, as the kubeconfig's user: it reads
PandaDeploys and their Events, and asks the operator for things by
annotating the resource (promote, abort, retry, undo, reconcile); the
operator acts on them. No AWS or git access is needed or used (an import
contract in pyproject.toml keeps the adapters and the stages out of it).
"""
