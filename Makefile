# Two commands on a fresh clone: `make demo` and `make test`; `make dashboard` shows the runs in MLflow.
# Each creates the virtual environment in .venv and installs the pinned requirements when missing,
# and reuses them when present (re-installing only after a requirements file changed).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROD_STAMP := $(VENV)/.prod_requirements.installed
DEV_STAMP := $(VENV)/.dev_requirements.installed
MIN_PYTHON := 3.11

# The demo's size: generated data of DEMO_CLASSES classes x DEMO_PER_CLASS images, DEMO_EPOCHS epochs at
# DEMO_IMAGE_SIZE pixels (tests run it smaller, e.g. make demo DEMO_EPOCHS=1 DEMO_PER_CLASS=8).
DEMO_DIR := demo
DEMO_RAW := $(DEMO_DIR)/raw
DEMO_DATA := $(DEMO_DIR)/stanford
DEMO_OUTPUT := $(DEMO_DIR)/output
DEMO_CLASSES ?= 6
DEMO_PER_CLASS ?= 60
DEMO_EPOCHS ?= 12
DEMO_IMAGE_SIZE ?= 64
DEMO_SETTINGS := --set image_size=[$(DEMO_IMAGE_SIZE),$(DEMO_IMAGE_SIZE)] --set num_epochs=$(DEMO_EPOCHS) \
	--set batch_size=32 --set num_workers=2 --set output_path=$(DEMO_OUTPUT) --set logging_dir=$(DEMO_DIR)/logs \
	--set early_stopping_patience=null \
	--set lr_scheduler=null --set lr_scheduler_params=null \
	--set optimizer_params.weight_decay=0.05 --set optimizer_params.lr=0.003 \
	--set tags=[demo] --set "description=make demo on generated data"

DASHBOARD_DB ?= output/mlflow.db
DASHBOARD_PORT ?= 5000

.PHONY: demo test venv clean-demo dashboard

venv: $(PROD_STAMP)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= tuple(map(int, "$(MIN_PYTHON)".split("."))) else "cars needs Python $(MIN_PYTHON) or newer (the pinned numpy, scipy, pillow and matplotlib have no wheels for older ones); $(PYTHON) is " + sys.version.split()[0] + ". Run: make $(or $(MAKECMDGOALS),venv) PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(PROD_STAMP): prod_requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r prod_requirements.txt
	touch $@

$(DEV_STAMP): dev_requirements.txt export_requirements.txt $(PROD_STAMP)
	$(PY) -m pip install --quiet -r dev_requirements.txt
	touch $@

# The suite on TEST_WORKERS pytest-xdist processes (0: in pytest's own process), each file's tests in one process.
# The timing-sensitive tests (marker serial: heartbeats, grace periods, signals) share one file that conftest.py
# puts first, so one worker runs them one at a time from the start while the others work through the rest. Three
# workers on two cores: the CPU the sweep tests leave while they wait on workers and grace periods is used.
TEST_WORKERS ?= 3

test: $(DEV_STAMP)
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

$(DEMO_RAW):
	$(PY) -m datasets.synthetic $(DEMO_RAW).partial --overwrite --layout updated --classes $(DEMO_CLASSES) \
		--per-class $(DEMO_PER_CLASS)
	mv $(DEMO_RAW).partial $(DEMO_RAW)

$(DEMO_DATA): | $(DEMO_RAW)
	$(PY) prepare_stanford_dataset.py --raw $(DEMO_RAW) --out $(DEMO_DATA)

# The closing lines name the run just trained (the newest run folder) and a photo of the generated data.
demo: $(PROD_STAMP)
	$(MAKE) --no-print-directory $(DEMO_DATA)
	$(PY) train.py -c config_template.yml -d $(DEMO_DATA) $(DEMO_SETTINGS)
	$(PY) compare_runs.py --to-mlflow $(DEMO_OUTPUT) --reference C-50
	@run=$$(ls -dt $(DEMO_OUTPUT)/ghost_* | head -n 1); photo=$$(ls $(DEMO_DATA)/test/*.jpg | head -n 1); \
	echo; \
	echo "Next steps (the run: $$run):"; \
	echo "  $(PY) compare_runs.py $(DEMO_OUTPUT)"; \
	echo "  $(PY) evaluate.py $$run"; \
	echo "  $(PY) predict.py $$run $$photo --top 3"; \
	echo "  $(PY) export_model.py $$run --format pt2"
	@$(PY) -m utils.mlflow.dashboard --db $(DEMO_DIR)/output/mlflow.db --port $(DASHBOARD_PORT) --url-only

# The runs table of DASHBOARD_DB (train.py's default: output/mlflow.db) served by MLflow on 127.0.0.1:DASHBOARD_PORT;
# prints the URL that opens it with the thesis's columns (docs/tracking.md).
dashboard: $(PROD_STAMP)
	@$(PY) -m utils.mlflow.dashboard --db $(DASHBOARD_DB) --port $(DASHBOARD_PORT)

clean-demo:
	rm -rf $(DEMO_DIR)
