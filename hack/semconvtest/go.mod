// Stand-in for contrib's test-only pkg/semconvtest, which the module proxy
// reachable from our build machines refuses to serve. ocb runs `go mod tidy`,
// which resolves k8sattributesprocessor's test imports; nothing links this.
module github.com/open-telemetry/opentelemetry-collector-contrib/pkg/semconvtest

go 1.25.0
