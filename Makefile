# artifactcourier: `make run` starts the service, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
WEB_CONCURRENCY ?= 2
STAMP := $(VENV)/.installed-stamp
# Test-only secrets, used when the suite runs against a "deployment" (DATABASE_URL set).
TEST_SECRET := test-only-secret-key-never-used-in-any-deployment-0001
TEST_PEPPER := test-only-token-pepper-never-used-in-any-deployment-01

.PHONY: install run migrate test test-fast bench lint format clean mutate

$(STAMP): pyproject.toml courier/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	$(VENV)/bin/pip install --quiet -e ./courier
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py ensure_admin --url http://127.0.0.1:$(PORT)/admin/
	PORT=$(PORT) WEB_CONCURRENCY=$(WEB_CONCURRENCY) VENV=$(VENV) ./scripts/run.sh

test: install
	SECRET_KEY=$${SECRET_KEY:-$(TEST_SECRET)} TOKEN_PEPPER=$${TOKEN_PEPPER:-$(TEST_PEPPER)} \
		$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: install
	$(PY) bench/auth.py
	$(PY) bench/transfer.py
	$(PY) bench/small.py
	$(PY) bench/storage.py
	$(PY) bench/share.py
	$(PY) bench/fanout.py
	$(PY) bench/cli.py

# Mutation testing of the access core (tokens/, artifacts/paths.py; [tool.mutmut] in
# pyproject.toml). Not part of CI: it takes minutes to hours. MUTATE_ARGS narrows it to some
# mutants, e.g. MUTATE_ARGS='"tokens.access.*" "artifacts.paths.*"'; `.venv/bin/mutmut
# browse` shows the survivors.
mutate: install
	rm -rf mutants
	SECRET_KEY=$(TEST_SECRET) TOKEN_PEPPER=$(TEST_PEPPER) DATABASE_URL= \
		$(VENV)/bin/mutmut run --max-children $${MUTATE_JOBS:-2} $(MUTATE_ARGS) || true
	$(VENV)/bin/mutmut results --all true | tail -n 40 || $(VENV)/bin/mutmut results

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) var .pytest_cache
