# realname — build, run, test, bench. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
DATA_DIR ?= $(CURDIR)/.data
PROTO_SRC := $(wildcard protos/realname/v1/*.proto)
PROTO_OUT := services/proto

.PHONY: run test test-fast test-js protos lint bench venv clean browser node

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/realname dev-init --data-dir $(DATA_DIR)
	$(BIN)/realname serve --data-dir $(DATA_DIR)

# The whole pyramid: unit, integration (in-process gRPC, real databases), system (servers,
# CLI, docs walkthroughs, faults, browser).
test: $(STAMP) browser node
	$(MAKE) test-js
	$(BIN)/pytest

# The courier's in-browser verifier against the shared delivery vectors, under Node's own runner.
test-js: node
	node --test tests/js/

# Unit tests only: no server process, no database server (under a minute).
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit

# The public-page test drives Debian's chromium (playwright's own browser download needs a
# network this project cannot assume); install it once if it is missing.
browser:
	@test -x /usr/bin/chromium || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The JavaScript tests run under Debian's Node.js; install it once if it is missing.
node:
	@command -v node >/dev/null || { \
	  echo "installing Debian's nodejs for the JavaScript tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs; }

# Regenerates the committed protobuf/gRPC code; imports are rewritten so the generated modules
# live inside the services package instead of claiming the top-level name `realname`.
protos: $(STAMP)
	rm -rf $(PROTO_OUT)/realname
	mkdir -p $(PROTO_OUT)/realname/v1
	PATH=$(CURDIR)/$(BIN):$$PATH $(PY) -m grpc_tools.protoc -Iprotos \
	  --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) \
	  --mypy_out=quiet:$(PROTO_OUT) --mypy_grpc_out=quiet:$(PROTO_OUT) $(PROTO_SRC)
	sed -i -E 's/^from realname\.v1 import/from services.proto.realname.v1 import/' \
	  $(PROTO_OUT)/realname/v1/*.py $(PROTO_OUT)/realname/v1/*.pyi
	touch $(PROTO_OUT)/__init__.py $(PROTO_OUT)/realname/__init__.py $(PROTO_OUT)/realname/v1/__init__.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services registry
	$(BIN)/lint-imports

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) $(DATA_DIR)
