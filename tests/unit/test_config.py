"""Operator settings: read once from the environment by `Config`, handed to the adapters as arguments."""
from __future__ import annotations

import functools
from typing import Any

import pytest

from controller.adapters import AdapterSettings, BuildLimits, wiring
from controller.config import DEFAULT_ADAPTERS, Config

CALLS: list[tuple[Any, Any, dict[str, Any]]] = []


def recording_wiring(spec: Any, credentials: Any, **settings: Any) -> str:
    """An `AdapterWiring` for PANDA_DEPLOY_ADAPTERS that keeps what it was called with."""
    CALLS.append((spec, credentials, settings))
    return 'adapters'


def test_defaults_when_nothing_is_set() -> None:
    config = Config.from_env({})
    assert config == Config()
    assert (config.workers, config.http_host, config.http_port, config.poll_seconds) == (5, '0.0.0.0', 8080, 5.0)
    assert config.registry is None
    assert config.adapters == DEFAULT_ADAPTERS
    assert config.limits == BuildLimits(checkout_bytes=1024 ** 3, context_bytes=512 * 1024 ** 2,
                                        build_output_bytes=64 * 1024 ** 2)


def test_every_setting_is_read_from_the_environment_given() -> None:
    config = Config.from_env({
        'PANDA_DEPLOY_WORKERS': '3', 'PANDA_DEPLOY_HTTP_HOST': '127.0.0.1', 'PANDA_DEPLOY_HTTP_PORT': '9090',
        'PANDA_DEPLOY_POLL_SECONDS': '0.5', 'PANDA_DEPLOY_REGISTRY': '127.0.0.1:5000',
        'PANDA_DEPLOY_ADAPTERS': 'tests.fakes:make_adapters', 'PANDA_DEPLOY_MAX_CHECKOUT_BYTES': '1000',
        'PANDA_DEPLOY_MAX_CONTEXT_BYTES': '2000', 'PANDA_DEPLOY_MAX_BUILD_OUTPUT_BYTES': '3000'})
    assert config == Config(workers=3, http_host='127.0.0.1', http_port=9090, poll_seconds=0.5,
                            registry='127.0.0.1:5000', adapters='tests.fakes:make_adapters',
                            limits=BuildLimits(checkout_bytes=1000, context_bytes=2000, build_output_bytes=3000))


def test_a_limit_left_unset_keeps_its_default_and_a_limit_must_be_positive() -> None:
    limits = Config.from_env({'PANDA_DEPLOY_MAX_CONTEXT_BYTES': '4096', 'PANDA_DEPLOY_MAX_CHECKOUT_BYTES': ''}).limits
    assert limits == BuildLimits(context_bytes=4096)
    with pytest.raises(ValueError, match='PANDA_DEPLOY_MAX_BUILD_OUTPUT_BYTES must be at least 1'):
        Config.from_env({'PANDA_DEPLOY_MAX_BUILD_OUTPUT_BYTES': '0'})


@pytest.mark.parametrize(('value', 'registry'), [
    ('127.0.0.1:5000', '127.0.0.1:5000'),
    (' registry.local:5000/ ', 'registry.local:5000'),
    ('', None),
    ('  ', None),
])
def test_registry_is_host_port_or_none(value: str, registry: str | None) -> None:
    assert Config.from_env({'PANDA_DEPLOY_REGISTRY': value}).registry == registry


def test_process_environment_is_read_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('PANDA_DEPLOY_REGISTRY', '127.0.0.1:5000')
    monkeypatch.setenv('PANDA_DEPLOY_WORKERS', '2')
    config = Config.from_env()
    assert (config.registry, config.workers) == ('127.0.0.1:5000', 2)


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match='PANDA_DEPLOY_WORKERS must be at least 1'):
        Config.from_env({'PANDA_DEPLOY_WORKERS': '0'})


def test_default_adapter_factory_is_the_real_wiring_with_the_registry_and_limits_bound() -> None:
    limits = BuildLimits(context_bytes=4096)
    factory = Config(registry='127.0.0.1:5000', limits=limits).adapter_factory()
    assert isinstance(factory, functools.partial)
    assert factory.func is wiring.make_adapters
    assert factory.keywords == {'settings': AdapterSettings(registry='127.0.0.1:5000', limits=limits)}
    assert Config().adapter_factory().keywords == {'settings': AdapterSettings()}


def test_named_adapter_wiring_gets_spec_credentials_the_registry_and_the_limits() -> None:
    CALLS.clear()
    config = Config.from_env({'PANDA_DEPLOY_ADAPTERS': f'{__name__}:recording_wiring',
                              'PANDA_DEPLOY_REGISTRY': '127.0.0.1:5000'})
    factory = config.adapter_factory()
    assert factory('spec', 'credentials') == 'adapters'
    assert CALLS == [('spec', 'credentials', {'settings': AdapterSettings(registry='127.0.0.1:5000')})]


def test_adapter_wiring_without_a_function_name_means_make_adapters() -> None:
    factory = Config(adapters='controller.adapters.wiring').adapter_factory()
    assert factory.func is wiring.make_adapters


def test_following_and_webhook_settings() -> None:
    assert (Config().min_interval_seconds, Config().webhook_secret_file, Config().webhook_port) == (30.0, None, 9292)
    config = Config.from_env({'PANDA_DEPLOY_MIN_INTERVAL_SECONDS': '5', 'PANDA_DEPLOY_WEBHOOK_PORT': '9443',
                              'PANDA_DEPLOY_WEBHOOK_SECRET_FILE': '/etc/panda-deploy/webhook/secret'})
    assert (config.min_interval_seconds, config.webhook_secret_file, config.webhook_port) == (
        5.0, '/etc/panda-deploy/webhook/secret', 9443)
    assert Config.from_env({'PANDA_DEPLOY_WEBHOOK_SECRET_FILE': ' '}).webhook_secret_file is None
    with pytest.raises(ValueError, match='PANDA_DEPLOY_MIN_INTERVAL_SECONDS'):
        Config.from_env({'PANDA_DEPLOY_MIN_INTERVAL_SECONDS': '0'})
