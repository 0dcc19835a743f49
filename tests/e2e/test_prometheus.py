"""A real Prometheus (Debian's `prometheus`) scrapes the operator during an end-to-end run.

Every expression of the Grafana dashboard (deploy/grafana/panda-deploy.json) is
then asked over Prometheus's HTTP API and must return data, and `promtool check
metrics` must pass on the operator's /metrics text. Where the binaries are
missing the test skips, or fails where CI is set.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, Cluster, Operator, free_port, wait_for
from tests.e2e.test_operator import SECRETS, SPEC
from tests.fakes import World

DASHBOARD = ROOT / 'deploy' / 'grafana' / 'panda-deploy.json'
APT = 'apt-get install -y prometheus'
# Grafana's interval variables, as Grafana would fill them in for a short time range.
GRAFANA_VARIABLES = {'$__rate_interval': '1m', '$__interval': '15s', '$__range': '5m'}


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        message = f'{binary} is not installed (Debian: {APT})'
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
    return path


def dashboard_expressions() -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get('panels', []))
    doc = json.loads(DASHBOARD.read_text())
    return [t['expr'] for p in panels(doc['panels']) for t in p.get('targets', []) if t.get('expr')]


def with_grafana_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert '$' not in expr, f'a Grafana variable this test does not fill in: {expr}'
    return expr


class Prometheus:
    """`prometheus` in a subprocess scraping the operator every second, and its HTTP API."""

    def __init__(self, binary: str, tmp_path: pathlib.Path, target: str) -> None:
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        config = {'global': {'scrape_interval': '1s', 'scrape_timeout': '1s', 'evaluation_interval': '1s'},
                  'scrape_configs': [{'job_name': 'panda-deploy', 'static_configs': [{'targets': [target]}]}]}
        self.config = tmp_path / 'prometheus.yml'
        self.config.write_text(yaml.safe_dump(config))
        self.log_path = tmp_path / 'prometheus.log'
        self.process = subprocess.Popen(
            [binary, f'--config.file={self.config}', f'--storage.tsdb.path={tmp_path / "tsdb"}',
             f'--web.listen-address=127.0.0.1:{self.port}', '--log.level=warn'],
            stdout=self.log_path.open('ab'), stderr=subprocess.STDOUT, cwd=tmp_path)

    def log(self) -> str:
        return self.log_path.read_text(errors='replace')

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f'prometheus exited with {self.process.returncode}:\n{self.log()}')
        try:
            with urllib.request.urlopen(f'{self.url}/-/ready', timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f'{self.url}/api/v1/query?' + urllib.parse.urlencode({'query': expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body['status'] == 'success', f'{expr}: {body}'
        assert body['data']['resultType'] == 'vector', f'{expr}: {body["data"]["resultType"]}'
        return body['data']['result']

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]['value'][1]) if result else None

    def scrapes(self) -> int:
        """Successful scrapes of the operator in the last five minutes."""
        return int(self.value('sum_over_time(up{job="panda-deploy"}[5m])') or 0)

    def wait_for_scrapes(self, count: int) -> None:
        target = self.scrapes() + count
        wait_for(lambda: self.scrapes() >= target, timeout=30, what=f'{count} more scrapes of the operator')

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


# Looked up as the tests' first fixtures, so a missing binary skips before the operator starts.
@pytest.fixture
def prometheus_binary() -> str:
    return need('prometheus')


@pytest.fixture
def promtool() -> str:
    return need('promtool')


@pytest.fixture
def prometheus(prometheus_binary: str, operator: Operator, tmp_path: pathlib.Path) -> Iterator[Prometheus]:
    prom = Prometheus(prometheus_binary, tmp_path, f'127.0.0.1:{operator.port}')
    try:
        wait_for(prom.ready, timeout=30, what='prometheus to be ready')
        wait_for(lambda: prom.value('up{job="panda-deploy"}') == 1, timeout=30, what='a scrape of the operator')
        yield prom
    finally:
        prom.stop()
        print(prom.log()[-3000:])


def test_prometheus_answers_every_dashboard_query(prometheus_binary: str, cluster: Cluster, operator: Operator,
                                                   world: World, prometheus: Prometheus):
    # Runs start after the first scrape, so counters and histograms move under Prometheus's eyes.
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.ready('app'), what='app Ready')
    wait_for(lambda: prometheus.value('panda_deploy_runs_total{result="Succeeded"}') == 1, timeout=30,
             what='Prometheus to see the first run')
    cluster.patch('app', {'spec': {'healthCheck': {'checks': 2}}})  # a second rollout
    wait_for(lambda: cluster.ready('app') and cluster.status('app')['observedGeneration'] == 2,
             what='app Ready for generation 2')
    world.set_script(fail={'ecs.ensure_service': 'cluster panda-cluster does not exist'})  # after app is done
    cluster.create('broken', SPEC)
    wait_for(lambda: cluster.finished('broken'), what='broken to end')
    assert cluster.status('broken')['phase'] == 'Failed'
    wait_for(lambda: prometheus.value('sum(panda_deploy_runs_total)') == 3, timeout=30,
             what='Prometheus to see all three runs')
    prometheus.wait_for_scrapes(2)

    exprs = dashboard_expressions()
    assert exprs
    answers = {expr: prometheus.query(with_grafana_variables(expr)) for expr in exprs}
    empty = [expr for expr, result in answers.items() if not result]
    assert not empty, 'queries that returned no data:\n' + '\n'.join(empty)

    def values(expr: str) -> dict[str, float]:
        return {json.dumps(r['metric'], sort_keys=True): float(r['value'][1]) for r in answers[expr]}

    # The figures behind the panels are the runs this test made, not just any series.
    by_result = 'sum by (result) (rate(panda_deploy_runs_total[$__rate_interval]))'
    assert {json.loads(k)['result'] for k in values(by_result)} >= {'Succeeded', 'Failed'}
    failures = 'sum by (stage, reason) (increase(panda_deploy_stage_failures_total[$__rate_interval]))'
    assert {(json.loads(k)['stage'], json.loads(k)['reason']) for k in values(failures)} \
        == {('Service', 'ServiceUpdateFailed')}
    run_p50 = 'histogram_quantile(0.5, sum by (le) (rate(panda_deploy_run_duration_seconds_bucket[$__rate_interval])))'
    assert all(math.isfinite(v) and v > 0 for v in values(run_p50).values()), values(run_p50)
    stage_p90 = ('histogram_quantile(0.9, sum by (le, stage) '
                 '(rate(panda_deploy_stage_duration_seconds_bucket[$__rate_interval])))')
    finite = {json.loads(k)['stage'] for k, v in values(stage_p90).items() if math.isfinite(v)}
    assert finite, f'no stage with a p90 after two rollouts: {values(stage_p90)}'
    assert values('sum(panda_deploy_runs_in_progress)') == {'{}': 0.0}


def test_promtool_check_metrics_passes_on_the_operators_metrics(promtool: str, cluster: Cluster,
                                                                 operator: Operator, world: World):
    cluster.apply_secrets(**SECRETS)
    cluster.create('app', SPEC)
    wait_for(lambda: cluster.ready('app'), what='app Ready')
    world.set_script(fail={'ecs.ensure_service': 'cluster panda-cluster does not exist'})
    cluster.create('broken', SPEC)
    wait_for(lambda: cluster.finished('broken'), what='broken to end')
    text = operator.metrics()
    # every family of ours is in the text, with labelled series, so promtool lints them all
    for family in ('panda_deploy_stage_duration_seconds_bucket', 'panda_deploy_stage_failures_total',
                   'panda_deploy_runs_total', 'panda_deploy_run_duration_seconds_bucket',
                   'panda_deploy_runs_in_progress'):
        assert re.search(rf'^{family}[{{ ]', text, re.M), family
    done = subprocess.run([promtool, 'check', 'metrics'], input=text, capture_output=True, text=True, timeout=60)
    output = (done.stdout + done.stderr).strip()
    print(f'promtool check metrics: exit {done.returncode}\n{output}')
    assert done.returncode == 0, f'promtool check metrics failed ({done.returncode}):\n{output}'
    ours = [line for line in output.splitlines() if line.startswith('panda_deploy_')]
    assert not ours, 'promtool complains about our metrics:\n' + '\n'.join(ours)
