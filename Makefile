# The README's two commands are `make demo` and `make test`; each sets up what it needs first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements/dev.lock
# Debian packages the project needs: Java for Spark, PostgreSQL for the Airflow services test,
# Chromium + ChromeDriver for the UI test and the deck.
DEBIAN_PACKAGES := openjdk-17-jre-headless postgresql chromium chromium-driver docker-compose

export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: test check lint demo setup system-deps lock lock-node wheelhouse bench cost npm figures deck notebook clean

# Lint and format first (pyproject.toml's [tool.ruff]): a style slip fails in seconds, not after the suite.
# Both tiers end with the 15 slowest tests (pyproject.toml's --durations), so growth shows in every log.
# Three workers on two cores, a test file each at a time (loadfile: a module's fixtures and its tests' order stay
# together): with two, the cores were busy 134-138 % of the time, the rest waiting on services, subprocesses and
# I/O (README, "Tests"). Files in collection order, the longest first (tests/conftest.py), not xdist's most-tests-first.
test: setup lint
	$(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder

# The fast loop after each change: every test that needs no JVM, TensorFlow, service, browser or subprocess
# pipeline (the `slow` marker, set by tests/conftest.py for the fixtures that start one). Minutes, not the
# full suite's tens of minutes; pytest's exit 5 (nothing collected) fails it like a failure.
check: setup lint
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: setup
	PYTHONPATH=plugins $(BIN)/python -m fruits.cli.demo

setup: system-deps $(VENV)/.installed npm

# Installs only what is missing, so it is a no-op on a machine that already has everything.
system-deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The Marp CLI (the deck) and mermaid-cli (the diagrams), pinned by package-lock.json, driving Debian's
# Chromium: puppeteer downloads no browser of its own. npm from Debian when the machine has none.
npm: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq npm; }
	PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts
	touch $@

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

# The deck's pictures from the cost model, architecture.md's Mermaid diagrams and the last UI screenshot.
figures: setup
	PYTHONPATH=plugins $(BIN)/python docs/presentation/figures.py

# The deck as PDF and HTML under build/ (not committed), rendered by the Marp CLI with Debian's Chromium.
deck: figures
	CHROME_PATH=/usr/bin/chromium node_modules/.bin/marp --no-stdin --allow-local-files --html \
	  docs/presentation/fruits_pipeline.md --pdf -o build/deck/fruits_pipeline.pdf
	CHROME_PATH=/usr/bin/chromium node_modules/.bin/marp --no-stdin --allow-local-files --html \
	  docs/presentation/fruits_pipeline.md -o build/deck/fruits_pipeline.html

# The notebook executed on the sample (../shared), outputs kept: notebooks/executed/, linked from the README.
notebook: setup
	PYTHONPATH=plugins $(BIN)/python notebooks/execute.py

clean:
	rm -rf $(VENV) build lake
