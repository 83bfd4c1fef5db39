# Every target sets up what it needs: a fresh machine with python3, make, node and npm is enough.
VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready
PROTOS := $(wildcard protos/backup/v1/*.proto)
PROMTOOL := .tools/prometheus/usr/bin/promtool
PROTOC_GEN_GO := .tools/protoc-gen-go/usr/bin/protoc-gen-go

.PHONY: demo test slow lint proto bench fuzz clean

demo: $(READY)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

test: $(READY) examples/node/node_modules/.ready $(PROMTOOL) $(PROTOC_GEN_GO)
	$(PY) -m pytest

slow: $(READY)
	$(PY) -m pytest -m slow

# The wire contract as release 1 shipped it (API.md: add freely, never rename or drop);
# buf clones 50 commits deep for a ref unless told, and release 1 is further back now.
RELEASE_1 := 11aa6e4

lint: $(READY) node_modules/.ready
	node_modules/.bin/buf lint && node_modules/.bin/buf breaking --against '.git#ref=$(RELEASE_1),depth=1000'
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy && $(VENV)/bin/lint-imports

proto: $(READY)
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos --grpc_python_out=protos $(PROTOS)

# restic, borg and strace for the engine's comparison (.ci/bench-tools says what it did).
bench: $(READY)
	-bash .ci/bench-tools
	PATH="$(CURDIR)/.tools/restic/usr/bin:$$PATH" $(PY) tests/bench/run.py

fuzz: $(READY)
	FUZZ_EXAMPLES=1000 FUZZ_RANDOM=1 $(PY) -m pytest tests/test_fuzz.py -o timeout=0 -q

$(READY): pyproject.toml
	python3 -m venv $(VENV) && $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e '.[dev]' && touch $@

# Without apt (not root, no network) the promtool tests skip, saying so; CI fails instead.
$(PROMTOOL):
	-bash .ci/promtool

# Likewise the Go check of the protos.
$(PROTOC_GEN_GO):
	-bash .ci/debian-extract protoc-gen-go

node_modules/.ready: package.json
	npm install --no-audit --no-fund --silent && touch $@

examples/node/node_modules/.ready: examples/node/package.json examples/node/package-lock.json
	cd examples/node && npm install --no-audit --no-fund --silent && touch node_modules/.ready

clean:
	rm -rf $(VENV) node_modules examples/node/node_modules build *.egg-info .tools
