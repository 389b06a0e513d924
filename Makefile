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

HOROVOD_STAMP := $(VENV)/.horovod
SYSTEM_STAMP := $(VENV)/.system-packages

.PHONY: run test lint horovod system-packages slurm-profile mlflow-ui tensorboard clean-results

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	# tf_keras without its deps: its metadata asks for the full `tensorflow` wheel beside tensorflow-cpu.
	$(BIN)/python -m pip install --quiet --no-deps tf_keras==2.18.0
	# Keras Tuner's oracles (hyperparameter searches) without its deps: they are pinned above
	# (keras, packaging, requests; grpcio comes with TensorFlow).
	$(BIN)/python -m pip install --quiet --no-deps keras-tuner==1.4.7 kt-legacy==1.0.5
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

run: $(STAMP)
	snakemake --cores $(CORES) --show-failed-logs $(ARGS)
	@echo
	@echo "Report:    $$($(BIN)/python -c 'from afternoon.layout import Layout as L; print(L().report_outputs()["html"])')"
	@echo "MLflow UI: make mlflow-ui    (then open $(MLFLOW_UI_URL))"
	@echo "TensorBoard: make tensorboard    (then open http://127.0.0.1:6006)"

# The test suite also needs Horovod (compiled: ~6-10 min on 2 cores, once) and Debian packages
# (Open MPI, Chromium, Slurm): installed here when missing, so `make test` works on a fresh machine
# (or stops, in one line, where it cannot install them). Its last line says how many tests ran and
# how many skipped (from pytest's JUnit XML); its exit status is pytest's. With CI=true a test
# that needs a missing component fails instead of skipping, and any skip fails `make test`.
test: $(STAMP) $(SYSTEM_STAMP) $(HOROVOD_STAMP)
	@report=$$(mktemp); status=0; summary=0; \
	echo "pytest $(PYTEST_ARGS)"; \
	pytest --junitxml="$$report" $(PYTEST_ARGS) || status=$$?; \
	$(BIN)/python scripts/test-summary.py "$$report" || summary=$$?; \
	rm -f "$$report"; \
	if [ $$status -ne 0 ]; then exit $$status; fi; exit $$summary

system-packages: $(SYSTEM_STAMP)
$(SYSTEM_STAMP): scripts/install-system-packages.sh | $(STAMP)
	scripts/install-system-packages.sh
	touch $@

# Horovod 0.28.1 (the last release) builds against TensorFlow 2.18 and imports it while building,
# hence --no-build-isolation. Built with MPI (srun --mpi=pmix under Slurm) and gloo (a workstation).
horovod: $(HOROVOD_STAMP)
$(HOROVOD_STAMP): $(STAMP) $(SYSTEM_STAMP)
	$(BIN)/python -c "import horovod.tensorflow.keras" 2>/dev/null || { \
	HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 \
	HOROVOD_WITHOUT_MXNET=1 $(BIN)/python -m pip install --quiet --no-build-isolation \
	--no-cache-dir horovod==0.28.1 || \
	{ echo "make horovod: pip could not build horovod==0.28.1 (its output is above)" >&2; exit 1; }; \
	$(BIN)/python -c "import horovod.tensorflow.keras" || \
	{ echo "make horovod: horovod==0.28.1 installed, but horovod.tensorflow.keras does not import" >&2; exit 1; }; }
	touch $@

lint: $(STAMP)
	ruff check . && ruff format --check . && snakefmt --check . && snakemake --lint

# `snakemake --profile slurm` looks for a profile named slurm in the user's Snakemake profile
# directory ($XDG_CONFIG_HOME/snakemake, else ~/.config/snakemake), not in the repository: link
# this repository's profiles/slurm there (once per user; edits to the repo's profile then apply).
SNAKEMAKE_PROFILES = $${XDG_CONFIG_HOME:-$$HOME/.config}/snakemake
slurm-profile:
	@target="$(SNAKEMAKE_PROFILES)/slurm"; \
	if [ -e "$$target" ] && [ ! -L "$$target" ]; then \
	  echo "make slurm-profile: $$target exists and is not a link: move it away first" >&2; exit 1; \
	fi; \
	mkdir -p "$(SNAKEMAKE_PROFILES)" && ln -sfn "$(abspath profiles/slurm)" "$$target" && \
	echo "make slurm-profile: $$target -> $(abspath profiles/slurm) (snakemake --profile slurm)"

# The MLflow UI on this machine only (127.0.0.1). See README for a network bind with auth.
# The study experiment's runs table (not MLflow 3's GenAI view): afternoon.tracking.uris.
# MLFLOW_UI_PORT: another port; MLFLOW_UI_RESULTS: another study's results folder.
MLFLOW_UI_PORT ?= 5000
MLFLOW_UI_RESULTS ?= results
MLFLOW_UI_URL = $(shell $(BIN)/python -c "from afternoon.layout import Layout; from afternoon.tracking.uris import study_ui_url; print(study_ui_url('http://127.0.0.1:$(MLFLOW_UI_PORT)', Layout('$(MLFLOW_UI_RESULTS)').tracking_marker()))" 2>/dev/null)
mlflow-ui: $(STAMP)
	@echo "MLflow UI: $(MLFLOW_UI_URL)"
	mlflow ui --host 127.0.0.1 --port $(MLFLOW_UI_PORT) --backend-store-uri sqlite:///$$($(BIN)/python -c \
	"from afternoon.layout import Layout; print(Layout('$(MLFLOW_UI_RESULTS)').tracking_db())")

# TensorBoard over every run of the study (each run's tensorboard/ folder: scalars, graph, weight
# histograms), on the loopback interface only. TENSORBOARD_LOGDIR: another study's runs folder.
# SEARCH=<search>/<dataset>: that search's HParams dashboard instead (its tensorboard/ folder:
# TensorBoard shows one experiment per log directory).
TENSORBOARD_PORT ?= 6006
# (This checkout's package on PYTHONPATH: `make -f <checkout>/Makefile` from a study's folder too.)
PACKAGE_DIR := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))/workflow
ifdef SEARCH
TENSORBOARD_LOGDIR ?= $(shell PYTHONPATH=$(PACKAGE_DIR) $(BIN)/python -c "from afternoon.layout import Layout; s, d = '$(SEARCH)/'.split('/')[:2]; print(Layout().search_outputs(s, d)['tensorboard'])" 2>/dev/null)
TENSORBOARD_WHAT = search $(SEARCH): its HParams dashboard is the HPARAMS tab; logs
else
TENSORBOARD_LOGDIR ?= $(shell $(BIN)/python -c "from afternoon.layout import Layout; print(Layout().runs_root())" 2>/dev/null)
TENSORBOARD_WHAT = runs
endif
tensorboard: $(STAMP)
	@case "$(SEARCH)" in ""|?*/?*) ;; *) echo "make tensorboard: SEARCH must be <search>/<dataset>, got '$(SEARCH)'" >&2; exit 2;; esac
	@test -z "$(SEARCH)" || test -d "$(TENSORBOARD_LOGDIR)" || { echo "make tensorboard: no $(TENSORBOARD_LOGDIR): run the search first (config searches.run)" >&2; exit 1; }
	@echo "TensorBoard: http://127.0.0.1:$(TENSORBOARD_PORT)/ ($(TENSORBOARD_WHAT) under $(TENSORBOARD_LOGDIR))"
	$(BIN)/tensorboard --host 127.0.0.1 --port $(TENSORBOARD_PORT) --logdir $(TENSORBOARD_LOGDIR)

clean-results:
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf .snakemake
