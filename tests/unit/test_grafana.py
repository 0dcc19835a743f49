"""deploy/grafana/panda-deploy.json: loads, reads only the metrics controller/metrics.py defines, one datasource.

tests/e2e/test_prometheus.py asks a real Prometheus every expression found here.
"""
from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / 'deploy' / 'grafana' / 'panda-deploy.json'
METRICS_PY = ROOT / 'controller' / 'metrics.py'
DATASOURCE = {'type': 'prometheus', 'uid': '${datasource}'}

# PromQL words that are not series names (functions are told apart by the '(' after them).
KEYWORDS = {'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless',
            'offset', 'inf', 'nan', 'atan2'}


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get('panels', []))  # collapsed rows hold their panels


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t['expr'] for p in all_panels(dashboard['panels']) for t in p.get('targets', []) if 'expr' in t]


def defined_metrics() -> dict[str, str]:
    """Metric name -> type, read from controller/metrics.py's constructor calls."""
    found = re.findall(r"\b(Counter|Gauge|Histogram|Summary)\(\s*'([a-zA-Z_:][a-zA-Z0-9_:]*)'", METRICS_PY.read_text())
    return {name: kind for kind, name in found}


def series_names() -> set[str]:
    """The series names Prometheus stores for those metrics (what a query may select)."""
    names: set[str] = set()
    for name, kind in defined_metrics().items():
        if kind == 'Counter':
            names.add(name if name.endswith('_total') else f'{name}_total')
        elif kind in ('Histogram', 'Summary'):
            names |= {f'{name}_bucket', f'{name}_sum', f'{name}_count'} if kind == 'Histogram' \
                else {name, f'{name}_sum', f'{name}_count'}
        else:
            names.add(name)
    return names


def metric_names(expr: str) -> set[str]:
    """Series names selected by a PromQL expression (a small lexer, enough for dashboards)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    text = re.sub(r'\{[^}]*\}', '{}', text)              # label matchers
    text = re.sub(r'\[[^\]]*\]', '[]', text)             # range and subquery durations ($__rate_interval)
    # label lists of aggregations and vector matching: `sum by (le) (x)` -> `sum (x)`
    text = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', ' ', text)
    names = set()
    for m in re.finditer(r'(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?', text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def test_the_lexer_finds_series_names():
    assert metric_names('histogram_quantile(0.9, sum by (le, stage) (rate(a_bucket{x="y z"}[$__rate_interval])))') \
        == {'a_bucket'}
    assert metric_names('sum(b_total) / on (result) group_left c + d offset 5m') == {'b_total', 'c', 'd'}
    assert metric_names('sum without (instance) (e{job="panda-deploy"}) or vector(0)') == {'e'}


def test_names_outside_metrics_py_are_caught():
    allowed = series_names()
    assert 'panda_deploy_run_duration_seconds' not in allowed, 'a histogram is stored as _bucket, _sum, _count'
    assert not metric_names('rate(panda_deploy_run_total[5m])') <= allowed  # a typo
    assert not metric_names('sum(up)') <= allowed


def test_metrics_py_defines_the_names_design_md_fixes():
    design = {
        'panda_deploy_stage_duration_seconds': 'Histogram',
        'panda_deploy_stage_failures_total': 'Counter',
        'panda_deploy_runs_total': 'Counter',
        'panda_deploy_run_duration_seconds': 'Histogram',
        'panda_deploy_runs_in_progress': 'Gauge',
    }
    # Beside runs (continuous delivery, issue 14): added, never renaming or replacing DESIGN.md's.
    beside_runs = {
        'panda_deploy_notifications_total': 'Counter',
        'panda_deploy_webhook_requests_total': 'Counter',
        'panda_deploy_branch_looks_total': 'Counter',
    }
    assert defined_metrics() == {**design, **beside_runs}


def test_the_dashboard_loads_with_its_uid_and_schema():
    dashboard = load()
    assert dashboard['uid'] == 'panda-deploy'
    assert dashboard['title']
    assert 36 <= dashboard['schemaVersion'] <= 41
    assert 'id' not in dashboard or dashboard['id'] is None, 'an id ties the file to one Grafana instance'


def test_the_datasource_is_a_prometheus_template_variable():
    variables = {v['name']: v for v in load()['templating']['list']}
    assert variables['datasource']['type'] == 'datasource'
    assert variables['datasource']['query'] == 'prometheus'


def test_every_expression_reads_only_metrics_controller_metrics_py_defines():
    allowed = series_names()
    exprs = expressions(load())
    assert exprs
    for expr in exprs:
        names = metric_names(expr)
        assert names, f'no metric in {expr!r}'
        assert names <= allowed, f'{expr!r} reads {sorted(names - allowed)}, not defined in controller/metrics.py'


def test_every_metric_is_on_the_dashboard():
    used = {n for e in expressions(load()) for n in metric_names(e)}
    for name, kind in defined_metrics().items():
        series = {name, f'{name}_bucket', f'{name}_sum', f'{name}_count'}
        assert used & series, f'{name} ({kind}) is on no panel'


@pytest.mark.parametrize('expected', [
    'sum by (result) (rate(panda_deploy_runs_total[$__rate_interval]))',
    'histogram_quantile(0.5, sum by (le, stage) (rate(panda_deploy_stage_duration_seconds_bucket[$__rate_interval])))',
    'histogram_quantile(0.9, sum by (le, stage) (rate(panda_deploy_stage_duration_seconds_bucket[$__rate_interval])))',
    'histogram_quantile(0.99, sum by (le, stage) (rate(panda_deploy_stage_duration_seconds_bucket[$__rate_interval])))',
    'sum by (stage, reason) (increase(panda_deploy_stage_failures_total[$__rate_interval]))',
    'sum(panda_deploy_runs_in_progress)',
    'histogram_quantile(0.99, sum by (le) (rate(panda_deploy_run_duration_seconds_bucket[$__rate_interval])))',
])
def test_the_panels_the_issue_asks_for_are_there(expected: str):
    assert expected in expressions(load())


def test_every_panel_and_target_has_the_datasource():
    for panel in all_panels(load()['panels']):
        if panel['type'] == 'row':
            continue
        assert panel.get('datasource') == DATASOURCE, f'panel {panel.get("title")!r}'
        assert panel.get('targets'), f'panel {panel.get("title")!r} has no query'
        for target in panel['targets']:
            assert target.get('datasource') == DATASOURCE, f'a target of {panel.get("title")!r}'


def test_panel_ids_and_target_refs_are_unique():
    panels = list(all_panels(load()['panels']))
    ids = [p['id'] for p in panels]
    assert len(ids) == len(set(ids)), f'duplicate panel ids: {ids}'
    for panel in panels:
        refs = [t['refId'] for t in panel.get('targets', [])]
        assert len(refs) == len(set(refs)), f'duplicate refIds in {panel["title"]!r}'


def test_panels_do_not_overlap_and_fit_the_grid():
    taken: set[tuple[int, int]] = set()
    for panel in load()['panels']:
        g = panel['gridPos']
        assert g['x'] >= 0 and g['x'] + g['w'] <= 24, panel['title']
        cells = {(x, y) for x in range(g['x'], g['x'] + g['w']) for y in range(g['y'], g['y'] + g['h'])}
        assert not cells & taken, f'{panel["title"]!r} overlaps another panel'
        taken |= cells
