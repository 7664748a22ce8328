# voxtrace: `make demo` runs the whole pipeline on the demo corpus, `make test` runs the test suite.
# Both install what they need first (Debian packages, then the Python requirements); installs are idempotent.
PYTHON ?= python3
DEMO_OUT ?= runs/demo

.PHONY: install demo test test-all benchmarks

install: .install.stamp

.install.stamp: requirements.txt pyproject.toml scripts/install_system_deps.sh
	bash scripts/install_system_deps.sh
	$(PYTHON) -m pip install --quiet -r requirements.txt
	$(PYTHON) -m pip install --quiet --no-deps -e .
	touch $@

demo: install
	$(PYTHON) -m voxtrace.cli demo --cfg configs/demo.yaml --out $(DEMO_OUT)

test: install
	$(PYTHON) -m pytest -m "not slow" -q

test-all: install
	$(PYTHON) -m pytest -q
