# `make demo` and `make test` bootstrap .venv on a fresh machine (Python 3.11, Java 17).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export SPARK_LOCAL_IP ?= 127.0.0.1
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test lint bench clean check-java

check-java:
	@command -v java >/dev/null 2>&1 || { echo "error: Java 17+ is required (Spark 4). Install it, e.g. 'apt-get install openjdk-17-jre-headless'." >&2; exit 1; }
	@java -version 2>&1 | head -1 | grep -Eq '"(1[7-9]|2[0-9])' || { echo "error: Java 17+ is required; found: $$(java -version 2>&1 | head -1)" >&2; exit 1; }

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; lakecurate needs Python 3.11" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: check-java $(STAMP)
	$(VENV)/bin/lakecurate --lake demo-lake demo

test: check-java $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf demo-lake .pytest_cache

# A real Spark standalone cluster (master + two 1-core workers on 127.0.0.1) runs
# the refresh through spark-submit and compares it with local mode, and the refresh
# is SIGKILLed during ingest, embed, dedup and publish; then the same cluster on
# real hosts (network namespaces: master, two workers, an S3 server; needs root, as
# CI has) runs the refresh with the lake on S3; several minutes.
.PHONY: cluster-test
cluster-test: check-java $(STAMP)
	$(PY) -m pytest -q -m "cluster or slow" tests/test_cluster.py tests/test_refresh_crash.py tests/test_hosts.py
