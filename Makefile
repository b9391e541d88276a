# tcpconn: eBPF TCP connection receiver for the OpenTelemetry Collector.
#
#   make run     build the collector and run it on this node (needs root)
#   make test    build the collector and run every test (needs root)

GO        ?= go
TOOLS     := $(GO) tool -modfile=$(CURDIR)/tools/go.mod
OCB       := $(TOOLS) builder
BIN       := bin/otelcol-tcpconn
CONFIG    ?= config/otelcol-tcpconn.yaml
CORE_VERSION    := v1.67.0
CORE_VERSION_X  := v0.161.0

.PHONY: all generate vmlinux build run test test-unit bench overhead lint check-generated check-versions clean

all: build

## generate: regenerate the bpf2go objects (needs clang-19) and the mdatagen code
generate:
	$(GO) generate ./bpf/
	cd receiver && $(TOOLS) mdatagen metadata.yaml

## vmlinux: refresh bpf/vmlinux.h from the running kernel's BTF (needs bpftool)
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

## build: build bin/otelcol-tcpconn with ocb from builder-config.yaml
build:
	$(OCB) --config=builder-config.yaml --skip-strict-versioning=false
	@mkdir -p bin
	cp _build/otelcol-tcpconn $(BIN)
	@$(MAKE) --no-print-directory check-versions

## run: build, then run the collector with the default config (as root)
run: build
	@if [ "$$(id -u)" != 0 ]; then echo "make run loads an eBPF probe: run it as root (sudo make run)" >&2; exit 1; fi
	./$(BIN) --config $(CONFIG)

## test: build the collector, then run every test (as root: kernel and pipeline tests load the probe)
test: build
	$(GO) test -count=1 -race ./...

## test-unit: tests that need neither root nor the collector binary
test-unit:
	$(GO) test -count=1 ./receiver/ -run 'Config|Golden|Log|Slow|Decode'

## bench: Go benchmarks of decode and aggregation (compare runs with benchstat)
bench:
	$(GO) test -run '^$$' -bench 'Decode|Aggregate' -benchmem -count 6 ./bpf/ ./receiver/

## lint: go vet and gofmt
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## check-generated: fail if the committed generated code differs from its source
check-generated: generate
	@git diff --exit-code -- bpf receiver || { echo "generated code is stale: run make generate and commit" >&2; exit 1; }
	@if [ -n "$$(git status --porcelain -- bpf receiver)" ]; then git status --porcelain -- bpf receiver; echo "untracked generated files" >&2; exit 1; fi

## check-versions: the receiver and the ocb build must use exactly one collector core version
check-versions:
	@for f in go.mod _build/go.mod; do \
	  bad=$$(grep -E '^\s+go.opentelemetry.io/collector/' $$f | grep -v 'cmd/builder' | awk '{print $$2}' | grep -v -x -e $(CORE_VERSION) -e $(CORE_VERSION_X) | sort -u); \
	  if [ -n "$$bad" ]; then echo "$$f: collector modules at $$bad, expected $(CORE_VERSION)/$(CORE_VERSION_X)" >&2; exit 1; fi; \
	done; echo "collector core versions: $(CORE_VERSION) / $(CORE_VERSION_X) only"

clean:
	rm -rf _build bin

## overhead: probe overhead on a connect/close storm run by a separate process (as root)
overhead:
	$(GO) test -run '^$$' -bench Overhead -benchtime 1x -v ./bpf/
