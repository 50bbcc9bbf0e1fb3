# Two commands on a fresh machine with Python 3.11+ and make:
#   make run    set up .venv and start the daemon on the sample crontab.yaml
#   make test   set up .venv and run the gates: ruff, mypy --strict, lint-imports, pytest
#   make test-systemd  the shipped units under a real systemd 252 in a container (root;
#               the first run makes its Debian root, 1 to 4 minutes, kept for later runs)
#   make test-cluster  three real nodes over PostgreSQL (tests marked cluster), then issue
#               21's faults over a private server (initdb, and libfaketime from Debian's
#               faketime; about 4.5 minutes)
#   make test-bench  the bench/ scripts in their quick modes (tests marked bench; 1 minute)
#   make test-brokers  the Celery, RQ and AMQP targets with real workers, and across a
#               restart of the installed daemon, on 127.0.0.1's Redis and RabbitMQ (marked
#               brokers; 40 s)
#   make bench  cronplus beside yacron and Debian cron (root, 60 to 90 minutes)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-systemd test-cluster test-bench test-brokers lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "cronplus needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cronplus -c crontab.yaml daemon

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q -n 2 -m 'not cluster and not bench and not brokers'

test-systemd: $(STAMP)
	$(BIN)/pytest -q -o timeout=900 tests_systemd

test-cluster: $(STAMP)
	$(BIN)/pytest -q -n 2 -m cluster tests
	$(BIN)/pytest -q -o timeout=300 tests_cluster

test-bench: $(STAMP)
	$(BIN)/pytest -q -n 2 -m bench tests

test-brokers: $(STAMP)
	$(BIN)/pytest -q -n 2 -m brokers tests

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/bench_peers.py --write-results --charts

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
