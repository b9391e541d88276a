package tcpconnreceiver

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/tcpconn/tcpconn/identity/kube"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
)

func TestLoadConfig(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)

	custom := createDefaultConfig()
	custom.FlushInterval = 10 * time.Second
	custom.Profile, custom.Views, custom.Temporality = ProfileIstio, ViewsConfig{Service: true}, TemporalityDelta
	custom.SeriesLimit, custom.SeriesExpiry, custom.Histograms = 500, time.Hour, false
	custom.ReportInterval, custom.AdoptExisting, custom.CountAdoptedBytes = 30*time.Second, false, true
	custom.Probe = ProbeConfig{AttachMode: "raw_tp", RingBufferSize: 1 << 20, WakeupBytes: 4096, PollInterval: 20 * time.Millisecond, IdlePollInterval: 500 * time.Millisecond, LockFile: "/run/custom.lock", BackupProgram: false, TrackedSockets: 1 << 18}
	custom.Logs = LogsConfig{Open: true, Close: true, Failure: false, Update: true, MaxBatchSize: 50, FlushInterval: 200 * time.Millisecond, Body: "none", QueueSize: 8,
		SamplingRatio: 0.25, Filter: LogFilterConfig{IncludeNamespaces: []string{"shop"}, ExcludeNamespaces: []string{"kube-system"},
			FailuresOnly: true, MinDuration: time.Second, MinBytes: 100}}
	custom.Filter = FilterConfig{IncludeCIDRs: []string{"10.0.0.0/8", "fd00::/8"}, ExcludeCIDRs: []string{"10.0.0.1/32"}}
	require.NoError(t, confmap.NewFromStringMap(map[string]any{
		"metrics": map[string]any{"tcp.bytes.sent": map[string]any{"enabled": false}},
	}).Unmarshal(&custom.MetricsBuilderConfig))
	custom.HistogramMetrics.RTT.Enabled = false

	withKube := createDefaultConfig()
	withKube.Kubernetes = kube.Config{Enabled: true, AuthType: kube.AuthKubeConfig, Context: "prod", NodeName: "node-a",
		TrustDomain: "example.org", ClusterName: "prod-eu", ClusterDomain: "corp.local", PodGracePeriod: 10 * time.Minute}
	withKube.NAT.NetNS = NetNSHost
	natPath := createDefaultConfig()
	natPath.NAT.NetNS = "/run/netns/node"
	withNone := createDefaultConfig()
	withNone.Kubernetes.Enabled, withNone.Kubernetes.AuthType, withNone.Kubernetes.InsecureSkipTLSVerify = true, kube.AuthNone, true

	tests := []struct {
		id       component.ID
		expected *Config
		// errs are the fragments the validation error must name.
		errs []string
	}{
		{id: component.NewID(metadata.Type), expected: createDefaultConfig()},
		{id: component.NewIDWithName(metadata.Type, "custom"), expected: custom},
		{id: component.NewIDWithName(metadata.Type, "kubernetes"), expected: withKube},
		{id: component.NewIDWithName(metadata.Type, "bad_kubernetes"), errs: []string{
			`kubernetes.auth_type: must be serviceAccount, kubeConfig or none, got "token"`,
			"kubernetes.trust_domain: must not be empty",
			"kubernetes.cluster_name: must not be empty",
			"kubernetes.cluster_domain: must not be empty",
			"kubernetes.pod_grace_period: must not be negative",
			`nat.netns: must be host (the node's own, with hostPID), an absolute path (e.g. /run/netns/node) or empty (the collector's own), got "proc/1/ns/net"`,
		}},
		{id: component.NewIDWithName(metadata.Type, "nat_path"), expected: natPath},
		{id: component.NewIDWithName(metadata.Type, "bad_nat_host"), errs: []string{`nat.netns: must be host (the node's own, with hostPID), an absolute path (e.g. /run/netns/node) or empty (the collector's own), got "Host"`}},
		{id: component.NewIDWithName(metadata.Type, "kubernetes_none"), expected: withNone},
		{id: component.NewIDWithName(metadata.Type, "bad_kubernetes_none"), errs: []string{
			"kubernetes.auth_type: none does not verify the API server's certificate: set kubernetes.insecure_skip_tls_verify: true to accept that",
		}},
		{id: component.NewIDWithName(metadata.Type, "bad_kubernetes_insecure"), errs: []string{
			"kubernetes.insecure_skip_tls_verify: only with auth_type none",
		}},
		{id: component.NewIDWithName(metadata.Type, "bad_flush_interval"), errs: []string{"flush_interval: must be positive"}},
		{id: component.NewIDWithName(metadata.Type, "bad_attach_mode"), errs: []string{`probe.attach_mode: must be auto, tp_btf or raw_tp, got "kprobe"`}},
		{id: component.NewIDWithName(metadata.Type, "bad_ring_buffer_size"), errs: []string{"probe.ring_buffer_size: must be a power of two"}},
		{id: component.NewIDWithName(metadata.Type, "bad_tracked_sockets"), errs: []string{"probe.tracked_sockets: must be a power of two between 1024 and 16777216, got 100000"}},
		{id: component.NewIDWithName(metadata.Type, "bad_wakeup_bytes"), errs: []string{"probe.wakeup_bytes: must be at most probe.ring_buffer_size"}},
		{id: component.NewIDWithName(metadata.Type, "bad_poll_interval"), errs: []string{"probe.poll_interval: must be between 1ms and 1m"}},
		{id: component.NewIDWithName(metadata.Type, "bad_idle_poll_interval"), errs: []string{"probe.idle_poll_interval: must be between 0 (no back-off) and 1m"}},
		{id: component.NewIDWithName(metadata.Type, "bad_cidrs"), errs: []string{
			`filter.include_cidrs[1]: netip.ParsePrefix("not-a-cidr")`,
			`filter.exclude_cidrs[0]: netip.ParsePrefix("10.0.0.1"): no '/'`,
		}},
		{id: component.NewIDWithName(metadata.Type, "bad_logs"), errs: []string{
			"logs.max_batch_size: must be positive",
			"logs.flush_interval: must be positive",
			`logs.body: must be line or none, got "json"`,
			"logs.queue_size: must be positive",
			"logs.sampling_ratio: must be between 0 and 1, got 1.5",
			"logs.filter.min_duration: must not be negative",
		}},
		{id: component.NewIDWithName(metadata.Type, "bad_metrics"), errs: []string{
			`profile: must be otel, istio or kmesh, got "linkerd"`,
			`temporality: must be cumulative or delta, got "both"`,
			"series_limit: must be positive, got 0",
			"series_expiry: must be 0 (never) or at least twice flush_interval, got 1s",
		}},
		{id: component.NewIDWithName(metadata.Type, "bad_views"), errs: []string{"views: at least one of workload and service must be on"}},
		{id: component.NewIDWithName(metadata.Type, "bad_report_interval"), errs: []string{"report_interval: must be 0 (off) or at least 100ms, got 50ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.id.String(), func(t *testing.T) {
			cfg := NewFactory().CreateDefaultConfig()
			sub, err := cm.Sub(tt.id.String())
			require.NoError(t, err)
			require.NoError(t, sub.Unmarshal(cfg))
			err = confmap.Validate(cfg)
			if len(tt.errs) == 0 {
				require.NoError(t, err)
				assert.Equal(t, tt.expected, cfg)
				return
			}
			require.Error(t, err)
			for _, want := range tt.errs {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestUnknownFieldRejected(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)
	sub, err := cm.Sub("tcpconn/unknown_field")
	require.NoError(t, err)
	err = sub.Unmarshal(NewFactory().CreateDefaultConfig())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "flush_intervall")
}

// TestProbeOptions: the backup program is on unless configured off.
func TestProbeOptions(t *testing.T) {
	cfg := createDefaultConfig()
	assert.False(t, cfg.probeOptions().NoBackup, "default: the backup program is attached")
	cfg.Probe.BackupProgram = false
	assert.True(t, cfg.probeOptions().NoBackup)
}
