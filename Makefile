# tcpconn: eBPF TCP connection receiver for the OpenTelemetry Collector.
#
#   make run     build the collector and run it on this node (needs root)
#   make test    build the collector and run every test (needs root)

GO        ?= go
TOOLS     := $(GO) tool -modfile=$(CURDIR)/tools/go.mod
OCB       := $(TOOLS) builder
BIN       := bin/otelcol-tcpconn
CONFIG    ?= config/otelcol-tcpconn.yaml
KUBE_VERSION    := 1.34.4
KUBE_BIN_DIR    ?= $(if $(XDG_CACHE_HOME),$(XDG_CACHE_HOME),$(HOME)/.cache)/tcpconn/kube-$(KUBE_VERSION)
export KUBE_BIN_DIR
CORE_VERSION    := v1.67.0
CORE_VERSION_X  := v0.161.0

.PHONY: all generate vmlinux build image kube-bin node-bin node-up node-down run test test-unit bench bench-kube bench-nat bench-walk bench-prog bench-prog-pair bench-memory bench-idle bench-scale overhead overhead-nat lint check-generated check-versions clean

all: build

## generate: regenerate the bpf2go objects (needs clang-19) and the mdatagen code (their //go:generate lines)
generate:
	$(GO) generate ./bpf/ ./tcpconnreceiver/

## vmlinux: refresh bpf/vmlinux.h from the running kernel's BTF (needs bpftool)
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

## build: build bin/otelcol-tcpconn with ocb from builder-config.yaml
build:
	$(OCB) --config=builder-config.yaml --skip-strict-versioning=false
	@mkdir -p bin
	cp _build/otelcol-tcpconn $(BIN)
	@$(MAKE) --no-print-directory check-versions

## kube-bin: build kube-apiserver and etcd for the identity tests from Go modules (cached in KUBE_BIN_DIR)
kube-bin:
	@if [ -x "$(KUBE_BIN_DIR)/kube-apiserver" ] && [ -x "$(KUBE_BIN_DIR)/etcd" ]; then \
	  echo "kube-apiserver and etcd $(KUBE_VERSION) cached in $(KUBE_BIN_DIR)"; \
	else \
	  mkdir -p "$(KUBE_BIN_DIR)" && cd hack/kube-bin && \
	  $(GO) build -trimpath -o "$(KUBE_BIN_DIR)/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver && \
	  $(GO) build -trimpath -o "$(KUBE_BIN_DIR)/etcd" go.etcd.io/etcd/server/v3; \
	fi

## node-bin: build the node's parts for the node tests and make node-up (kubelet, kube-proxy, kube-controller-manager, kube-scheduler; cached in KUBE_BIN_DIR)
NODE_BINS := kube-controller-manager kube-scheduler kubelet kube-proxy
node-bin: kube-bin
	@for b in $(NODE_BINS); do \
	  if [ -x "$(KUBE_BIN_DIR)/$$b" ]; then echo "$$b $(KUBE_VERSION) cached in $(KUBE_BIN_DIR)"; \
	  else (cd hack/kube-bin && $(GO) build -trimpath -o "$(KUBE_BIN_DIR)/$$b" k8s.io/kubernetes/cmd/$$b) || exit 1; fi; \
	done

NODE_DIR ?= /run/tcpconn-node
## node-up: a real single-node Kubernetes on this machine (as root; containerd, runc and the CNI plugins from Debian) with the agent's image loaded; then: KUBECONFIG=$(NODE_DIR)/node/kubeconfig kubectl apply -k deploy/
node-up: build image node-bin
	$(GO) run ./internal/kubenode/nodectl up -dir $(NODE_DIR) -image dist/otelcol-tcpconn-image.tar

## node-down: stop the node and restore the host (sysctls, netfilter, mounts, cgroups)
node-down:
	$(GO) run ./internal/kubenode/nodectl down -dir $(NODE_DIR)

## run: build, then run the collector with the default config (as root)
run: build
	@if [ "$$(id -u)" != 0 ]; then echo "make run loads an eBPF probe: run it as root (sudo make run)" >&2; exit 1; fi
	./$(BIN) --config $(CONFIG)

## test: build the collector, the image and the Kubernetes parts, then run every test (as root: kernel, pipeline and node tests load the probe)
# The node tests run after the others, alone: their agent's probe sees every
# connection on the machine, and the kernel tests' storms (100k connections)
# would overflow its ring buffer (counted, but the node tests count exactly).
test: build image node-bin
	$(GO) test -count=1 -race -timeout 30m -skip '^TestAgentOnNode' ./...
	$(GO) test -count=1 -race -timeout 30m -run '^TestAgentOnNode' -v ./deploy/

## test-unit: tests that need neither root nor the collector binary
test-unit:
	$(GO) test -count=1 ./tcpconnreceiver/... -run 'Config|Golden|Log|Slow|Decode|Tracker|Identity|Error'

