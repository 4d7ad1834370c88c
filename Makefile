# Vitals Lake: every target bootstraps its own virtualenv (idempotent; reused on a second run).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

DEMO_PATIENTS ?= 300
DEMO_DURATION ?= 120

.PHONY: help venv lock demo test test-fast test-property test-pipeline test-infra test-integration test-e2e lint fmt clean train evaluate bench infra-names checkov flex-build flex-run flex-update flex-drain

help:
	@echo "make demo   - the whole system end to end on local real services (DEMO_PATIENTS, DEMO_DURATION)"
	@echo "make test   - the whole test suite (unit, TestStream, integration on real services, end to end)"
	@echo "make test-fast - the unit tier alone (needs only the venv); make test-<tier>: property, pipeline, infra, integration, e2e"
	@echo "make lint   - ruff, mypy and the import-linter contracts"
	@echo "make train  - simulate a labelled cohort and train the anomaly model into var/ml/model"
	@echo "make evaluate - every detector side by side on a simulated cohort (var/ml/report.md), the model, a real-data sanity run"
	@echo "make bench  - benchmarks: variants measured side by side, ratios printed, var/bench/results.json"
	@echo "make clean  - remove var/ (run folders, demo lake)"
	@echo "make lock   - after changing dependencies: re-resolve uv.lock and requirements/image.txt"
	@echo "make checkov / infra-names / flex-build / flex-run / flex-update / flex-drain - cloud deployment (docs/deploy.md)"

venv: $(STAMP)

# Every install comes from uv.lock. `uv sync --locked` refuses a lock that no longer matches
# pyproject.toml (run `make lock`), then installs exactly the locked versions: the project editable,
# every extra ([local], [ml], [dev]); what the lock does not hold is removed. uv is a PyPI wheel: the
# bootstrap installs UV_VERSION, the one uv.lock holds too (tests/infra/test_packaging.py checks).
# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on CI machines) nothing writes .pyc files, so
# every process compiled its imports anew: importing the pipeline took 6.0 s against 2.7 s compiled.
UV_VERSION := 0.13.9

$(BIN)/uv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(BIN)/uv
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --locked --all-extras --compile-bytecode --quiet
	@touch $(STAMP)

# After changing dependencies in pyproject.toml: re-resolve uv.lock, and export the image's part of it
# (the runtime and the wheel build tools, with hashes) for infra/dataflow/Dockerfile.
lock: | $(BIN)/uv
	$(BIN)/uv lock
	$(BIN)/uv export --frozen --no-default-groups --group build --no-emit-project --format requirements-txt -o requirements/image.txt --quiet
	$(BIN)/uv export --frozen --only-group function --no-emit-project --format requirements-txt -o functions/alert_notifier/requirements.txt --quiet

demo: $(STAMP)
	$(PY) -m harness.demo --patients $(DEMO_PATIENTS) --duration $(DEMO_DURATION)

# Test tiers by cost: a test's folder tests/<tier>/ is its pytest marker (tests/conftest.py), so
# `make test-<tier>` == `pytest -m <tier>`. test-fast is the unit tier: it needs nothing but the venv.
test: $(STAMP)
	$(PY) -m harness.stack.bigquery bootstrap
	$(PY) infra/checkov/checkov_venv.py bootstrap
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest tests/unit

test-property test-pipeline: test-%: $(STAMP)
	$(PY) -m pytest tests/$*

test-infra: $(STAMP)
	$(PY) infra/checkov/checkov_venv.py bootstrap
	$(PY) -m pytest tests/infra

test-integration test-e2e: test-%: $(STAMP)
	$(PY) -m harness.stack.bigquery bootstrap
	$(PY) -m pytest tests/$*

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy vitals_lake pipelines warehouse deploy ml simulator dashboard harness bench
	$(BIN)/mypy functions/alert_notifier
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

train: $(STAMP)
	$(PY) -m simulator --fast --sink jsonl --patients 200 --duration 24h --interval 60s --seed 42 --out var/ml/sim --quiet
	$(PY) -m ml.train --readings var/ml/sim/readings.jsonl --labels var/ml/sim/labels.jsonl --out var/ml/model

# Evaluation simulates the default cohort into var/ml/sim, trains the deployable artifact on it, and
# runs that artifact on real unlabelled wearable recordings (vitaldsp) as a false-alarm sanity check.
evaluate: $(STAMP)
	$(PY) -m ml.evaluate --out var/ml
	$(PY) -m ml.train --readings var/ml/sim/readings.jsonl --labels var/ml/sim/labels.jsonl --out var/ml/model
	$(PY) -m ml.vitaldsp_sanity --model var/ml/model --out var/ml

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf var

# Cloud deployment (docs/deploy.md). Names Terraform uses are generated from the contract.
FLEX := $(PY) infra/dataflow/flex.py --from-terraform infra/terraform $(if $(DRY_RUN),--dry-run)

infra-names: $(STAMP)
	$(PY) -m deploy.infra_names --write

checkov: $(STAMP)
	$(PY) infra/checkov/checkov_venv.py run

flex-build: $(STAMP)
	$(FLEX) build $(if $(TAG),--tag $(TAG))

flex-run: $(STAMP)
	@test -n "$(TAG)" || { echo "usage: make flex-run TAG=<tag printed by make flex-build>"; exit 2; }
	$(FLEX) run --tag $(TAG)

flex-update: $(STAMP)
	@test -n "$(TAG)" || { echo "usage: make flex-update TAG=<tag>"; exit 2; }
	$(FLEX) update --tag $(TAG)

flex-drain: $(STAMP)
	$(FLEX) drain
