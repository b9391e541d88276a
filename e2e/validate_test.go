package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Every configuration shipped in config/ (the default of `make run`) and
// examples/ is accepted by the built collector, and a bad receiver field is
// rejected with its name.
func TestShippedConfigsValidate(t *testing.T) {
	bin := collectorBinary(t)
	configs, err := filepath.Glob(filepath.Join("..", "config", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	examples, err := filepath.Glob(filepath.Join("..", "examples", "*.yaml"))
	if err != nil || len(examples) < 6 {
		t.Fatalf("expected the examples in ../examples, got %v (%v)", examples, err)
	}
	configs = append(configs, examples...)
	for _, cfg := range configs {
		t.Run(filepath.Base(cfg), func(t *testing.T) {
			cmd := exec.Command(bin, "validate", "--config", cfg)
			// What the DaemonSet would inject.
			cmd.Env = append(os.Environ(), "K8S_NODE_NAME=node-a", "OTLP_ENDPOINT=127.0.0.1:4317", "OTLP_ENDPOINT_HTTP=http://127.0.0.1:4318")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("validate %s: %v\n%s", cfg, err, out)
			}
		})
	}
}

func TestInvalidReceiverConfigNamesField(t *testing.T) {
	bin := collectorBinary(t)
	cfg := `yaml:
receivers:
  tcpconn:
    probe: {ring_buffer_size: 5000}
exporters:
  debug: {}
service:
  pipelines:
    metrics: {receivers: [tcpconn], exporters: [debug]}
`
	out, err := exec.Command(bin, "validate", "--config", cfg).CombinedOutput()
	if err == nil {
		t.Fatalf("invalid config accepted:\n%s", out)
	}
	if !strings.Contains(string(out), "probe.ring_buffer_size: must be a power of two") {
		t.Fatalf("error does not name the field:\n%s", out)
	}
}
