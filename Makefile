# ckpt-apptainer build, test and demo entry points.
#
#   make demo          watch a job being checkpointed, killed and restarted
#   make test          unit and integration tests (installs dependencies when
#                      root), the kernel matrix on Debian 11's 5.10 kernel
#   make test-kernels  the kernel matrix on 5.10, 6.1 and 6.12 (qemu)
#   make test-nodes    a job restarted on another node (two qemu machines)
#   make gpu-test      GPU jobs, on a machine with an NVIDIA GPU and torch
#                      on 5.10, 6.1 and 6.12
#   make fuzz          the image decoders under the fuzzer (FUZZTIME each)
#   make test-rhel8    the integration tests again with mainline 4.18's
#                      feature set (CKPT_APPTAINER_DISABLE=rhel8)
#   make bench         benchmarks (one iteration each)
#   make lint          gofmt, go vet, staticcheck
#   make install       the binaries, man page, shell completions and a
#                      modulefile under PREFIX (default /usr/local; DESTDIR too)
#   make release       a static build in dist/ckpt-apptainer-VERSION-linux-amd64.tar.gz
#                      with its SHA256SUMS
#
# `make test` and `make demo` install apptainer & co. when run as root; as any
# other user they check that the dependencies are present and say what to run
# as root when they are not.

SHELL := /bin/bash
comma := ,
.SHELLFLAGS := -eu -o pipefail -c

# A Go in /usr/local/go wins over an older distribution one: go.mod asks for 1.26.
ifneq ($(wildcard /usr/local/go/bin/go),)
export PATH := /usr/local/go/bin:$(PATH)
endif

GO ?= go
BIN := bin/ckpt-apptainer
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo $(GO) run honnef.co/go/tools/cmd/staticcheck@latest)
# The integration tests take about 42 minutes on a 2-core machine; the
# limit leaves room for a slower one, and a full CI run stays under an hour.
TEST_TIMEOUT ?= 50m
BENCH_TIMEOUT ?= 60m

# With CKPT_REQUIRE_APPTAINER=1 the integration tests fail instead of skipping
# when Apptainer cannot run; CI sets it. Passed through only when set.
ifdef CKPT_REQUIRE_APPTAINER
export CKPT_REQUIRE_APPTAINER
endif

# Commands the tests and the demo need; deps checks them when not root.
DEP_CMDS := gcc busybox man apptainer criu squashfuse squashfuse_ll fuse-overlayfs fusermount3 newuidmap unshare \
	qemu-system-x86_64

# The kernels the kernel matrix and the two-node test boot (fetch-kernels.sh names):
# make test runs the oldest (setup-test-env.sh fetches it), make
# test-kernels and make test-nodes all of them.
TEST_KERNELS ?= 5.10
ALL_KERNELS := 5.10 6.1 6.12
TEST_ENV := /run/ckpt-apptainer-test.env

.PHONY: all build deps test fuzz test-kernels test-rhel8 test-nodes gpu-test bench demo lint clean install release

all: build

# What `ckpt-apptainer version` says: a release tag (vX.Y.Z) when HEAD has
# one, else BASE_VERSION-dev; the commit ("-dirty" with uncommitted
# changes); the build time (SOURCE_DATE_EPOCH when set, for reproducible
# builds).
BASE_VERSION := 0.1.0
VERSION ?= $(shell git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null | sed 's/^v//' || true)
ifeq ($(VERSION),)
VERSION := $(BASE_VERSION)-dev
endif
COMMIT := $(shell git rev-parse HEAD 2>/dev/null || true)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
BUILD_DATE := $(shell date -u $(if $(SOURCE_DATE_EPOCH),-d @$(SOURCE_DATE_EPOCH)) +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)

# The GPU helper loads libcuda.so.1 at run time (no cgo); the supervisor
# starts it from beside its own executable when a job uses a GPU.
build:
	mkdir -p bin
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/ckpt-apptainer
	CGO_ENABLED=0 $(GO) build -o $(dir $(BIN))ckpt-apptainer-cuda ./cmd/ckpt-apptainer/cudahelper

