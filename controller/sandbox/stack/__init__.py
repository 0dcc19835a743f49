"""The sandbox stack: the operator end to end on one machine, with nothing but a Docker engine.

Why this exists: the operator's job spans git, a Docker engine, a registry,
ECR, ECS, ELBv2, CodeDeploy and Kubernetes. A newcomer (`panda-deploy demo`),
the end-to-end tests and the benchmarks should see whole rollouts happen
without an AWS account, a GitHub repository or a cluster. Everything that
would be remote has a local stand-in here; the operator itself runs unchanged,
as a child process configured only through its documented environment
variables and the Secrets it reads.

One module a job:

- `sandbox`: `start_sandbox` starts everything below, in this process group,
  each stopped when the caller's ExitStack closes, and returns a `Sandbox`
  (its `start_*` pieces also serve `sandbox up`);
- `operator`: the operator's environment and process
  (`python -m controller operator --standalone --all-namespaces`);
- `engine`: the Docker engine that answers, or a private dockerd started for the stack;
- `localdocker`: the locally made base image and Debian's `docker-registry`;
- `world`: the AWS world a platform team would have before adopting the operator;
- `tasks`: one container per task definition (moto runs none);
- `loadbalancer`: the stand-in for the ALB, an HTTP proxy the operator's health checks go through;
  `routing` (listener rules and weighted target groups) and `targets` (the task definition behind
  a target group: a CodeDeploy task set's or an ECS native service revision's) are its parts;
- `repository`: `examples/sample-app` as a git repository;
- `manifests`: `examples/` filled in for the sandbox;
- `watches` and `progress`: the resource and its Events, printed as they happen.
- `worlds` and `envfile`: for `panda-deploy sandbox up` and `sandbox world`
  (`controller.sandbox.up`, `controller.sandbox.world`): the load-balancer
  stand-in for every world `sandbox world` makes, and the files in `DIR`.

The Kubernetes API emulator and the AWS sandbox (moto with the CodeDeploy
simulator) are `controller.sandbox.kube` and `controller.sandbox.aws`.
"""
from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[3]  # the checkout: examples/, crds/, the operator's working directory
