# Two commands on a fresh machine: `make demo` runs the main job, `make test` runs the tests.
# Each builds the virtualenv it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EVENTS ?= 100000

.PHONY: venv servers demo test bench bench-iot bench-cdc clean

$(VENV)/.installed: setup.py requirements.txt requirements-test.txt requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt -c requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# The real servers the tests start on loopback (quick when already installed).
servers:
	bash scripts/setup-postgres.sh
	bash scripts/setup-pubsub-emulator.sh
	bash scripts/setup-bqemulator.sh

demo: venv
	$(PY) -m kappaflow.demo --events $(EVENTS) --workdir demo-out

test: venv servers
	$(PY) -m pytest -q tests

bench: venv
	$(PY) benchmarks/clickstream_bench.py

bench-iot: venv
	$(PY) benchmarks/iot_bench.py

bench-cdc: venv
	$(PY) benchmarks/cdc_bench.py

clean:
	rm -rf demo-out .pytest_cache build *.egg-info
