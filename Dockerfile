# The panda-deploy operator image: `docker build -t panda-deploy:0.1.0 .`
# Two stages: the builder installs the package and its pinned dependencies
# into a virtualenv; the final image copies only that virtualenv onto the same
# base image (same interpreter path, so the venv's links and scripts hold).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
# Behind a TLS-intercepting proxy pip must trust the proxy's CA: build FROM a
# base whose CA bundle has it and pass --build-arg
# PIP_CERT=/etc/ssl/certs/ca-certificates.crt (README, "Building the image").
# Unset by default; this stage is not part of the final image either way.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/panda-deploy
ENV PATH=/opt/panda-deploy/bin:$PATH
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when
# pyproject.toml or the constraints change, not on every code change.
COPY pyproject.toml ./
COPY requirements/constraints.txt requirements/constraints.txt
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/dependencies.txt \
 && pip install -c requirements/constraints.txt -r /tmp/dependencies.txt
# Then the package itself (not editable: the source tree stays behind).
# pip byte-compiles it here, which matters: the root filesystem is read-only
# at run time.
COPY README.md ./
COPY controller/ controller/
RUN pip install --no-deps -c requirements/constraints.txt . \
 && panda-deploy crd > /dev/null

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/your-org/panda-deploy
LABEL org.opencontainers.image.title="panda-deploy" \
      org.opencontainers.image.description="Kubernetes operator: build a git repository's Dockerfile, push to ECR, roll out on ECS with a CodeDeploy Blue/Green switch." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
# git: the git adapter (controller/adapters/gitprocess.py) runs the git binary
# for clones. ca-certificates: HTTPS to GitHub, AWS and registries. procps:
# `ps` for whoever debugs inside the container; the operator needs none (it
# ends a git process tree that hangs by killing its process group).
# tini: PID 1, the init that reaps the children git and its helpers leave
# behind (nothing else in the container would) and passes signals on.
# Nothing else: the Docker engine is reached over DOCKER_HOST by the Docker
# SDK, no docker CLI needed.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates procps tini \
 && rm -rf /var/lib/apt/lists/*
# The non-root user the manifests run as (runAsUser/runAsGroup 10001). Its
# home is /tmp, the only writable place under a read-only root filesystem.
RUN groupadd --gid 10001 panda-deploy \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin panda-deploy
COPY --from=builder /opt/panda-deploy /opt/panda-deploy
ENV PATH=/opt/panda-deploy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PANDA_DEPLOY_HTTP_PORT=8080
USER 10001:10001
# /metrics (Prometheus) and /healthz (kubelet probes); webhooks (/hooks/) when configured.
EXPOSE 8080
EXPOSE 9292
# Arguments are Kopf run options, e.g. `--standalone` or `--peering=NAME`;
# without a namespace option the operator watches all namespaces. tini runs
# the operator as its child and forwards SIGTERM to it; a manifest that sets
# `command:` replaces this line and must start with `tini --` itself (see
# deploy/manifests/peering).
ENTRYPOINT ["tini", "--", "panda-deploy", "operator"]