# The installed tree: PREFIX/bin (the supervisor finds its GPU helper beside
# itself), the man page and completions written by the binary from its own
# command line, and a modulefile that finds the tree from where it lies.
PREFIX ?= /usr/local
DESTDIR ?=
install: build
	scripts/install-tree.sh bin "$(DESTDIR)$(PREFIX)" $(VERSION)

# A static build (no libc dependence: it runs on RHEL 8 as on Debian 12),
# packed as the installed tree, with checksums.
DIST := dist
release:
	rm -rf $(DIST)/stage && mkdir -p $(DIST)/stage/bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(DIST)/stage/bin/ckpt-apptainer ./cmd/ckpt-apptainer
	CGO_ENABLED=0 $(GO) build -trimpath -o $(DIST)/stage/bin/ckpt-apptainer-cuda ./cmd/ckpt-apptainer/cudahelper
	scripts/install-tree.sh $(DIST)/stage/bin $(DIST)/stage/ckpt-apptainer-$(VERSION) $(VERSION)
	cp README.md $(DIST)/stage/ckpt-apptainer-$(VERSION)/
	tar -C $(DIST)/stage --owner=0 --group=0 --numeric-owner --sort=name \
		$(if $(SOURCE_DATE_EPOCH),--mtime=@$(SOURCE_DATE_EPOCH)) \
		-czf $(DIST)/ckpt-apptainer-$(VERSION)-linux-amd64.tar.gz ckpt-apptainer-$(VERSION)
	rm -rf $(DIST)/stage
	cd $(DIST) && sha256sum ckpt-apptainer-$(VERSION)-linux-amd64.tar.gz > SHA256SUMS
	@echo "$(DIST)/ckpt-apptainer-$(VERSION)-linux-amd64.tar.gz"

deps:
	@if [ "$$(id -u)" -eq 0 ]; then \
		scripts/install-deps.sh; \
		scripts/setup-test-env.sh; \
	else \
		missing=""; \
		for c in $(DEP_CMDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
		[ -f $(TEST_ENV) ] || missing="$$missing $(TEST_ENV)"; \
		if [ -n "$$missing" ]; then \
			echo "missing:$$missing" >&2; \
			echo "run as root: scripts/install-deps.sh && scripts/setup-test-env.sh" >&2; \
			exit 1; \
		fi; \
		echo "dependencies present"; \
	fi

test: deps build
	CKPT_TEST_KERNELS=$(subst $(eval) ,$(comma),$(TEST_KERNELS)) CKPT_TEST_NODES=$(subst $(eval) ,$(comma),$(TEST_KERNELS)) \
		$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) fuzz

# The image decoders under the fuzzer for a short while (FUZZTIME each);
# new crashers land in testdata/fuzz and fail the run.
FUZZTIME ?= 10s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReadManifest$$' -fuzztime $(FUZZTIME) ./engine/image
	$(GO) test -run '^$$' -fuzz '^FuzzValidateCore$$' -fuzztime $(FUZZTIME) ./engine

test-kernels: build
	scripts/fetch-kernels.sh $(ALL_KERNELS)
	CKPT_TEST_KERNELS=all $(GO) test -count=1 -timeout 60m -run TestKernelMatrix -v ./integration/

test-nodes: build
	scripts/fetch-kernels.sh $(ALL_KERNELS)
	CKPT_TEST_NODES=all $(GO) test -count=1 -timeout 60m -run TestTwoNodes -v ./integration/

# Every integration test on the features mainline 4.18 has, whatever this
# kernel has: each fallback a RHEL 8 node takes is on the path.
test-rhel8: deps build
	CKPT_APPTAINER_DISABLE=rhel8 $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./integration/...

# GPU jobs checkpointed and restarted, on a machine with an NVIDIA GPU and
# torch (scripts/gpu-test.sh says what runs).
gpu-test: build
	scripts/gpu-test.sh bin

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout $(BENCH_TIMEOUT) ./integration/...
	@if [ -e /proc/driver/nvidia/version ]; then GPU_TEST_BENCH=1 scripts/gpu-test.sh bin; fi

demo: deps build
	scripts/demo.sh

lint:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt -l reports:" >&2; echo "$$out" >&2; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

clean:
	rm -rf bin $(DIST)
