# Two entry points: `make demo` (set up + run the end-to-end job) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench setup clean

setup: $(STAMP)

# torch==2.13.0 is the CPU wheel that lies on disk; any other spec pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all,test]"
	touch $(STAMP)

# Lint (ruff, then mypy with the settings in pyproject.toml; both well under a minute) before the tests.
lint: $(STAMP)
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

demo: $(STAMP)
	$(VENV)/bin/caloquant demo

bench: $(STAMP)
	$(PY) bench/mc_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
