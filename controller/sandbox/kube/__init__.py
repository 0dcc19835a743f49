"""A Kubernetes API emulator with the contract of a real API server.

Why this exists: the operator's end-to-end tests and the embedded sandbox
(``panda-deploy demo``) need a Kubernetes API to talk to, and no real API
server (kind, k3s, minikube, etcd) can be installed on the machines where they
run.  A naive in-memory store is not enough either: the operator's correctness
rests on the API contract -- ``generation`` bumped by spec changes only,
``resourceVersion`` for optimistic concurrency and watch resumption, the
``status`` subresource, JSON merge-patch null deletion, finalizers, and the
CRD's schema refusing invalid specs.  Tests against a store without these
rules would pass where a cluster fails.

:class:`ClusterEmulator` extends :class:`kmock.KubernetesEmulator` (it keeps its
``objects`` history, its request log and its DSL for injecting faults) with
those rules; :class:`ClusterServer` serves it on ``127.0.0.1`` from a
background thread or inside a running event loop and writes a kubeconfig, so
that Kopf, the ``kubernetes`` client and ``kubectl`` reach it exactly as they
reach a cluster.  ``python -m controller.sandbox.kube`` runs it standalone.

Out of scope (not needed by an operator or by kubectl's common verbs): auth,
admission webhooks, protobuf, pagination (``limit`` is ignored, everything
comes in one page), CRD version conversion (objects are stored once and served
under every served version), garbage collection by owner references.

The package, one job per module: ``server`` (HTTP serving, the kubeconfig,
``main``), ``emulator`` (the class and its Python API), built in layers on
``store`` (resource types, objects, the write and event logs),
``admission``, ``deletion`` and ``writes`` (the API's rules for each
change), ``handlers`` (one per verb), ``watch``, ``discovery`` and
``routes``; beside them ``resources``, ``crds``, ``patches``, ``selectors``,
``tables``, ``wire`` and ``errors``.  The schema rules are
:mod:`controller.sandbox.schema`.
"""
from controller.sandbox.kube.emulator import ClusterEmulator
from controller.sandbox.kube.errors import ApiError
from controller.sandbox.kube.resources import ResourceType
from controller.sandbox.kube.server import ClusterServer, main
from controller.sandbox.kube.store import Write

__all__ = ['ClusterEmulator', 'ClusterServer', 'ResourceType', 'Write', 'ApiError', 'main']
