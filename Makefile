# afternoon: two commands do all set-up on a fresh machine.
#   make run    create .venv if missing, run the default study end to end
#   make test   create .venv if missing, run the test suite
# Everything is pinned in requirements.txt (one lock, resolved together with tensorflow-cpu 2.18.1).

VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
CORES ?= all
export PATH := $(BIN):$(PATH)

.PHONY: run test lint mlflow-ui clean-results

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	# tf_keras without its deps: its metadata asks for the full `tensorflow` wheel beside tensorflow-cpu.
	$(BIN)/python -m pip install --quiet --no-deps tf_keras==2.18.0
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

run: $(STAMP)
	snakemake --cores $(CORES) --show-failed-logs $(ARGS)
	@echo
	@echo "Report:    results/report/index.html"
	@echo "MLflow UI: make mlflow-ui    (then open http://127.0.0.1:5000)"

test: $(STAMP)
	pytest $(PYTEST_ARGS)

lint: $(STAMP)
	ruff check . && ruff format --check . && snakemake --lint

# The MLflow UI on this machine only (127.0.0.1). See README for a network bind with auth.
mlflow-ui: $(STAMP)
	mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db --host 127.0.0.1 --port 5000

clean-results:
	rm -rf results/raw results/data results/runs results/eval results/report results/logs results/mlflow .snakemake
