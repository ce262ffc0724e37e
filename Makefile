VENV ?= .venv
PY := $(VENV)/bin/python
BUF := .tools/node_modules/.bin/buf
PROTOS := $(wildcard protos/resolutionflow/v1/*.proto)

.PHONY: run test soak proto lint install tools clean api-baseline

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,otel,bench]'
	touch $@

install: $(VENV)/.installed

# buf for the API checks; grpc-js for the test that reads the stream from Node.js.
.tools/.installed: Makefile
	npm install --silent --no-audit --no-fund --prefix .tools \
		@bufbuild/buf@1.75.0 @grpc/grpc-js@1 @grpc/proto-loader@0
	touch $@

tools: .tools/.installed

run: install
	$(VENV)/bin/resolutionflow serve

# Test workers (pytest-xdist): each worker has its own servers and databases. Two, one per
# core: every worker's servers hold PostgreSQL connections (max_connections is 100 on a
# default install), and the timing-sensitive tests want a core each.
TEST_WORKERS ?= 2

# Bytecode caches are written even where PYTHONDONTWRITEBYTECODE is set: every worker
# collects every test module (pytest rewrites their asserts) and the tests start a few
# hundred processes; compiling it all again each time was half of collecting.
test: install tools
	$(PY) -m tests.preflight
	$(MAKE) lint
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadgroup

# The five-minute soak (tests marked slow), alone on the machine: it measures memory.
soak: install
	$(PY) -m tests.preflight
	$(PY) -m pytest -m slow

proto: install
	$(PY) -m server.codegen protos

lint: install tools
	$(BUF) lint
	$(BUF) format --exit-code -d
	$(BUF) breaking --against protos/api-baseline.binpb
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The released API that `buf breaking` holds every change against. Comparing with
# `.git#branch=main` compared main with itself on main, so the gate could never fail there.
# Regenerate only when a breaking change is released on purpose (a new major package).
api-baseline: tools
	$(BUF) build -o protos/api-baseline.binpb

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache
