# vmlineage: the two set-up commands are `make demo` and `make test`.
SHELL        := /bin/bash
GO           ?= go
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS      := -s -w -X main.version=$(VERSION)
BIN          := bin
export VMLINEAGE_CACHE ?= $(HOME)/.cache/vmlineage

.PHONY: all build demo test test-deps unit vet fmt-check bench fuzz clean package package-test detectors chaos

all: build

build: detectors
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/vmlineage ./cmd/vmlineage

# The shipped detector plugins, with their SHA-256 pins in bin/detectors/SHA256SUMS.
detectors:
	./plugins/build-detectors.sh $(BIN)/detectors

# The main job on the embedded default: start the simulator with the
# threat-model scenario, trace it into a temporary store, print tree and records.
demo:
	$(GO) run ./cmd/vmlineage demo

# Everything the tests need (receivers, browser, validators), then all tests.
# With CI=true a missing dependency fails the run instead of skipping.
test: test-deps vet fmt-check unit package-test

test-deps:
	./scripts/test-deps.sh

# The chaos suite's short form runs after the other packages, alone: it
# judges syslog repeats against the at-least-once window in wall time, and
# sharing two cores with the rest of the suite stretched that window.
unit:
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/agent/chaos$$')
	$(GO) test -count=1 -timeout 10m ./agent/chaos/

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# End-to-end durability under faults, long form (tens of thousands of
# operations, 100 SIGKILLs; about half an hour). The short form is part of
# `make test` (agent/chaos). Sized by CHAOS_* variables: agent/chaos/README.md.
chaos:
	./scripts/chaos.sh

# Speed and memory figures (printed, never asserted).
bench:
	./scripts/bench.sh

# Short fuzz runs of every fuzz target; the corpus found is kept in testdata/fuzz.
FUZZTIME ?= 30s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# .deb and .rpm in dist/ (nfpm), with the detectors pinned in the default config.
package:
	./packaging/build.sh

# Builds, lints, installs, runs and purges the packages (root; installs lintian and rpm when missing).
package-test:
	./scripts/package-test.sh

clean:
	rm -rf $(BIN) dist
