"""Prometheus metrics: few labels, no per-object ones (kube-state-metrics' job).

Names are fixed by DESIGN.md; the Grafana dashboard in deploy/grafana reads them.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_STAGE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)
_RUN_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600)

STAGE_DURATION = Histogram(
    'panda_deploy_stage_duration_seconds', 'Time one stage of a run took, by stage and result.',
    ['stage', 'result'], buckets=_STAGE_BUCKETS)
STAGE_FAILURES = Counter(
    'panda_deploy_stage_failures_total', 'Stage failures, by stage and reason.', ['stage', 'reason'])
RUNS = Counter('panda_deploy_runs_total', 'Finished runs, by result.', ['result'])
RUN_DURATION = Histogram(
    'panda_deploy_run_duration_seconds', 'Time from the start of a run to its end.', buckets=_RUN_BUCKETS)
RUNS_IN_PROGRESS = Gauge('panda_deploy_runs_in_progress', 'Runs holding a worker slot now.')
