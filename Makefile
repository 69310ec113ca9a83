# Feature Learning, Replicated: one command to build the site, one to run the tests.
#   make book    create .venv, install everything, execute chapters (fast), build _build/html
#   make test    create .venv if needed, run the test suite
#   make lint    ruff (lint + format check) on lib, tests, bench and the chapters; mypy on lib
#   make format  ruff format, and the chapters' code cells through their .md sources
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= fast
# torch is installed first, on its own; override to pin a build, e.g.
#   make book TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
TORCH_SPEC ?= torch torchvision

.PHONY: book test test-fast lint format check-site system-deps venv sync clean

$(BIN)/featlearn: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[book,test,dev]"
	@touch $@

venv: $(BIN)/featlearn

system-deps:
	@bash scripts/system-deps.sh

book: system-deps venv
	$(BIN)/featlearn build --profile $(PROFILE)

test: venv
	$(BIN)/python -m pytest -q

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

# The chapters are linted through their .ipynb twins (kept equal to the .md by `make sync`).
lint: venv
	$(BIN)/ruff check lib tests bench book
	$(BIN)/ruff format --check lib tests bench book
	$(BIN)/featlearn sync --check
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format lib tests bench
	$(BIN)/featlearn sync --format
	$(BIN)/featlearn --root tests/fixtures/book sync --format

check-site: venv
	$(BIN)/python -m featlearn.book.sitecheck . --screenshots _build/screenshots

sync: venv
	$(BIN)/featlearn sync

clean:
	rm -rf _build
