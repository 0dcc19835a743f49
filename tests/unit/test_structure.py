"""The structure guards hold, and each of them fails when the structure breaks.

`make lint` (run by `make test` and CI) runs ruff, import-linter and mypy with
the settings in pyproject.toml. These tests add the two limits no linter
states (module and function length) and show, on a copy of the package with
one violation injected, that each guard really refuses it: a guard that cannot
fail guards nothing.
"""
from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / 'controller'
BIN = pathlib.Path(sys.executable).parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
# qualified name -> why it may be longer (none today; add one only with its reason).
LONG_FUNCTIONS: dict[str, str] = {}


def modules() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob('*.py'))


def test_no_module_is_over_the_line_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f'split these modules (limit {MAX_MODULE_LINES} lines)'


def long_functions(path: pathlib.Path, *, root: pathlib.Path = ROOT) -> dict[str, int]:
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f'{prefix}{child.name}'
                if not isinstance(child, ast.ClassDef):
                    lines = (child.end_lineno or child.lineno) - child.lineno + 1
                    if lines > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS:
                        found[name] = lines
                visit(child, f'{name}.')

    module = '.'.join(path.relative_to(root).with_suffix('').parts)
    visit(ast.parse(path.read_text()), f'{module}:')
    return found


def test_no_function_is_over_the_line_limit_without_a_reason() -> None:
    long: dict[str, int] = {}
    for path in modules():
        long.update(long_functions(path))
    assert long == {}, f'split these functions into named steps (limit {MAX_FUNCTION_LINES} lines)'


def test_the_length_check_finds_a_long_function(tmp_path: pathlib.Path) -> None:
    body = '\n'.join(f'        x{i} = {i}' for i in range(MAX_FUNCTION_LINES))
    sample = tmp_path / 'controller' / 'sample.py'
    sample.parent.mkdir()
    sample.write_text(f'class A:\n    def f(self):\n{body}\n')
    assert long_functions(sample, root=tmp_path) == {'controller.sample:A.f': MAX_FUNCTION_LINES + 1}


@pytest.fixture
def copy(tmp_path: pathlib.Path) -> pathlib.Path:
    """The package and its pyproject.toml in a directory of their own, to break on purpose."""
    shutil.copytree(PACKAGE, tmp_path / 'controller', ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(ROOT / 'pyproject.toml', tmp_path / 'pyproject.toml')
    return tmp_path


def guard(copy: pathlib.Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / command[0]), *command[1:]], cwd=copy, capture_output=True, text=True,
                          timeout=300, env={'PATH': str(BIN) + ':/usr/bin:/bin', 'PYTHONPATH': str(copy),
                                            'HOME': str(copy)})


def inject(copy: pathlib.Path, module: str, line: str) -> None:
    path = copy / module
    text = path.read_text()
    head, _, rest = text.partition('from __future__ import annotations\n')
    path.write_text(f'{head}from __future__ import annotations\n{line}\n{rest}')


def test_import_linter_refuses_boto3_in_a_stage(copy: pathlib.Path) -> None:
    assert guard(copy, 'lint-imports').returncode == 0
    inject(copy, 'controller/pipeline/verify.py', 'import boto3  # noqa: F401')
    result = guard(copy, 'lint-imports')
    assert result.returncode == 1, result.stdout
    assert 'controller.pipeline.verify -> boto3' in result.stdout


def test_import_linter_refuses_an_upward_import(copy: pathlib.Path) -> None:
    inject(copy, 'controller/pipeline/stage.py', 'import controller.reconciler  # noqa: F401')
    result = guard(copy, 'lint-imports')
    assert result.returncode == 1, result.stdout
    assert 'controller.pipeline.stage -> controller.reconciler' in result.stdout


def test_import_linter_refuses_the_sandbox_in_production_code(copy: pathlib.Path) -> None:
    inject(copy, 'controller/adapters/http.py', 'import controller.sandbox.aws  # noqa: F401')
    result = guard(copy, 'lint-imports')
    assert result.returncode == 1, result.stdout
    assert 'controller.adapters.http -> controller.sandbox' in result.stdout


def test_ruff_refuses_a_function_over_the_complexity_limit(copy: pathlib.Path) -> None:
    branches = '\n'.join(f'    if x == {i}:\n        return {i}' for i in range(13))
    (copy / 'controller' / 'tangled.py').write_text(f'def choose(x: int) -> int:\n{branches}\n    return -1\n')
    result = guard(copy, 'ruff', 'check', 'controller')
    assert result.returncode == 1, result.stdout
    assert 'C901 `choose` is too complex (14 > 12)' in result.stdout


def test_mypy_strict_refuses_an_untyped_function(copy: pathlib.Path) -> None:
    (copy / 'controller' / 'untyped.py').write_text('def double(x):\n    return x * 2\n')
    result = guard(copy, 'mypy', '--follow-imports=silent', 'controller/untyped.py')
    assert result.returncode == 1, result.stdout
    assert 'Function is missing a type annotation' in result.stdout
