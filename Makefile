# ExoArmur. `make test` is the whole test suite; CI runs it via .ci/run.
GO ?= go
BIN ?= bin/exoarmur
# The evidence and load tools (reality, bench soak, evidence clock, seeded
# keys), kept out of the production binary.
LAB ?= bin/exoarmur-lab
PKGS := ./...

.PHONY: all build test test-short demo lint fuzz bench soak clean inventory reality reality-verify

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/exoarmur
	CGO_ENABLED=0 $(GO) build -trimpath -o $(LAB) ./cmd/exoarmur-lab

# The whole suite: vet, gofmt check, race detector, every test.
test:
	$(GO) vet $(PKGS)
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

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
