# make demo / make test create .venv on first use and install once; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fgvc-installed

.PHONY: demo test test-all lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@echo "installing fgvc and its dependencies (PyTorch among them): several minutes on a first install"
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	@echo "installed; run fgvc as $(VENV)/bin/fgvc, or 'source $(VENV)/bin/activate' and then fgvc"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fgvc demo

# two test processes on two cores (pytest-xdist, one torch thread each, a file's tests on one worker): ~1.5x faster
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

test-all: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info
