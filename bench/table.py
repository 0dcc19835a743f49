"""One table from the benchmarks' summaries (`make bench`).

    .venv/bin/python bench/table.py SUMMARY...

Each SUMMARY is either the JSON a benchmark wrote with `--json FILE`
({"bench", "machine", "rows": [[item, measure, value, target], ...]}) or the
captured standard output of one (its markdown table rows are taken as they
are: `| item | measure | value | target |`, or `| measure | value |`, and its
`machine:` line). Prints one markdown table, with the machine line(s) above it,
and below it deploy_overhead's rollout strategies side by side (overhead
ratio and API writes per rollout, CodeDeploy beside ECS's own).
"""
from __future__ import annotations

import json
import pathlib
import sys


def strategies(path: pathlib.Path) -> list[str]:
    """deploy_overhead's item 1 side by side, one line per rollout strategy (CodeDeploy first); none for other
    summaries or an older one."""
    found = json.loads(path.read_text()).get('item1') if path.suffix == '.json' else None
    if not isinstance(found, list) or not found:
        return []
    lines = ['| rollout strategy | operator (s) | plain script (s) | ratio | Kubernetes API writes per rollout |',
             '|---|---|---|---|---|']
    for one in found:
        o, s = one['operator_median']['total'], one['script_median']['total']
        lines.append(f'| {one["strategy"]} | {o:.2f} | {s:.2f} | {o / s:.3f} | {one["writes"]} |')
    return lines


def from_json(path: pathlib.Path) -> tuple[str, str, list[list[str]]]:
    data = json.loads(path.read_text())
    return str(data['bench']), str(data.get('machine', '')), [[str(c) for c in row] for row in data['rows']]


def from_output(path: pathlib.Path) -> tuple[str, str, list[list[str]]]:
    """The last markdown table in a benchmark's output, rows padded to (item, measure, value, target)."""
    machine, tables, current = '', [], []
    for line in path.read_text(errors='replace').splitlines():
        if line.startswith('machine:'):
            machine = line.removeprefix('machine:').strip()
        if line.startswith('|'):
            current.append([cell.strip() for cell in line.strip().strip('|').split('|')])
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    if not tables:
        raise SystemExit(f'{path}: no markdown table found')
    header, *body = tables[-1]
    rows = [cells for cells in body if not all(set(c) <= set('-: ') for c in cells)]
    padded = []
    for cells in rows:
        if len(cells) == 2:
            cells = ['', *cells, '']
        elif len(cells) == 3:
            cells = ['', *cells]
        padded.append(cells[:4])
    return path.stem, machine, padded


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    machines: dict[str, list[str]] = {}
    rows: list[list[str]] = []
    for name in argv:
        path = pathlib.Path(name)
        bench, machine, found = from_json(path) if path.suffix == '.json' else from_output(path)
        if machine:
            machines.setdefault(machine, []).append(bench)
        rows += [[bench, *row] for row in found]
    print()
    for machine, benches in machines.items():
        print(f'machine: {machine} ({", ".join(benches)})')
    print('| benchmark | item | measure | value | target |')
    print('|---|---|---|---|---|')
    for row in rows:
        print('| ' + ' | '.join(cell.replace('|', '/') for cell in row) + ' |')
    side_by_side = [line for name in argv for line in strategies(pathlib.Path(name))]
    if side_by_side:
        print()
        print('\n'.join(side_by_side))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