## bench: Go benchmarks of decode and aggregation (compare runs with benchstat)
bench:
	$(GO) test -run '^$$' -bench 'Decode|Aggregate|LogRecord' -benchmem -count 6 ./bpf/ ./tcpconnreceiver/...

## lint: go vet and gofmt
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## check-generated: fail if the committed generated code differs from its source
check-generated: generate
	@git diff --exit-code -- bpf tcpconnreceiver || { echo "generated code is stale: run make generate and commit" >&2; exit 1; }
	@if [ -n "$$(git status --porcelain -- bpf tcpconnreceiver)" ]; then git status --porcelain -- bpf tcpconnreceiver; echo "untracked generated files" >&2; exit 1; fi

## check-versions: the receiver and the ocb build must use exactly one collector core version
check-versions:
	@for f in go.mod _build/go.mod; do \
	  bad=$$(grep -E '^\s+go.opentelemetry.io/collector/' $$f | grep -v 'cmd/builder' | awk '{print $$2}' | grep -v -x -e $(CORE_VERSION) -e $(CORE_VERSION_X) | sort -u); \
	  if [ -n "$$bad" ]; then echo "$$f: collector modules at $$bad, expected $(CORE_VERSION)/$(CORE_VERSION_X)" >&2; exit 1; fi; \
	done; echo "collector core versions: $(CORE_VERSION) / $(CORE_VERSION_X) only"

clean:
	rm -rf _build bin

## overhead: probe overhead on a connect/close storm run by a separate process (as root)
overhead: build
	$(GO) test -run '^$$' -bench Overhead -benchtime 1x -timeout 30m -v ./bench/

## overhead-nat: the conntrack lookup's cost per connection, paired, on a storm to a ClusterIP (as root; real API server)
overhead-nat: build kube-bin
	$(GO) test -run '^$$' -bench Overhead -benchtime 1x -timeout 30m -v ./bench/ -args -overhead.modes=collector-metrics-kube,collector-metrics-nat,collector-kube,collector-nat -overhead.rounds=20

## bench-kube: resolver lookup cost and informer memory for 3000 pods on a real API server
bench-kube: kube-bin
	$(GO) test -run '^$$' -bench 'Resolve' -benchmem ./identity/kube/
	$(GO) test -run '^$$' -bench 'InformerMemory' -benchtime 1x ./identity/kube/

## bench-nat: one conntrack lookup of a translated connection, as the connection table makes it once per connection to a Service address (as root)
bench-nat:
	$(GO) test -count=1 -run '^$$' -bench 'Reached' -benchmem ./natlookup/

## bench-prog: the tracepoint program's own run time per connection, by bpf_stats (as root)
bench-prog:
	$(GO) test -run '^$$' -bench Program -benchtime 20000x -count 3 ./bpf/

## bench-prog-pair: this build's programs against BASE's (default: issue 17's branch point), per connection by bpf_stats, on four storms, paired rounds (as root; needs git and clang-19)
BASE ?= e6c6f82
bench-prog-pair:
	$(GO) test -run '^$$' -bench ProgramAgainstBase -benchtime 1x -timeout 60m -v ./bpf/ -args -prog.base=$(BASE) -prog.rounds=20

## bench-walk: one report walk at 10k and 100k open connections: the kernel's side and its decoding (as root), then the reader's
bench-walk:
	$(GO) test -run '^$$' -bench Walk -benchtime 5x -timeout 20m ./bpf/
	$(GO) test -run '^$$' -bench WalkApply -benchtime 5x -count 6 ./tcpconnreceiver/

## image: the OCI image (dist/otelcol-tcpconn-image.tar) without a container engine
image: build
	cd tools && $(GO) run ./imagebuild -binary ../$(BIN) -config ../config/otelcol-tcpconn.yaml -out ../dist/otelcol-tcpconn-image.tar

## bench-scale: the capacity model's inputs (docs/scale.md): one node's flush, bytes per access-log record, one gateway under load (as root: needs bin/ and prometheus)
bench-scale: build
	$(GO) test -run '^$$' -bench ScaleFlush -benchtime 10x ./tcpconnreceiver/
	$(GO) test -run '^$$' -bench BatchBytes -benchtime 20x ./tcpconnreceiver/internal/accesslog/
	$(GO) test -run '^$$' -bench Gateway -benchtime 1x -v ./bench/
	cd tools && $(GO) run ./scalemodel -svg ../docs/scale-model.svg

## bench-idle: the collector's CPU in ms/s with 300 idle connections open, by configuration (as root)
bench-idle: build
	$(GO) test -run '^$$' -bench CollectorIdle -benchtime 1x -v ./bench/

## bench-memory: collector RSS idle, with 10k and 100k open connections, and on a 5k/s storm in the agent manifest's memory limit (as root)
bench-memory: build
	$(GO) test -run '^$$' -bench CollectorMemory -benchtime 1x -v ./bench/
