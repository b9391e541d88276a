package tcpconnreceiver

import (
	"testing"

	"go.opentelemetry.io/collector/confmap"
	"sigs.k8s.io/yaml"

	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/accesslog"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/cidrfilter"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/profile"
)

// FuzzConfig unmarshals arbitrary YAML into the receiver's configuration:
// it must never panic, and a configuration that validates must be one the
// receiver can run (the invariants its code relies on). Run with
// `go test -fuzz=FuzzConfig ./receiver/`.
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		"flush_interval: 5s",
		"probe: {ring_buffer_size: 4096, wakeup_bytes: 4096}",
		"profile: istio\ntemporality: delta",
		"logs: {sampling_ratio: 0.5, filter: {min_bytes: 10}}",
		"filter: {include_cidrs: [10.0.0.0/8, 'fd00::/8']}",
		"kubernetes: {enabled: true, auth_type: kubeConfig}",
		"series_limit: -1",
		"probe: {ring_buffer_size: 3}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		var raw map[string]any
		if err := yaml.Unmarshal([]byte(doc), &raw); err != nil || raw == nil {
			return
		}
		cfg := createDefaultConfig()
		if err := confmap.NewFromStringMap(raw).Unmarshal(cfg); err != nil {
			return
		}
		if confmap.Validate(cfg) != nil {
			return
		}
		if n := cfg.Probe.RingBufferSize; n < 4096 || n&(n-1) != 0 {
			t.Fatalf("validated ring buffer size %d", n)
		}
		if cfg.FlushInterval <= 0 || cfg.SeriesLimit < 1 || cfg.Logs.MaxBatchSize <= 0 || cfg.Logs.QueueSize <= 0 {
			t.Fatalf("validated %+v", cfg)
		}
		if cfg.Logs.SamplingRatio < 0 || cfg.Logs.SamplingRatio > 1 {
			t.Fatalf("validated sampling ratio %v", cfg.Logs.SamplingRatio)
		}
		_ = cidrfilter.New(cfg.Filter)
		_ = accesslog.NewFilter(cfg.Logs)
		_ = profile.New(cfg.profileOptions())
	})
}
