# One set-up path for a fresh machine: every target creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint unit integration e2e demo crd bench clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt -e '.[test]'
	touch $(STAMP)

test: lint
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

# The structure guards (configured in pyproject.toml): any finding fails `make test` and CI.
lint: $(STAMP)
	$(BIN)/ruff check controller tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -ra tests/unit $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/python -m pytest -ra tests/integration $(PYTEST_ARGS)

e2e: $(STAMP)
	$(BIN)/python -m pytest -ra tests/e2e $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/panda-deploy demo

# Every benchmark, then one table of their figures (summaries kept in $(BENCH_OUT)).
# E.g. make bench DEPLOY_BENCH_ARGS='--rounds 9 --concurrency 1,5,20'
BENCH_OUT ?= $(VENV)/bench
DEPLOY_BENCH_ARGS ?=
bench: $(STAMP)
	mkdir -p $(BENCH_OUT)
	$(BIN)/python bench/build_push.py --json $(BENCH_OUT)/build_push.json
	bash -o pipefail -c '$(BIN)/python bench/operator_cost.py | tee $(BENCH_OUT)/operator_cost.txt'
	$(BIN)/python bench/deploy_overhead.py --json $(BENCH_OUT)/deploy_overhead.json $(DEPLOY_BENCH_ARGS)
	bash -o pipefail -c '$(BIN)/python bench/follow_cost.py | tee $(BENCH_OUT)/follow_cost.txt'
	$(BIN)/python bench/codebuild.py --json $(BENCH_OUT)/codebuild.json
	$(BIN)/python bench/table.py $(BENCH_OUT)/build_push.json $(BENCH_OUT)/operator_cost.txt \
	    $(BENCH_OUT)/deploy_overhead.json $(BENCH_OUT)/follow_cost.txt $(BENCH_OUT)/codebuild.json

crd: $(STAMP)
	$(BIN)/panda-deploy crd > crds/pandadeploys.yaml

clean:
	rm -rf $(VENV) .pytest_cache
