# The README's two commands are `make demo` and `make test`; each sets up what it needs first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/dev.lock
# Debian packages the project needs: Java for Spark, PostgreSQL for the Airflow services test,
# Chromium + ChromeDriver for the UI test.
DEBIAN_PACKAGES := openjdk-17-jre-headless postgresql chromium chromium-driver docker-compose

export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: test demo setup system-deps lock lock-node wheelhouse bench cost clean

# Lint and format first (pyproject.toml's [tool.ruff]): a style slip fails in seconds, not after the suite.
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

demo: setup
	PYTHONPATH=plugins $(BIN)/python -m fruits.cli.demo

setup: system-deps $(VENV)/.installed

# Installs only what is missing, so it is a no-op on a machine that already has everything.
system-deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r $(LOCK)
	touch $@

# Re-resolve requirements/dev.in and freeze the result: the only way dev.lock changes.
lock:
	rm -rf build/lock-venv && $(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install -q --upgrade pip
	build/lock-venv/bin/python -m pip install -q -r requirements/dev.in
	( echo "# Frozen from requirements/dev.in by \`make lock\`: do not edit by hand."; \
	  build/lock-venv/bin/python -m pip freeze --exclude-editable ) > $(LOCK)

# The EMR nodes' environment, hash-locked for x86_64 and aarch64 (from PyPI's metadata, no download).
lock-node: setup
	PYTHONPATH=plugins $(BIN)/python -m fruits.release lock

# Both machines' locked wheels into build/wheelhouse/ (pip checks every hash); publish them with
# `python -m fruits.release publish-wheelhouse --lake s3://<bucket>` (infra/README.md).
wheelhouse: setup
	PYTHONPATH=plugins $(BIN)/python -m fruits.release download --dest build/wheelhouse

bench: setup
	$(BIN)/python benchmarks/inference_throughput.py

# The bill of a year (night 1 beside night 365, the month at 10k/100k/1M photos a night, targets), then
# what a nightly million costs against the alternatives, from the measured throughputs (docs/costs.md).
cost: setup
	PYTHONPATH=plugins $(BIN)/python -m fruits.cli.costs bill
	PYTHONPATH=plugins $(BIN)/python -m fruits.cli.costs compare --images 1000000

clean:
	rm -rf $(VENV) build lake
