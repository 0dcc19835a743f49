"""Operator settings from the environment (the names are part of the interface: see README)."""
from __future__ import annotations

import dataclasses
import importlib
import os

from controller import egress
from controller.adapters import AdapterFactory

DEFAULT_ADAPTERS = 'controller.adapters.wiring:make_adapters'


@dataclasses.dataclass(frozen=True)
class Config:
    workers: int = 5
    """PANDA_DEPLOY_WORKERS: runs at once (and worker threads)."""
    http_host: str = '0.0.0.0'
    """PANDA_DEPLOY_HTTP_HOST: where /metrics and /healthz listen."""
    http_port: int = 8080
    """PANDA_DEPLOY_HTTP_PORT."""
    poll_seconds: float = 5.0
    """PANDA_DEPLOY_POLL_SECONDS: how often CodeDeploy progress is polled."""
    adapters: str = DEFAULT_ADAPTERS
    """PANDA_DEPLOY_ADAPTERS: module:function building the adapters of a run (tests put fakes here)."""
    git_hosts: egress.GitHosts = dataclasses.field(default_factory=egress.GitHosts.default)
    """PANDA_DEPLOY_GIT_HOSTS: the git hosts a token may be sent to (controller.egress; default github.com)."""
    health_check_deny: egress.DeniedNetworks = dataclasses.field(default_factory=egress.DeniedNetworks.default)
    """PANDA_DEPLOY_HEALTH_CHECK_DENY: networks a health check never connects to (controller.egress)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        env = dict(os.environ) if env is None else env
        workers = int(env.get('PANDA_DEPLOY_WORKERS', cls.workers))
        if workers < 1:
            raise ValueError('PANDA_DEPLOY_WORKERS must be at least 1')
        return cls(workers=workers,
                   http_host=env.get('PANDA_DEPLOY_HTTP_HOST', cls.http_host),
                   http_port=int(env.get('PANDA_DEPLOY_HTTP_PORT', cls.http_port)),
                   poll_seconds=float(env.get('PANDA_DEPLOY_POLL_SECONDS', cls.poll_seconds)),
                   adapters=env.get('PANDA_DEPLOY_ADAPTERS', cls.adapters),
                   git_hosts=egress.GitHosts.parse(env.get(egress.GIT_HOSTS_VARIABLE, egress.DEFAULT_GIT_HOSTS)),
                   health_check_deny=egress.DeniedNetworks.parse(
                       env.get(egress.HEALTH_CHECK_DENY_VARIABLE, egress.DEFAULT_HEALTH_CHECK_DENY)))

    def adapter_factory(self) -> AdapterFactory:
        module, _, name = self.adapters.partition(':')
        factory: AdapterFactory = getattr(importlib.import_module(module), name or 'make_adapters')
        return factory
