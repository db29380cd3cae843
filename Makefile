GO ?= go

SANDBOX_STATE := .sandbox
SANDBOX_BIN   := $(SANDBOX_STATE)/bin/sandbox

.PHONY: sandbox sandbox-down sandbox-bin

sandbox-bin:
	@mkdir -p $(SANDBOX_STATE)/bin
	@$(GO) build -o $(SANDBOX_BIN) ./e2e/cmd/sandbox

# Starts the e2e control plane in the background (pid in .sandbox/pid, log in
# .sandbox/sandbox.log) and prints the KUBECONFIG export once it is ready:
#   eval "$$(make -s sandbox)"
sandbox: sandbox-bin
	@if ! $(SANDBOX_BIN) running -state $(SANDBOX_STATE); then \
		nohup $(SANDBOX_BIN) start -state $(SANDBOX_STATE) >$(SANDBOX_STATE)/sandbox.log 2>&1 & \
		echo $$! >$(SANDBOX_STATE)/pid; \
	fi
	@$(SANDBOX_BIN) wait -state $(SANDBOX_STATE)

# Stops it and waits until every component process is gone.
sandbox-down:
	@if [ -x $(SANDBOX_BIN) ]; then $(SANDBOX_BIN) down -state $(SANDBOX_STATE); fi
