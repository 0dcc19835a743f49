"""Prometheus metrics: few labels, no per-object ones (kube-state-metrics' job).

The run metrics' names are fixed by DESIGN.md; the Grafana dashboard in deploy/grafana reads them. The
continuous-delivery ones below them count what happens beside runs (notifications, webhooks, looks at a
followed branch); each of their labels takes a handful of values the operator itself names.
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

NOTIFICATIONS = Counter(
    'panda_deploy_notifications_total',
    'Notifications by channel (commit_status, webhook) and result (sent; failed: refused or given up after '
    'its retries; dropped: too many waiting).', ['channel', 'result'])
WEBHOOK_REQUESTS = Counter(
    'panda_deploy_webhook_requests_total',
    'Requests to the webhook port by hook (github, generic, other) and the HTTP status answered.', ['hook', 'code'])
BRANCH_LOOKS = Counter(
    'panda_deploy_branch_looks_total',
    'Looks at the head of a followed branch by result (unchanged, moved: a run starts, no_path_changed, '
    'failed).', ['result'])

# The label values known beforehand start at 0, so a rate() or an alert has a series before the first event.
for _channel in ('commit_status', 'webhook'):
    for _result in ('sent', 'failed', 'dropped'):
        NOTIFICATIONS.labels(_channel, _result)
for _hook in ('github', 'generic'):
    WEBHOOK_REQUESTS.labels(_hook, '202')
for _result in ('unchanged', 'moved', 'no_path_changed', 'failed'):
    BRANCH_LOOKS.labels(_result)
