# voxtrace: `make demo` runs the whole pipeline on the demo corpus, `make test` runs the test suite.
# Both install what they need first (Debian packages, then Python packages by role: requirements-core.txt and
# requirements.txt plus requirements-ROLE.txt); installs are idempotent and rerun when a requirements file,
# pyproject.toml, an install script or the TensorFlow build changes. TensorFlow: the CUDA build where an NVIDIA
# GPU is present, the CPU build otherwise; GPU=1 / GPU=0 forces one (make install GPU=1).
PYTHON ?= python3
DEMO_OUT ?= runs/demo
DEMO_ROLES := corpus whisper
ALL_ROLES := corpus serve export whisper onnx tflite test
TENSORFLOW := $(shell GPU=$(GPU) bash scripts/install_python_deps.sh --tensorflow)
INSTALL_INPUTS := pyproject.toml $(wildcard requirements*.txt) $(wildcard scripts/install_*.sh) .install.tensorflow

.PHONY: install demo test test-all FORCE

install: .install.stamp

# The TensorFlow requirement this machine gets, rewritten only when it changes (a GPU appears, GPU=1).
.install.tensorflow: FORCE
	@echo '$(TENSORFLOW)' | cmp -s - $@ || echo '$(TENSORFLOW)' > $@

.install.stamp: $(INSTALL_INPUTS)
	bash scripts/install_system_deps.sh $(ALL_ROLES)
	PYTHON=$(PYTHON) GPU=$(GPU) bash scripts/install_python_deps.sh $(ALL_ROLES)
	touch $@

.install-demo.stamp: $(INSTALL_INPUTS)
	bash scripts/install_system_deps.sh $(DEMO_ROLES)
	PYTHON=$(PYTHON) GPU=$(GPU) bash scripts/install_python_deps.sh $(DEMO_ROLES)
	touch $@

demo: .install-demo.stamp
	$(PYTHON) -m voxtrace.cli demo --cfg configs/demo.yaml --out $(DEMO_OUT)

# VOXTRACE_NO_SKIPS=1: a skipped test fails the run (tests/conftest.py); the install provides what each needs.
test: install
	VOXTRACE_NO_SKIPS=1 $(PYTHON) -m pytest -m "not slow" -q

test-all: install
	VOXTRACE_NO_SKIPS=1 $(PYTHON) -m pytest -q

# bona fide vs spoof on the demo corpus (built first when absent): train the CNN and the frozen Whisper member,
# weight them and fit the decision threshold on leave-voice-out out-of-fold scores, predict and evaluate the
# cross-corpus parts 4 and 5: runs/demo-detect/results.md
.PHONY: demo-detect
demo-detect: .install-demo.stamp
	$(PYTHON) -m voxtrace.detect_demo --out runs/demo-detect
