# obs-agent — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/obs-agent
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
DEMO_DB ?= /tmp/obs-agent-demo.db

.PHONY: help build generate check-generated check-deploy test test-race fuzz test-ui collector test-arm64 test-kernel test-short bench bench-ui demo lint install clean deps

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install the system packages the build, tests and lint need (Debian/Ubuntu, as root)
	./scripts/deps.sh

build: ## build bin/obs-agent (needs no clang: the BPF objects are committed)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/obs-agent

generate: ## regenerate the BPF objects and their Go bindings from bpf/ (needs clang)
	cd internal/uprobe && $(GO) generate ./...

check-generated: generate ## fail if the committed BPF objects differ from bpf/
	@git diff --exit-code --stat -- internal/uprobe || { echo "generated BPF files drifted from bpf/: run 'make generate' and commit"; exit 1; }

# The end-to-end OTLP tests (cmd/obs-agent/collector*_test.go) run against a
# real OpenTelemetry Collector: test builds it first (cached by the hash of
# its manifest) and passes its path in OBS_OTELCOL.
test: ## run every test, then the live pipeline under -race and each fuzz target; the probe tests need root (sudo make test)
	col=$$(GO=$(GO) ./scripts/build-collector.sh) && OBS_OTELCOL=$$col $(GO) test -count=1 -timeout 30m ./...
	$(MAKE) test-race fuzz test-ui

collector: ## build the OpenTelemetry Collector of the end-to-end OTLP tests (ocb, testdata/collector/builder-config.yaml); prints its path
	GO=$(GO) ./scripts/build-collector.sh

# The root end-to-end tests of the live pipeline (BPF rings -> agent ->
# queue -> store), floods included, under the race detector. Left out, as
# the same pipeline at more cost (measured under -race on the shared 2-core
# VM): TestCircuitBreaker 555 s, TestBurst20000 135 s, TestHotLoopAllRecorded
# and TestForeignBinaryGofmt 83 s each. All of them ran race-clean. The
# cross-release matrix shrinks to the newest release under -race
# (testutil.Matrix): the full matrix runs without -race just before.
RACE_SKIP ?= TestCircuitBreaker|TestBurst20000|TestHotLoopAllRecorded|TestForeignBinaryGofmt
test-race: ## the root end-to-end tests of internal/agent and internal/queue, the tracer's in-place switches, and the store's no-op connection mutexes, under the race detector (root)
	$(GO) test -race -count=1 -timeout 30m -skip '$(RACE_SKIP)' ./internal/agent/ ./internal/queue/
	$(GO) test -race -count=1 -timeout 10m -run 'TestUpdateInPlace' ./internal/uprobe/
	$(GO) test -race -count=1 -timeout 10m -run 'TestConcurrentStoreRace|TestRawWriterActive' ./internal/store/
	$(GO) test -race -count=1 -timeout 10m ./internal/sqliteconf/

FUZZTIME ?= 20s
# go1.26's fuzz coordinator can fail a clean run with "context deadline
# exceeded" as -fuzztime ends (go.dev/issue/75804, seen here); go1.27 has the fix.
FUZZ_TOOLCHAIN ?= go1.27.4
fuzz: ## run every fuzz target for FUZZTIME (20s) each, failing on a crash or a target that did not run
	GOTOOLCHAIN=$(FUZZ_TOOLCHAIN) FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

UI_SCREENSHOTS ?= $(CURDIR)/bin/ui-screenshots
test-ui: ## web UI in headless Chromium (own module; needs root and chromium-headless-shell); screenshots in bin/ui-screenshots
	cd internal/ui/browsertest && $(GO) vet ./... && OBS_UI_SCREENSHOTS=$(UI_SCREENSHOTS) $(GO) test -count=1 -timeout 15m ./...

bench-ui: ## time every API request of the UI's pages on the 6 h / 6 M-call benchmark store (built and cached on first use)
	$(GO) test -run '^$$' -bench Pages -benchtime 5x ./internal/ui/

test-arm64: ## build the unit tests for arm64 and run them under qemu-user (needs qemu-user-static)
	./scripts/test-arm64.sh

test-kernel: ## boot Debian's KERNEL=6.1|6.12 (ARCH=amd64|arm64) under qemu and run the probe tests in it (root)
	./scripts/test-kernel.sh $(KERNEL) $(or $(ARCH),amd64)

test-short: ## unit tests only, no root, no toolchain downloads
	$(GO) test -short -count=1 ./...

bench: build ## print the benchmark table: overhead, store, attach/detach, agent cost, retention (root)
	./scripts/bench.sh

demo: build ## trace the bundled testdata/calltree program and show what was recorded (root)
	./scripts/demo.sh $(DEMO_DB)

lint: ## gofmt, go vet, staticcheck, shellcheck, clang-format on bpf/
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	shellcheck scripts/*.sh .ci/run
	clang-format --dry-run --Werror bpf/*.c bpf/*.h

# The unit's ExecStart names $(PREFIX)/bin/obs-agent; an existing config is
# never overwritten (it is the admin's), the example goes beside it instead.
install: build ## install obs-agent into $(PREFIX)/bin, its systemd unit into $(UNITDIR) and the example config into $(SYSCONFDIR)/obs-agent (DESTDIR aware)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/obs-agent
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed -e 's#@PREFIX@#$(PREFIX)#g' -e 's#@SYSCONFDIR@#$(SYSCONFDIR)#g' deploy/obs-agent.service > $(DESTDIR)$(UNITDIR)/obs-agent.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/obs-agent.service
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/obs-agent
	if [ -e $(DESTDIR)$(SYSCONFDIR)/obs-agent/obs-agent.yaml ]; then \
		install -m 0600 deploy/obs-agent.yaml $(DESTDIR)$(SYSCONFDIR)/obs-agent/obs-agent.yaml.example; \
	else \
		install -m 0600 deploy/obs-agent.yaml $(DESTDIR)$(SYSCONFDIR)/obs-agent/obs-agent.yaml; \
	fi

# deploy/kubernetes/check is its own module (k8s.io/api pinned there), so
# obs-agent does not depend on the Kubernetes API; it needs only the Go
# module proxy.
check-deploy: ## check deploy/: the DaemonSet against the Kubernetes API types and, with kubeconform, its OpenAPI schema (strict), the systemd unit with systemd-analyze verify when present
	cd deploy/kubernetes/check && $(GO) vet ./... && $(GO) test -count=1 ./...
	@if command -v systemd-analyze >/dev/null; then \
		d=$$(mktemp -d) && mkdir -p $$d/bin && cp /bin/true $$d/bin/obs-agent && \
		sed -e "s#@PREFIX@#$$d#g" -e "s#@SYSCONFDIR@#/etc#g" deploy/obs-agent.service > $$d/obs-agent.service && \
		systemd-analyze verify $$d/obs-agent.service; rc=$$?; rm -rf $$d; exit $$rc; \
	else echo "systemd-analyze not installed: the unit is not verified"; fi

clean: ## remove build output
	rm -rf bin
