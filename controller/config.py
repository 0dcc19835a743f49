"""Operator settings from the environment (the names are part of the interface: see README).

This is the one place that reads the operator's own settings (`PANDA_DEPLOY_*`):
every other module gets them from a `Config` (the adapters through
`adapter_factory`), so a test states a setting as an argument instead of
patching the process environment. The libraries' variables stay theirs:
boto3 reads `AWS_*` and the docker SDK `DOCKER_HOST`; child processes (git)
get environments built by the code that starts them.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from collections.abc import Mapping

import pydantic

from controller import egress
from controller.adapters import AdapterFactory, AdapterSettings, AdapterWiring, BuildLimits
from controller.adapters.github_status import DEFAULT_GITHUB_API, GITHUB_API_VARIABLE, GitHubApis
from controller.adapters.notify import NotifySettings, notify_denied
from controller.adapters.webhook import WEBHOOK_HOSTS_VARIABLE
from controller.models import BuildEngine, CodeBuild

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
    registry: str | None = None
    """PANDA_DEPLOY_REGISTRY: `host:port` of a plain OCI registry that receives pushes instead of ECR."""
    adapters: str = DEFAULT_ADAPTERS
    """PANDA_DEPLOY_ADAPTERS: module:function building the adapters of a run (tests put fakes here)."""
    git_hosts: egress.GitHosts = dataclasses.field(default_factory=egress.GitHosts.default)
    """PANDA_DEPLOY_GIT_HOSTS: the git hosts a token may be sent to (controller.egress; default github.com)."""
    health_check_deny: egress.DeniedNetworks = dataclasses.field(default_factory=egress.DeniedNetworks.default)
    """PANDA_DEPLOY_HEALTH_CHECK_DENY: networks a health check never connects to (controller.egress)."""
    min_interval_seconds: float = 30.0
    """PANDA_DEPLOY_MIN_INTERVAL_SECONDS: the shortest spec.source.interval honoured (a shorter one is raised)."""
    webhook_secret_file: str | None = None
    """PANDA_DEPLOY_WEBHOOK_SECRET_FILE: the file (a mounted Secret) holding the webhooks' HMAC secret; unset: none."""
    webhook_port: int = 9292
    """PANDA_DEPLOY_WEBHOOK_PORT: where /hooks/ listens (on PANDA_DEPLOY_HTTP_HOST), when there are webhooks."""
    limits: BuildLimits = dataclasses.field(default_factory=BuildLimits)
    """PANDA_DEPLOY_MAX_CHECKOUT_BYTES, _MAX_CONTEXT_BYTES, _MAX_BUILD_OUTPUT_BYTES: what a repository may cost."""
    notify: NotifySettings = dataclasses.field(default_factory=NotifySettings)
    """PANDA_DEPLOY_GITHUB_API, _WEBHOOK_HOSTS, _NOTIFY_URL: where notifications may go (controller.adapters.notify)."""
    build_engine: BuildEngine | None = None
    """PANDA_DEPLOY_BUILD_ENGINE: docker or codeBuild for every resource, whatever spec.build.engine says."""
    code_build: CodeBuild | None = None
    """PANDA_DEPLOY_CODEBUILD_PROJECT, _SERVICE_ROLE_ARN, _BUCKET: CodeBuild settings of a resource building on
    CodeBuild without spec.build.codeBuild (one forced onto it)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        workers = int(env.get('PANDA_DEPLOY_WORKERS', cls.workers))
        if workers < 1:
            raise ValueError('PANDA_DEPLOY_WORKERS must be at least 1')
        return cls(workers=workers,
                   http_host=env.get('PANDA_DEPLOY_HTTP_HOST', cls.http_host),
                   http_port=int(env.get('PANDA_DEPLOY_HTTP_PORT', cls.http_port)),
                   poll_seconds=float(env.get('PANDA_DEPLOY_POLL_SECONDS', cls.poll_seconds)),
                   registry=env.get('PANDA_DEPLOY_REGISTRY', '').strip().rstrip('/') or None,
                   adapters=env.get('PANDA_DEPLOY_ADAPTERS', cls.adapters),
                   git_hosts=egress.GitHosts.parse(env.get(egress.GIT_HOSTS_VARIABLE, egress.DEFAULT_GIT_HOSTS)),
                   health_check_deny=egress.DeniedNetworks.parse(
                       env.get(egress.HEALTH_CHECK_DENY_VARIABLE, egress.DEFAULT_HEALTH_CHECK_DENY)),
                   limits=_limits(env), notify=_notify(env), min_interval_seconds=_min_interval(env),
                   webhook_secret_file=env.get('PANDA_DEPLOY_WEBHOOK_SECRET_FILE', '').strip() or None,
                   webhook_port=int(env.get('PANDA_DEPLOY_WEBHOOK_PORT', cls.webhook_port)),
                   build_engine=_build_engine(env), code_build=_code_build(env))

    def adapter_factory(self) -> AdapterFactory:
        """The `AdapterWiring` PANDA_DEPLOY_ADAPTERS names, with this configuration's settings bound."""
        module, _, name = self.adapters.partition(':')
        wiring: AdapterWiring = getattr(importlib.import_module(module), name or 'make_adapters')
        return functools.partial(wiring, settings=self.adapter_settings())

    def adapter_settings(self) -> AdapterSettings:
        return AdapterSettings(registry=self.registry, git_hosts=self.git_hosts,
                               health_check_deny=self.health_check_deny, limits=self.limits,
                               build_engine=self.build_engine, code_build=self.code_build)


