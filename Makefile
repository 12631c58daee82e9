# lmbatch: `make demo` and `make test` work on a fresh machine with python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test test-fast lint types pytest bench clean browser pango

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: venv
	$(BIN)/python -m batch demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: venv
	$(BIN)/mypy

# The report test needs a real browser: Debian's chromium, installed when missing (root on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || bash .ci/install-chromium

# Generated documents need WeasyPrint's Pango, HarfBuzz-subset and the DejaVu fonts (root on CI).
pango:
	@bash .ci/install-pango

pytest: venv browser pango
	$(BIN)/pytest

test: lint types pytest

# The inner loop: everything but the tests marked slow (end-to-end runs); CI runs `make test`.
test-fast: venv
	$(BIN)/pytest -m "not slow" -q

bench: venv
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/run.py
	$(BIN)/python bench/documents.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
