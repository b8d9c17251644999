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

# Debian packages the integration tests run for real (a Prometheus server).
system-deps:
	@command -v prometheus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "error: the tests need Debian's prometheus package: sudo apt-get install prometheus"; exit 1; fi; }

test: models system-deps
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)
