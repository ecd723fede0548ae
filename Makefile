# Everything installs into .venv from pyproject.toml; `make run` and `make test` are the README's quick start.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# The suite runs on SQLite, then again on PostgreSQL (tests/conftest.py reads CONSENT_GATEWAY_TEST_DATABASE).
TEST_POSTGRES ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: install run test test-sqlite test-postgres lint demo bench reliability policy-test browser clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/consent-gateway serve

demo: install
	$(VENV)/bin/consent-gateway demo

lint: install
	$(PY) -m ruff check gateway tests bench
	$(PY) -m ruff format --check gateway tests bench
	$(PY) -m mypy

policy-test: install
	$(VENV)/bin/consent-gateway policy check policies/*.yaml
	$(VENV)/bin/consent-gateway policy test policies/tests

# Browser tests use Debian's Chromium; as root it is installed here, otherwise they skip with a message.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed (needs root): browser tests will skip"; }

# Both runs: tests of one backend only, or of no storage, run in one of them (tests/conftest.py, ONE_RUN_*);
# `make test-sqlite` or `make test-postgres` alone runs everything it can.
test: export CONSENT_GATEWAY_BOTH_RUNS := 1
test: test-sqlite test-postgres

test-sqlite: lint policy-test browser
	$(PY) -m pytest

test-postgres: lint policy-test browser
	CONSENT_GATEWAY_TEST_DATABASE=$(TEST_POSTGRES) $(PY) -m pytest

BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) bench/run.py

# The reliability suite at full size (small versions of the same tests run in `make test`); its figures go to
# docs/reliability.md. Longer runs: RELIABILITY_FULL=1 scales every test to its documented full size.
RELIABILITY_OUT := bench/results/reliability.jsonl
reliability: install
	mkdir -p bench/results && rm -f $(RELIABILITY_OUT)
	RELIABILITY_FULL=1 RELIABILITY_FIGURES=$(CURDIR)/$(RELIABILITY_OUT) $(PY) -m pytest tests/reliability -q
	$(PY) bench/reliability.py $(RELIABILITY_OUT)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
