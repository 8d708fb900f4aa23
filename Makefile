# layouttool: `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: all venv demo test test-quick lint bench bench-quick bench-codecs clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat: a plain path .pth; the default editable finder imports pathlib & co. at every
	# interpreter start (~20 ms of each command). setuptools calls compat transitional, so
	# fall back to the default mode the day it is gone
	$(PY) -m pip install -q -e '.[test,lint]' --config-settings editable_mode=compat \
	  || $(PY) -m pip install -q -e '.[test,lint]'
	# bytecode up front: an editable install compiles nothing, and with
	# PYTHONDONTWRITEBYTECODE set every run would recompile (~100 ms of start-up)
	$(PY) -m compileall -q layouttool
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q

test-quick: $(STAMP)
	$(PY) -m pytest -q -x -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check layouttool tests bench scripts
	$(VENV)/bin/mypy

# bytecode refreshed first: sources changed since the venv was made would otherwise be
# recompiled at every start (PYTHONDONTWRITEBYTECODE), and the start-up rows would time that
bench: $(STAMP)
	$(PY) -m compileall -q layouttool
	$(PY) bench/run.py
	$(PY) bench/registry_bench.py

bench-quick: $(STAMP)
	$(PY) -m compileall -q layouttool
	$(PY) bench/run.py --quick
	$(PY) bench/registry_bench.py --size-mb 32 --rounds 1

# codec settings on a sample of this machine's /usr and on the generated image (why the
# defaults are what they are; see README, Performance)
bench-codecs: $(STAMP)
	$(PY) bench/codecs.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo-out bench/out .pytest_cache .mypy_cache .ruff_cache
