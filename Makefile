# IAPO — make help lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.14.1 torchvision==0.29.1
CONSTRAINTS ?= constraints.txt
CONFIG ?= configs/tiny.yaml
TRAIN_CONFIG ?= configs/iapo.yaml configs/tiny.yaml configs/tiny_cold_start.yaml
EVAL_CONFIG ?= configs/eval.yaml
SWEEP ?= configs/sweep.yaml
STUDENT ?= checkpoints/demo-pair/student
TEACHER ?= checkpoints/demo-pair/teacher

.DEFAULT_GOAL := help
.PHONY: help setup test test-all lint predict tiny train data eval compare bench sweep demo pair premises budget powered paper

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]" $(TORCH) $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
	touch $(STAMP)

setup: $(STAMP) ## create .venv with torch 2.14.1 + torchvision 0.29.1 and the package with dev extras, every other library at its release in constraints.txt (idempotent; CONSTRAINTS= lifts the pins)

tiny: $(STAMP) ## build the offline tiny-student / tiny-teacher models into the cache
	$(PY) -m iapo.models.tiny tiny-student tiny-teacher

TEST_WORKERS ?= 2
test: $(STAMP) ## fast test suite (no `slow` tests), TEST_WORKERS=2 processes of one torch thread each (7.3–7.6 min on 2 cores)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS)

test-all: $(STAMP) ## every test, `slow` included
	$(PY) -m pytest -q -m ""

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

predict: $(STAMP) ## roll out the agent (CONFIG=configs/tiny.yaml) and write trajectories under logs/predict/
	$(PY) src/cli.py predict $(foreach c,$(CONFIG),--config $(c)) $(ARGS)

train: $(STAMP) ## train IAPO (paper setting) offline: tiny preset from cold-started tiny models (built once, minutes); TRAIN_CONFIG=configs/iapo.yaml on a GPU
	$(PY) src/cli.py fit $(foreach c,$(TRAIN_CONFIG),--config $(c)) $(ARGS)

data: $(STAMP) ## download test sets and training data into data/ (SETS=zoom|paper|all or names; Hugging Face Hub; idempotent)
	$(PY) -m iapo.data.download --root data --sets $(or $(SETS),all)

eval: $(STAMP) ## evaluate on the test sets under data/ (EVAL_CONFIG; ADAPTER=dir: base + adapter on the rows training never saw, configs/eval_heldout.yaml; ARGS=...)
	$(PY) src/cli.py test $(foreach c,$(EVAL_CONFIG),--config $(c)) $(if $(ADAPTER),--config configs/eval_heldout.yaml --ckpt_path $(ADAPTER)) $(ARGS)

compare: $(STAMP) ## one table from several evaluations: make compare RUNS="logs/eval/a logs/eval/b"
	$(PY) -m iapo.evaluation.results compare $(RUNS) --out logs/eval/compare.md

bench: $(STAMP) ## plain vs fast rollouts, and GRPO vs IAPO step time per attribution method and m (CPU: tiny models, ~5 min; GPU: 3B/7B shapes; ARGS=... see python -m iapo.experiments.bench -h)
	$(PY) -m iapo.experiments.bench --out logs/bench/bench.json $(ARGS)

sweep: $(STAMP) ## check SWEEP against the CLI, create the W&B sweep and print its `wandb agent` line (needs `wandb login`)
	$(PY) -m iapo.experiments.sweep $(SWEEP) $(if $(PROJECT),--project $(PROJECT)) $(if $(ENTITY),--entity $(ENTITY))

demo: $(STAMP) ## the showcase from the shipped 6-bar pair (checkpoints/demo-pair): premise, GRPO vs IAPO over 3 seeds on 300 test questions, logs/demo/report.md (18.5 min on 2 cores; SETTING=zoom; FAST=1: ~4 min; ARGS=--train-cold-start: the 4-bar preset trained from the tiny spec, about an hour; ARGS=--fresh starts over)
	$(PY) -m iapo.experiments.demo $(if $(SETTING),--setting $(SETTING)) $(if $(FAST),--fast) $(ARGS)

pair: $(STAMP) ## build the 6-bar student and teacher from the tiny spec, as the shipped pair was built (3,950 SFT steps, the two lineages side by side: 47.9 min on 2 cores; logs/demo-pair/student, teacher; pass them on with STUDENT= TEACHER=)
	$(PY) -m iapo.experiments.demo.pair $(ARGS)

premises: $(STAMP) ## the powered comparison's premise measurement on SETS (default 3) fresh sets of 64 training prompts × 3 samples and sampling seeds, each premise's verdict on each set (6.5 min for 3 sets beside another job; STUDENT= TEACHER= default to the shipped pair)
	$(PY) -m iapo.experiments.demo.measure --config configs/demo_charts_6bars.yaml --group-size 3 --student $(STUDENT) --teacher $(TEACHER) --variants blocks regions occlusion_regions --offset 280 --seed 10 --sets $(or $(SETS),3) $(ARGS)

budget: $(STAMP) ## GRPO's gain over the cold start at each RL budget, on validation rows (logs/demo-budget/budget.md; STUDENT= TEACHER= default to the shipped pair)
	$(PY) -m iapo.experiments.demo.budget --student $(STUDENT) --teacher $(TEACHER) $(ARGS)

powered: $(STAMP) ## the powered comparison on 6 bars as docs/results.md ran it: premise, optimisability, GRPO vs IAPO over 5 seeds on 300 test rows, the calls that ran attributed (logs/demo-powered/report.md; 82.8 min on 2 cores beside other jobs, then the optimisability stage 30.5 min; BUDGET= another of make budget's, default lr3e-4x320; STUDENT= TEACHER= default to the shipped pair)
	$(PY) -m iapo.experiments.demo --powered --student $(STUDENT) --teacher $(TEACHER) --budget $(or $(BUDGET),lr3e-4x320) --attribution-target tool_call_ran $(ARGS)

paper: $(STAMP) ## the paper's recipe: print its stages (teacher, cold start, IAPO / GRPO, evaluations, table); RUN=1 runs them (GPU); REHEARSE=1 runs them all offline on tiny models (~3 min)
	$(PY) -m iapo.experiments.recipe $(if $(RUN),--run) $(if $(REHEARSE),--rehearse) $(ARGS)
