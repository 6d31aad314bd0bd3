# obs-agent — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/obs-agent
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
PREFIX ?= /usr/local
DEMO_DB ?= /tmp/obs-agent-demo.db

.PHONY: help build generate check-generated test test-ui test-arm64 test-short bench bench-ui demo lint install clean deps

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

test: ## run every test; the probe tests need root (sudo make test)
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) test-ui

UI_SCREENSHOTS ?= $(CURDIR)/bin/ui-screenshots
test-ui: ## web UI in headless Chromium (own module; needs root and chromium-headless-shell); screenshots in bin/ui-screenshots
	cd internal/ui/browsertest && $(GO) vet ./... && OBS_UI_SCREENSHOTS=$(UI_SCREENSHOTS) $(GO) test -count=1 -timeout 15m ./...

bench-ui: ## time every API request of the UI's pages on the 6 h / 6 M-call benchmark store (built and cached on first use)
	$(GO) test -run '^$$' -bench Pages -benchtime 5x ./internal/ui/

test-arm64: ## build the unit tests for arm64 and run them under qemu-user (needs qemu-user-static)
	./scripts/test-arm64.sh

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

install: build ## install obs-agent into $(PREFIX)/bin
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/obs-agent

clean: ## remove build output
	rm -rf bin
