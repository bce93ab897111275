# Two commands on a fresh machine: `make demo` runs the main job, `make test` runs the tests.
# Each builds the virtualenv it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EVENTS ?= 100000

.PHONY: venv servers browser runners setup-prism setup-flink setup-expansion-service flink-cluster-start flink-cluster-stop demo test bench bench-iot bench-cdc bench-runners bench-flink-cluster clean

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
	bash scripts/setup-kafka.sh

# Headless Chromium (Debian's package) for the test that renders a run report.
browser:
	bash scripts/setup-chromium.sh

demo: venv setup-prism
	$(PY) -m kappaflow.demo --events $(EVENTS) --workdir demo-out

# Runner binaries (and the Java expansion service) for the conformance tests, cached in $$KAPPAFLOW_CACHE (default .cache/):
# quick when already there, and CI (a fresh clone) installs them rather than skipping the tests.
runners: setup-prism setup-flink setup-expansion-service

setup-prism:
	bash scripts/setup-prism.sh

setup-flink: venv
	PYTHON=$(PY) bash scripts/setup-flink.sh

# Beam's Java expansion service and Java SDK workers (Kafka, GCP IO) for cross-language transforms.
setup-expansion-service:
	bash scripts/setup-expansion-service.sh

# A local standalone Flink cluster: FLINK_REST_PORT (8081) and FLINK_RPC_PORT (6123) on 127.0.0.1.
flink-cluster-start: setup-flink
	bash scripts/flink-cluster.sh start

flink-cluster-stop:
	bash scripts/flink-cluster.sh stop

test: venv servers browser runners
	$(PY) -m pytest -q --durations=25 tests

bench: venv setup-prism
	$(PY) benchmarks/clickstream_bench.py

bench-iot: venv
	$(PY) benchmarks/iot_bench.py

bench-cdc: venv
	$(PY) benchmarks/cdc_bench.py

bench-runners: venv runners
	$(PY) benchmarks/runners_bench.py

# The replay on a fresh local Flink cluster at parallelism 1 and 2 (1M events in 32 files).
bench-flink-cluster: venv setup-flink
	$(PY) benchmarks/flink_cluster_bench.py

clean:
	rm -rf demo-out .pytest_cache build *.egg-info
