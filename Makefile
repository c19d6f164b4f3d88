# Entry points for a fresh machine: `make lab` (JupyterLab on notebooks/), `make class` (the notebooks
# served to a class as Voila apps) and `make test`. All run `make setup` first, which is idempotent and
# returns at once when nothing changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.swiftlib-installed
PYTEST_ARGS ?=
LAB_ARGS ?=
# make class: Voila on IP:PORT (all interfaces by default, so that a classroom can reach it), one kernel
# per visitor, nothing loaded from the internet (template class/voila/templates/offline). TOKEN=secret
# makes visitors open the URLs with ?token=secret; CLASS_ARGS passes any other Voila option.
# VOILA_TEMPLATE=lab is Voila's own template (it loads icon fonts from a CDN).
PORT ?= 8866
IP ?= 0.0.0.0
TOKEN ?=
CLASS_ARGS ?=
VOILA_TEMPLATE ?= offline
CLASS_HOST = $(if $(filter 0.0.0.0 ::,$(IP)),$(or $(firstword $(shell hostname -I 2>/dev/null)),$(shell hostname)),$(IP))
# torch writes its compile cache to /tmp/torchinductor_<user> on import (timm imports torch._dynamo):
# keep it in the git-ignored .cache/ of the checkout instead. (torch.compile's precompiled C++ headers
# ignore this setting and stay in /tmp/torchinductor_<user>, a cache torch shares between runs; the
# test session removes the folder when it created it, see tests/conftest.py.)
export TORCHINDUCTOR_CACHE_DIR ?= $(CURDIR)/.cache/torchinductor
# Jupyter refuses to run as root unless told to (containers, cloud VMs).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=900

.PHONY: setup lab class test test-unit test-notebooks clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	$(PY) -c "import torch, torchvision, timm, swiftlib; print('swiftlib ready: torch', torch.__version__, '| torchvision', torchvision.__version__, '| timm', timm.__version__)"
	touch $(STAMP)

# Jupyter's checkpoints (File > Revert) go to the git-ignored .cache/, not into notebooks/.
lab: setup
	$(VENV)/bin/jupyter lab notebooks/ $(ROOT_FLAG) \
	    --FileCheckpoints.checkpoint_dir=$(CURDIR)/.cache/ipynb_checkpoints $(LAB_ARGS)

class: setup
	@echo "Serving notebooks/ as apps, one kernel per visitor (Ctrl-C stops). Send the class:"
	@for nb in $(notdir $(wildcard notebooks/*.ipynb)); do \
	    echo "  http://$(CLASS_HOST):$(PORT)/voila/render/$$nb$(if $(TOKEN),?token=$(TOKEN))"; done
	JUPYTER_PATH="$(CURDIR)/class$(if $(JUPYTER_PATH),:$(JUPYTER_PATH))" exec $(VENV)/bin/voila notebooks/ \
	    --no-browser --Voila.ip=$(IP) --port=$(PORT) --Voila.port_retries=0 --template=$(VOILA_TEMPLATE) \
	    $(if $(TOKEN),--token=$(TOKEN)) $(CLASS_ARGS)

test: setup
	$(PY) -m pytest tests notebooks $(NBVAL) $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-notebooks: setup
	$(PY) -m pytest notebooks $(NBVAL) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
