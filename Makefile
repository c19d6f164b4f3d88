# Two entry points for a fresh machine: `make lab` (JupyterLab on notebooks/) and `make test`.
# Both run `make setup` first, which is idempotent and returns at once when nothing changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.swiftlib-installed
PYTEST_ARGS ?=
LAB_ARGS ?=
# Jupyter refuses to run as root unless told to (containers, cloud VMs).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=900

.PHONY: setup lab test test-unit test-notebooks clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	$(PY) -c "import torch, torchvision, timm, swiftlib; print('swiftlib ready: torch', torch.__version__, '| torchvision', torchvision.__version__, '| timm', timm.__version__)"
	touch $(STAMP)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $(ROOT_FLAG) $(LAB_ARGS)

test: setup
	$(PY) -m pytest tests notebooks $(NBVAL) $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-notebooks: setup
	$(PY) -m pytest notebooks $(NBVAL) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
