# Safeshare — the two commands a newcomer needs are `make run` and `make test`.
# Everything else (virtualenv, Python packages, Kafka jars, a local broker) is
# set up on demand by these targets.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py | sha256sum | cut -c1-12)

.PHONY: run test check bench fuzz lint kafka-up kafka-down kafka-status venv setup screenshots clean help

help:
	@echo "make run        start Kafka if none is configured, play the MASH scenario end to end"
	@echo "make test       run the test suite against a real Kafka (started if needed)"
	@echo "make bench      print benchmark figures"
	@echo "make fuzz       hostile corpus + 100,000 mutated inputs through the router core"
	@echo "make check      ruff + mypy + every test that needs no Kafka, JVM or Go modules"
	@echo "make lint       ruff + mypy"
	@echo "make kafka-up   leave a local Kafka running; last line is its bootstrap address"
	@echo "make kafka-down stop the local Kafka"

venv: $(STAMP)

# System packages the project needs, installed only where missing (run as root):
# Java and Maven for the local Kafka broker (and the JDK's javac for the Avro Java
# cross-check, tests/test_codec_java_interop.py), chromium for the workspace's browser tests.
setup:
	@need=""; \
	command -v javac >/dev/null || need="$$need openjdk-17-jdk-headless"; \
	command -v mvn >/dev/null || need="$$need maven"; \
	command -v chromium >/dev/null || need="$$need chromium"; \
	ldconfig -p | grep -q libpangoft2-1.0 || need="$$need libpango-1.0-0 libpangoft2-1.0-0"; \
	if [ -n "$$need" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need; fi
	@$(MAKE) --no-print-directory venv

$(STAMP): pyproject.toml setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@command -v java >/dev/null || { echo "Java 17+ is required (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required (apt-get install maven)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'
	@rm -f $(VENV)/.installed-* && touch $@

run: setup
	$(PY) -m broker.demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Fast feedback: lint, types and every test not marked `kafka` (conftest marks each
# test that uses the cluster), `jvm` (a Maven fetch and a JVM: the Avro Java
# cross-check) or `gomod` (Go modules from the proxy: the audit cross-check), on
# every core (pytest-xdist). Needs no broker.
CHECK_WORKERS ?= auto
check: lint
	$(PY) -m pytest -q -m "not kafka and not jvm and not gomod" -n $(CHECK_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The workspace's screenshots (README) from its browser test; needs the broker up.
screenshots: venv
	SAFESHARE_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/test_workspace_browser.py -q

BENCH_STAMP := $(VENV)/.bench-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	@rm -f $(VENV)/.bench-* && touch $@

bench: venv $(BENCH_STAMP)
	$(PY) -m bench

fuzz: venv
	$(PY) -m fuzz $(FUZZ_INPUTS)

lint: venv
	$(VENV)/bin/ruff check broker tests bench
	$(VENV)/bin/mypy broker

kafka-up: venv
	@$(PY) -m broker.kafka up

kafka-down: venv
	@$(PY) -m broker.kafka down

kafka-status: venv
	@$(PY) -m broker.kafka status

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
