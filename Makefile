# specsr: `make demo` runs the whole mission on the embedded simulator; `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SPECSR := $(VENV)/bin/specsr
DEMO := demo
NICE := nice -n 5
export TF_CPP_MIN_LOG_LEVEL := 3
export MPLBACKEND := Agg
# JAX trains ~1.4x faster than TensorFlow on this CPU; export switches to TF by itself.
export KERAS_BACKEND ?= jax

.PHONY: demo test test-tf test-jax bench lint demo-clean venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[jax,dev]"
	touch $@

# Each demo step is a file target, so a rerun reuses what is done (`make demo-clean` starts over).
DEMO_SIM := --instrument euclid --snr-weight-power 1.5
DEMO_MODEL := saved_models/specsr-demo/1

demo: venv $(DEMO)/report/report.md
	@echo "demo finished: see $(DEMO)/report/report.md, $(DEMO)/results/ and $(DEMO_MODEL)"

$(DEMO)/data/train/manifest.json:
	$(NICE) $(SPECSR) simulate --n 3000 $(DEMO_SIM) --seed 1 --out $(DEMO)/data/train --plot --overwrite

$(DEMO)/data/heldout/manifest.json:
	$(NICE) $(SPECSR) simulate --n 600 $(DEMO_SIM) --seed 2 --out $(DEMO)/data/heldout --plot --overwrite

$(DEMO)/data/catalog.fits:
	$(NICE) $(SPECSR) simulate-catalog --n 1000 --instrument euclid --seed 3 --out $@

$(DEMO)/runs/quick/run.json: $(DEMO)/data/train/manifest.json
	$(NICE) $(SPECSR) train $(DEMO)/runs/quick --preset quick --data $(DEMO)/data/train

$(DEMO_MODEL)/saved_model.pb: $(DEMO)/runs/quick/run.json
	$(NICE) $(SPECSR) export $(DEMO)/runs/quick --name specsr-demo --version 1 --ddim-steps 10 --samples 4

$(DEMO)/results/results.fits: $(DEMO_MODEL)/saved_model.pb $(DEMO)/data/catalog.fits
	$(NICE) $(SPECSR) infer $(DEMO)/data/catalog.fits --model $(DEMO_MODEL) --out $(DEMO)/results --samples 4

$(DEMO)/report/report.md: $(DEMO)/results/results.fits $(DEMO)/data/heldout/manifest.json
	$(NICE) $(SPECSR) evaluate --model $(DEMO_MODEL) --data $(DEMO)/data/heldout --out $(DEMO)/report --samples 4 \
		--embeddings-from $(DEMO)/runs/quick

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
	rm -rf $(DEMO) saved_models/specsr-demo