_LIMITS = {'checkout_bytes': 'PANDA_DEPLOY_MAX_CHECKOUT_BYTES', 'context_bytes': 'PANDA_DEPLOY_MAX_CONTEXT_BYTES',
           'build_output_bytes': 'PANDA_DEPLOY_MAX_BUILD_OUTPUT_BYTES'}


def _limits(env: Mapping[str, str]) -> BuildLimits:
    """The byte limits set in `env` (whole numbers of bytes, at least 1), the defaults for the others."""
    given: dict[str, int] = {}
    for field, variable in _LIMITS.items():
        if env.get(variable, '').strip():
            value = int(env[variable])
            if value < 1:
                raise ValueError(f'{variable} must be at least 1 (bytes)')
            given[field] = value
    return BuildLimits(**given)


def _notify(env: Mapping[str, str]) -> NotifySettings:
    """Where notifications may go: GitHub APIs, webhook hosts (not file://), the link; never the deny-list."""
    try:
        hooks = egress.GitHosts.parse(env.get(WEBHOOK_HOSTS_VARIABLE, ''))
    except ValueError as exc:
        raise ValueError(str(exc).replace(egress.GIT_HOSTS_VARIABLE, WEBHOOK_HOSTS_VARIABLE)) from None
    if any(entry.scheme == 'file' for entry in hooks.entries):
        raise ValueError(f'{WEBHOOK_HOSTS_VARIABLE}: file:// is not a webhook host')
    deny = egress.DeniedNetworks.parse(env.get(egress.HEALTH_CHECK_DENY_VARIABLE, egress.DEFAULT_HEALTH_CHECK_DENY))
    return NotifySettings(github_apis=GitHubApis.parse(env.get(GITHUB_API_VARIABLE, DEFAULT_GITHUB_API)),
                          webhook_hosts=hooks, target_url=env.get('PANDA_DEPLOY_NOTIFY_URL', '').strip() or None,
                          denied=notify_denied(deny))


def _min_interval(env: Mapping[str, str]) -> float:
    value = float(env.get('PANDA_DEPLOY_MIN_INTERVAL_SECONDS', Config.min_interval_seconds))
    if not value > 0:
        raise ValueError('PANDA_DEPLOY_MIN_INTERVAL_SECONDS must be more than 0')
    return value


def _build_engine(env: Mapping[str, str]) -> BuildEngine | None:
    value = env.get('PANDA_DEPLOY_BUILD_ENGINE', '').strip()
    if not value:
        return None
    try:
        return BuildEngine(value)
    except ValueError:
        raise ValueError(f'PANDA_DEPLOY_BUILD_ENGINE must be docker or codeBuild, not {value!r}') from None


_CODE_BUILD = {'project': 'PANDA_DEPLOY_CODEBUILD_PROJECT', 'service_role_arn': 'PANDA_DEPLOY_CODEBUILD_SERVICE_ROLE_ARN',
               'source_bucket': 'PANDA_DEPLOY_CODEBUILD_BUCKET'}


def _code_build(env: Mapping[str, str]) -> CodeBuild | None:
    """The operator's CodeBuild settings, or None when none is set; a malformed one names its variable."""
    given = {field: env[variable].strip() for field, variable in _CODE_BUILD.items() if env.get(variable, '').strip()}
    if not given:
        return None
    for field, value in given.items():
        try:
            CodeBuild.model_validate({field: value})
        except pydantic.ValidationError:
            raise ValueError(f'{_CODE_BUILD[field]} is not a valid {field}: {value!r}') from None
    return CodeBuild.model_validate(given)
