# ExoArmur. `make test` is the whole test suite; CI runs it via .ci/run.
GO ?= go
BIN ?= bin/exoarmur
# The evidence and load tools (reality, bench soak, evidence clock, seeded
# keys), kept out of the production binary.
LAB ?= bin/exoarmur-lab
PKGS := ./...
# The Python client's tests (clients/python) run with this interpreter.
PYTHON ?= python3

.PHONY: all build test test-python test-short demo lint fuzz bench soak clean inventory reality reality-verify

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/exoarmur
	CGO_ENABLED=0 $(GO) build -trimpath -o $(LAB) ./cmd/exoarmur-lab

# The whole suite: vet, gofmt check, race detector, every test, then the
# Python client's tests.
test:
	$(GO) vet $(PKGS)
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	@$(MAKE) --no-print-directory test-python

# The Python client (clients/python, standard library only) against a real
# server: the tests start $(BIN) serve themselves (go build is quick when
# nothing changed). No Python is a failure, never a skip.
test-python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "test-python: $(PYTHON) not found: the Python client tests need Python 3.8 or later (set PYTHON=...)" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 8))' || { echo "test-python: $$($(PYTHON) --version 2>&1) is too old: the Python client needs 3.8 or later" >&2; exit 1; }
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/exoarmur
	cd clients/python && EXOARMUR_BIN=$(abspath $(BIN)) PYTHONDONTWRITEBYTECODE=1 $(PYTHON) -m unittest discover -s tests -v

# go vet plus staticcheck (pinned).
lint:
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

test-short:
	$(GO) test -count=1 $(PKGS)

demo:
	$(GO) run ./cmd/exoarmur demo

# Each fuzz target for a bounded time (FUZZTIME, default 20s); the corpus
# each grows is kept in the package's testdata/fuzz (replayed by go test).
FUZZTIME ?= 20s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=3 ./internal/gate/ ./internal/replay/

# Regenerate docs/design/00_execution_surface.md from the source.
inventory:
	$(GO) run ./tools/inventory

# The cold-reviewer run: the bundle artifacts/reality_run_007 (see README).
# LOCAL=1 runs the stack as plain processes instead of docker-compose.
reality: build
ifeq ($(LOCAL),1)
	$(LAB) reality run --local --bin $(BIN) --lab $(LAB)
else
	./scripts/docker-up.sh
	$(LAB) reality run --bin $(BIN) --lab $(LAB)
endif

# Verify the bundle offline: SHA256SUMS, replay == replay_report.json, GREEN.
reality-verify:
	$(GO) run ./cmd/exoarmur-lab reality verify

# Ten minutes at 900 governed executions/s (about half the measured maximum),
# sampled every minute; fails unless memory, goroutines and p99 stay flat.
soak: build
	$(LAB) bench soak --rate 900 --clients 32 --duration 10m --interval 1m --retention 1m

clean:
	rm -rf bin
