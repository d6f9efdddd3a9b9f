# Two commands on a fresh clone: `make demo` and `make test`; `make dashboard` shows the runs in MLflow.
# Each creates the virtual environment in .venv and installs the pinned requirements when missing,
# and reuses them when present (re-installing only after a requirements file changed).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROD_STAMP := $(VENV)/.prod_requirements.installed
DEV_STAMP := $(VENV)/.dev_requirements.installed

DEMO_DIR := demo
DEMO_RAW := $(DEMO_DIR)/raw
DEMO_DATA := $(DEMO_DIR)/stanford
DEMO_SETTINGS := --set image_size=[64,64] --set num_epochs=12 --set batch_size=32 \
	--set num_workers=2 --set output_path=$(DEMO_DIR)/output --set logging_dir=$(DEMO_DIR)/logs \
	--set early_stopping_patience=null \
	--set lr_scheduler=null --set lr_scheduler_params=null \
	--set optimizer_params.weight_decay=0.05 --set optimizer_params.lr=0.003 \
	--set tags=[demo] --set "description=make demo on generated data"

DASHBOARD_DB ?= output/mlflow.db
DASHBOARD_PORT ?= 5000

.PHONY: demo test venv clean-demo dashboard

venv: $(PROD_STAMP)

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed (found " + sys.version.split()[0] + "); run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(PROD_STAMP): prod_requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r prod_requirements.txt
	touch $@

$(DEV_STAMP): dev_requirements.txt export_requirements.txt $(PROD_STAMP)
	$(PY) -m pip install --quiet -r dev_requirements.txt
	touch $@

test: $(DEV_STAMP)
	$(PY) -m pytest tests

$(DEMO_RAW):
	$(PY) -m datasets.synthetic $(DEMO_RAW).partial --overwrite --layout updated --classes 6 --per-class 60
	mv $(DEMO_RAW).partial $(DEMO_RAW)

$(DEMO_DATA): | $(DEMO_RAW)
	$(PY) prepare_stanford_dataset.py --raw $(DEMO_RAW) --out $(DEMO_DATA)

demo: $(PROD_STAMP)
	$(MAKE) --no-print-directory $(DEMO_DATA)
	$(PY) train.py -c config_template.yml -d $(DEMO_DATA) $(DEMO_SETTINGS)
	@$(PY) -m utils.runs.dashboard --db $(DEMO_DIR)/output/mlflow.db --port $(DASHBOARD_PORT) --url-only

# The runs table of DASHBOARD_DB (train.py's default: output/mlflow.db) served by MLflow on 127.0.0.1:DASHBOARD_PORT;
# prints the URL that opens it with the thesis's columns (docs/tracking.md).
dashboard: $(PROD_STAMP)
	@$(PY) -m utils.runs.dashboard --db $(DASHBOARD_DB) --port $(DASHBOARD_PORT)

clean-demo:
	rm -rf $(DEMO_DIR)
