# RecLoop developer commands. `make dev` runs the product locally; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export SAM_CLI_TELEMETRY := 0
export AWS_EC2_METADATA_DISABLED := true

PYTHON_BOOTSTRAP ?= $(shell PYENV_VERSION=3.12 pyenv which python3.12 2>/dev/null || command -v python3.12 || echo python3.12)
VENV := .venv
PY := $(VENV)/bin/python
SAM := $(VENV)/bin/sam
STAMP := $(VENV)/.installed
BUILD_DIR := .aws-sam/build
SOURCES := $(shell find functions layers -type f \( -name '*.py' -o -name 'requirements.txt' \) 2>/dev/null)

.PHONY: help setup dev down test unit lint build bench bench-replay bench-training bench-online clean

help:
	@echo "make dev    run RecLoop locally (API on http://localhost:8000) until Ctrl-C"
	@echo "make down   stop what 'make dev' started (from another shell)"
	@echo "make test   install what is needed and run every test"
	@echo "make unit   fast tests only (no sam build)"
	@echo "make lint   ruff, lint-imports (layering), sam validate --lint, cfn-lint"
	@echo "make bench  latency benchmarks, JSON on stdout"
	@echo "make bench-replay    replay benchmark on the shared MovieTweetings data (HR@10, NDCG@10)"
	@echo "make bench-training  lgbm training time on 1M synthetic interactions"
	@echo "make bench-online    online-update cost (1000-event buffer) and Kinesis batch throughput, JSON"
	@echo "make build  sam build into $(BUILD_DIR)"

setup: $(STAMP)

$(STAMP): requirements-dev.txt layers/core/requirements.txt layers/numeric/requirements.txt layers/core/pyproject.toml
	test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(BUILD_DIR)/template.yaml: $(STAMP) template.yaml $(SOURCES)
	$(SAM) build --cached --parallel

build: $(BUILD_DIR)/template.yaml

dev: $(STAMP)
	$(PY) -m local.dev

down:
	-$(PY) -m local.dev --down

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(SAM) validate --lint
	$(SAM) validate --region us-east-1
	$(VENV)/bin/cfn-lint template.yaml

unit: $(STAMP)
	$(PY) -m pytest tests -m "not build and not e2e" -q

test: $(STAMP) build
	$(PY) -m pytest tests --cov --cov-report=term --cov-fail-under=85 -q

bench: $(STAMP)
	@$(MAKE) --no-print-directory build >&2  # stdout is the JSON report alone
	@$(PY) -m bench

MOVIETWEETINGS ?= ../shared/data/movietweetings-100k
bench-replay: $(STAMP)
	$(PY) -m bench.replay --movietweetings $(MOVIETWEETINGS) --config popularity --config trending --config realtime \
		--config static_mf --config static_lgbm --config online_features_only --config online \
		--config implicit_als --config implicit_als_retrain --json

bench-training: $(STAMP)
	$(PY) -m bench.training --interactions 1000000

bench-online: $(STAMP)
	@$(PY) -m bench.online_update

clean:
	rm -rf .aws-sam .pytest_cache .coverage
