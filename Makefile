# Two entry points for a newcomer: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup models system-deps clean

$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c requirements.lock -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

models: $(STAMP)
	$(PY) -m adapter models fetch

demo: models
	$(PY) -m adapter demo

# Debian packages the integration tests run for real: Prometheus, etcd (for the Kubernetes
# control plane), zstd (to unpack the prebuilt control plane), openssl (service-account keys).
SYSTEM_PACKAGES := prometheus etcd-server zstd openssl
system-deps:
	@missing=""; for cmd in prometheus etcd zstd openssl; do command -v $$cmd >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "error: the tests need Debian packages: sudo apt-get install $(SYSTEM_PACKAGES)"; exit 1; fi; fi

test: models system-deps
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
