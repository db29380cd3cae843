# rebind: build, test and demo. Everything it needs comes from the Go module
# proxy (Go itself is expected at /usr/local/go or on PATH).
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# e2e packages start a real control plane each; 60m covers a cold build of
# the Kubernetes binaries and Velero on 2 cores (README, Benchmarks).
TEST_TIMEOUT ?= 60m

SANDBOX_STATE := .sandbox
SANDBOX_BIN   := $(SANDBOX_STATE)/bin/sandbox

.PHONY: all build test unit e2e bench bench-fleet faults demo lint sandbox sandbox-down sandbox-bin clean

all: build

## build: bin/rebind and its kubectl plugin name bin/kubectl-rebind
build:
	@mkdir -p bin
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/rebind ./cmd/rebind
	@ln -sf rebind bin/kubectl-rebind

## test: vet, then every test: unit tests and the e2e suites on the sandbox
test: lint
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

## unit: the tests that need no sandbox; the e2e suites skip each test and
## are listed as "skip", not "ok"
unit:
	@$(GO) test -count=1 -short -json ./... | $(GO) run ./e2e/cmd/unitsummary

## e2e: only the suites that run against the sandbox
e2e:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./e2e/...

## bench: every benchmark once, with its figures
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout $(TEST_TIMEOUT) ./pkg/inventory/ ./e2e/migrate/ ./e2e/sandbox/

## bench-fleet: a fleet of 48 drilled releases at --parallel 8, and per target at 1
bench-fleet:
	$(GO) test -run '^$$' -bench DrillFleet -benchtime 1x -timeout $(TEST_TIMEOUT) ./e2e/drill/

## faults: the fault matrix: SIGKILL the real binary at random instants inside
## the steps of every strategy (FAULTS_KILLS each, seeded: FAULTS_SEED replays
## a run), re-run until it converges; prints kills, converged, lost per strategy;
## then the API server, Grafana and snapshot-controller outages
FAULTS_KILLS ?= 30
faults:
	REBIND_FAULTS_KILLS=$(FAULTS_KILLS) REBIND_FAULTS_SEED=$(FAULTS_SEED) \
		$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./e2e/faults/

## demo: start the sandbox, deploy a seeded Grafana, restore it into another StorageClass, verify
demo: build
	$(GO) run ./e2e/cmd/demo -rebind bin/rebind

## lint: go vet and gofmt
lint:
	$(GO) vet ./...
	@out="$$(gofmt -l cmd pkg e2e)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

sandbox-bin:
	@mkdir -p $(SANDBOX_STATE)/bin
	@$(GO) build -o $(SANDBOX_BIN) ./e2e/cmd/sandbox

## sandbox: start the e2e control plane in the background; eval "$$(make -s sandbox)"
sandbox: sandbox-bin
	@if ! $(SANDBOX_BIN) running -state $(SANDBOX_STATE); then \
		nohup $(SANDBOX_BIN) start -state $(SANDBOX_STATE) >$(SANDBOX_STATE)/sandbox.log 2>&1 & \
		echo $$! >$(SANDBOX_STATE)/pid; \
	fi
	@$(SANDBOX_BIN) wait -state $(SANDBOX_STATE)

## sandbox-down: stop it and wait until every component process is gone
sandbox-down:
	@if [ -x $(SANDBOX_BIN) ]; then $(SANDBOX_BIN) down -state $(SANDBOX_STATE); fi

clean:
	rm -rf bin $(SANDBOX_STATE)
