# specsr: `make demo` runs the whole mission on the embedded simulator; `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SPECSR := $(VENV)/bin/specsr
DEMO := demo
NICE := nice -n 5
export TF_CPP_MIN_LOG_LEVEL := 3
export MPLBACKEND := Agg

.PHONY: demo test test-tf test-jax bench lint demo-clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[jax,dev]"
	touch $@

demo: venv
	$(NICE) $(SPECSR) simulate --n 4000 --instrument euclid --seed 1 --out $(DEMO)/data/train --plot
	$(NICE) $(SPECSR) simulate --n 1000 --instrument euclid --seed 2 --out $(DEMO)/data/heldout --plot

test: venv test-tf test-jax

test-tf:
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q

test-jax:
	KERAS_BACKEND=jax $(PY) -m pytest -q -m "keras and not slow"

bench: venv
	$(PY) -m pytest -q -m slow

lint: venv
	$(VENV)/bin/ruff check specsr_keras cli tests benchmarks

demo-clean:
	rm -rf $(DEMO)
