package tcpconnreceiver

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/collector/confmap"

	"github.com/tcpconn/tcpconn/bpf"
	"github.com/tcpconn/tcpconn/identity/kube"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/accesslog"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/aggregate"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/cidrfilter"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/metadata"
	"github.com/tcpconn/tcpconn/tcpconnreceiver/internal/profile"
)

// Config is the tcpconn receiver's configuration.
type Config struct {
	// FlushInterval is how often aggregated metrics are emitted.
	FlushInterval time.Duration `mapstructure:"flush_interval"`
	// ReportInterval is how often every open connection is reported, idle
	// or not: counters rise while it lives. 0 turns reports off (then
	// counters move at close only).
	ReportInterval time.Duration `mapstructure:"report_interval"`
	// AdoptExisting tracks the connections already open when the receiver
	// starts (in every network namespace).
	AdoptExisting bool `mapstructure:"adopt_existing"`
	// CountAdoptedBytes counts what adopted connections had carried before
	// the receiver started as if it were new traffic.
	CountAdoptedBytes bool `mapstructure:"count_adopted_bytes"`
	// Profile names the metrics: otel (dotted OTel names, the local end on
	// the Resource), istio (istio_tcp_* with Istio's labels) or kmesh
	// (kmesh_tcp_* with Kmesh's labels).
	Profile string `mapstructure:"profile"`
	// Views turns the workload and service metric families on or off.
	Views ViewsConfig `mapstructure:"views"`
	// Temporality of the counting metrics: cumulative or delta.
	Temporality string `mapstructure:"temporality"`
	// SeriesLimit bounds each view's series; beyond it records go to one
	// overflow series, counted in tcpconn.series.overflow.
	SeriesLimit int `mapstructure:"series_limit"`
	// SeriesExpiry drops series not updated for this long (and with no
	// open connection); one that comes back starts anew. 0 keeps them.
	SeriesExpiry time.Duration `mapstructure:"series_expiry"`
	// Histograms adds connection duration and RTT histograms (otel profile).
	Histograms bool `mapstructure:"histograms"`
	// Probe tunes the eBPF probe and its ring buffer.
	Probe ProbeConfig `mapstructure:"probe"`
	// Logs chooses which access-log records are emitted and how they are batched.
	Logs LogsConfig `mapstructure:"logs"`
	// Filter keeps or drops connections by address before anything is
	// counted or logged.
	Filter FilterConfig `mapstructure:"filter"`
	// Kubernetes resolves both ends of each connection to pods, workloads
	// and services.
	Kubernetes kube.Config `mapstructure:"kubernetes"`
	// NAT finds, in connection tracking, the backend that a connection to
	// a Service's ClusterIP reached (with kubernetes on).
	NAT NATConfig `mapstructure:"nat"`

	metadata.MetricsBuilderConfig `mapstructure:",squash"`
	// HistogramMetrics switch the otel profile's histograms one by one,
	// under metrics: like the generated metrics (mdatagen builds no
	// histograms: see Unmarshal).
	HistogramMetrics HistogramMetricsConfig `mapstructure:"-"`

	// prevent unkeyed literal initialization
	_ struct{}
}

// ViewsConfig selects metric families.
type ViewsConfig struct {
	// Workload: local workload x peer workload x direction (the kmesh
	// profile adds the destination pod).
	Workload bool `mapstructure:"workload"`
	// Service: per destination service.
	Service bool `mapstructure:"service"`
}

// Temporalities of the counting metrics.
const (
	TemporalityCumulative = "cumulative"
	TemporalityDelta      = "delta"
)

// ProbeConfig tunes the eBPF probe.
type ProbeConfig struct {
	// AttachMode is auto (tp_btf, falling back to raw_tp), tp_btf or raw_tp.
	AttachMode string `mapstructure:"attach_mode"`
	// RingBufferSize is the kernel ring buffer size in bytes: a power of two
	// of at least 4096. Records that do not fit are counted as dropped.
	RingBufferSize int `mapstructure:"ring_buffer_size"`
	// WakeupBytes is how much pending data wakes the reader early; below it
	// records wait at most PollInterval. 0: an eighth of RingBufferSize.
	WakeupBytes int `mapstructure:"wakeup_bytes"`
	// PollInterval bounds how long a record waits in the ring buffer.
	PollInterval time.Duration `mapstructure:"poll_interval"`
	// IdlePollInterval is how far the reader backs off while the ring
	// buffer stays empty: the wait doubles from PollInterval up to it and
	// drops back to PollInterval at the next record. A record below
	// WakeupBytes that comes after an idle spell waits at most this long.
	// 0, or at most PollInterval: no back-off.
	IdlePollInterval time.Duration `mapstructure:"idle_poll_interval"`
	// LockFile is held while the probe runs, so that a second probe on the
	// node fails to start instead of reporting every connection twice.
	// Empty turns the check off.
	LockFile string `mapstructure:"lock_file"`
	// BackupProgram attaches a second program on the tracepoint that takes
	// the state changes the kernel skips the probe for (when a softirq
	// interrupts it): no record lost, for about 1 µs more CPU per
	// connection. Off, those records are lost and counted in
	// tcpconn.probe.events.missed.
	BackupProgram bool `mapstructure:"backup_program"`
	// TrackedSockets sizes the probe's table of established sockets, which
	// the report walk reads (every network namespace at once): a power of
	// two, 48 bytes a slot, room for about 70 % of it. Sockets beyond it
	// are counted in tcpconn.probe.sockets.untracked, and the walks run in
	// each namespace instead (more CPU per pod, nothing missed). A larger
	// table costs the probe more per connection.
	TrackedSockets int `mapstructure:"tracked_sockets"`
}

// NATConfig turns the conntrack lookup of translated Service
// destinations on or off and says where the translation happens.
type NATConfig struct {
	// Enabled looks up, once per connection to a Service's ClusterIP, the
	// backend the node translated it to (kube-proxy's DNAT), in the
	// conntrack table of NetNS. Needs CAP_NET_ADMIN there.
	Enabled bool `mapstructure:"enabled"`
	// NetNS is the network namespace whose conntrack table holds the
	// node's translations: "" is the collector's own (the host's with
	// hostNetwork); NetNSHost is the host's, found through the host's
	// PID namespace (hostPID in a pod); else a path (/run/netns/<name>).
	NetNS string `mapstructure:"netns"`
}

// NetNSHost is nat.netns's name for the node's own network namespace: the
// first readable of /proc/1/ns/net and /proc/2/ns/net (podnetns.HostNetNS).
// A path to PID 1's alone does not do: on some nodes PID 1 is a sandbox's
// process whose namespace even root cannot open.
const NetNSHost = "host"

// FilterConfig selects connections by the addresses of their two ends.
type FilterConfig = cidrfilter.Config

// LogsConfig chooses the access-log records.
type LogsConfig = accesslog.Config

// LogFilterConfig selects access-log records.
type LogFilterConfig = accesslog.FilterConfig

var _ confmap.Validator = (*Config)(nil)

// HistogramMetricsConfig switches each histogram of the otel profile
// (with histograms: true), set as metrics: {<name>: {enabled: false}}.
type HistogramMetricsConfig struct {
	ConnectionDuration HistogramMetricConfig // tcp.connection.duration
	RTT                HistogramMetricConfig // tcp.rtt
	HandshakeDuration  HistogramMetricConfig // system.network.tcp.handshake.duration
}

// HistogramMetricConfig switches one histogram.
type HistogramMetricConfig struct {
	Enabled bool `mapstructure:"enabled"`
}

// byName maps each histogram's metric name to its switch.
func (h *HistogramMetricsConfig) byName() map[string]*HistogramMetricConfig {
	return map[string]*HistogramMetricConfig{
		profile.HistogramConnectionDuration: &h.ConnectionDuration,
		profile.HistogramRTT:                &h.RTT,
		profile.HistogramHandshakeDuration:  &h.HandshakeDuration,
	}
}

// Unmarshal takes the histograms' switches out of metrics: (the generated
// MetricsConfig would refuse their names) and the rest as usual.
func (c *Config) Unmarshal(conf *confmap.Conf) error {
	raw := conf.ToStringMap()
	if m, ok := raw["metrics"].(map[string]any); ok {
		rest := make(map[string]any, len(m))
		for name, v := range m {
			dst, ok := c.HistogramMetrics.byName()[name]
			if !ok {
				rest[name] = v
				continue
			}
			sub, ok := v.(map[string]any)
			if !ok && v != nil {
				return fmt.Errorf("metrics::%s: want a map, got %T", name, v)
			}
			if err := confmap.NewFromStringMap(sub).Unmarshal(dst); err != nil {
				return fmt.Errorf("metrics::%s: %w", name, err)
			}
		}
		raw["metrics"] = rest
	}
	type plain Config // without this method: no recursion
	return confmap.NewFromStringMap(raw).Unmarshal((*plain)(c))
}

func createDefaultConfig() *Config {
	return &Config{
		FlushInterval:  5 * time.Second,
		ReportInterval: 10 * time.Second,
		AdoptExisting:  true,
		Profile:        ProfileOTel,
		Views:          ViewsConfig{Workload: true, Service: true},
		Temporality:    TemporalityCumulative,
		SeriesLimit:    20000,
		SeriesExpiry:   10 * time.Minute,
		Histograms:     true,
		Probe: ProbeConfig{
			AttachMode:       string(bpf.AttachAuto),
			RingBufferSize:   bpf.DefaultRingBufferBytes,
			TrackedSockets:   bpf.DefaultTrackedSockets,
			PollInterval:     bpf.DefaultPollInterval,
			IdlePollInterval: DefaultIdlePollInterval,
			LockFile:         DefaultLockFile,
			BackupProgram:    true,
		},
		Logs:                 accesslog.DefaultConfig(),
		Kubernetes:           kube.DefaultConfig(),
		NAT:                  NATConfig{Enabled: true},
		MetricsBuilderConfig: metadata.DefaultMetricsBuilderConfig(),
		HistogramMetrics: HistogramMetricsConfig{
			ConnectionDuration: HistogramMetricConfig{Enabled: true},
			RTT:                HistogramMetricConfig{Enabled: true},
			HandshakeDuration:  HistogramMetricConfig{Enabled: true},
		},
	}
}

// Validate reports every invalid field, each by its YAML name.
func (c *Config) Validate() error {
	var errs []error
	if c.FlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("flush_interval: must be positive, got %v", c.FlushInterval))
	}
	if c.ReportInterval < 0 || (c.ReportInterval > 0 && c.ReportInterval < 100*time.Millisecond) {
		errs = append(errs, fmt.Errorf("report_interval: must be 0 (off) or at least 100ms, got %v", c.ReportInterval))
	}
	if !slices.Contains(profile.Names, c.Profile) {
		errs = append(errs, fmt.Errorf("profile: must be %s, got %q", oneOf(profile.Names), c.Profile))
	}
	if c.Temporality != TemporalityCumulative && c.Temporality != TemporalityDelta {
		errs = append(errs, fmt.Errorf("temporality: must be cumulative or delta, got %q", c.Temporality))
	}
	if !c.Views.Workload && !c.Views.Service && c.Profile != ProfileIstio {
		errs = append(errs, errors.New("views: at least one of workload and service must be on"))
	}
	if c.SeriesLimit < 1 {
		errs = append(errs, fmt.Errorf("series_limit: must be positive, got %d", c.SeriesLimit))
	}
	if c.SeriesExpiry < 0 || (c.SeriesExpiry > 0 && c.SeriesExpiry < 2*c.FlushInterval) {
		errs = append(errs, fmt.Errorf("series_expiry: must be 0 (never) or at least twice flush_interval, got %v", c.SeriesExpiry))
	}
	switch bpf.AttachMode(c.Probe.AttachMode) {
	case bpf.AttachAuto, bpf.AttachTPBTF, bpf.AttachRawTP:
	default:
		errs = append(errs, fmt.Errorf("probe.attach_mode: must be auto, tp_btf or raw_tp, got %q", c.Probe.AttachMode))
	}
	if n := c.Probe.RingBufferSize; n < 4096 || n&(n-1) != 0 || n > 1<<30 {
		errs = append(errs, fmt.Errorf("probe.ring_buffer_size: must be a power of two between 4096 and 1073741824, got %d", n))
	}
	if n := c.Probe.TrackedSockets; n < 1024 || n&(n-1) != 0 || n > 1<<24 {
		errs = append(errs, fmt.Errorf("probe.tracked_sockets: must be a power of two between 1024 and 16777216, got %d", n))
	}
	if c.Probe.WakeupBytes < 0 || c.Probe.WakeupBytes > c.Probe.RingBufferSize {
		errs = append(errs, fmt.Errorf("probe.wakeup_bytes: must be at most probe.ring_buffer_size (0: an eighth of it), got %d", c.Probe.WakeupBytes))
	}
	if c.Probe.PollInterval < time.Millisecond || c.Probe.PollInterval > time.Minute {
		errs = append(errs, fmt.Errorf("probe.poll_interval: must be between 1ms and 1m, got %v", c.Probe.PollInterval))
	}
	if c.Probe.IdlePollInterval < 0 || c.Probe.IdlePollInterval > time.Minute {
		errs = append(errs, fmt.Errorf("probe.idle_poll_interval: must be between 0 (no back-off) and 1m, got %v", c.Probe.IdlePollInterval))
	}
	if err := c.Filter.Validate("filter."); err != nil {
		errs = append(errs, err)
	}
	if err := c.Logs.Validate("logs."); err != nil {
		errs = append(errs, err)
	}
	if err := c.Kubernetes.Validate("kubernetes."); err != nil {
		errs = append(errs, err)
	}
	if c.NAT.NetNS != "" && c.NAT.NetNS != NetNSHost && !filepath.IsAbs(c.NAT.NetNS) {
		errs = append(errs, fmt.Errorf("nat.netns: must be host (the node's own, with hostPID), an absolute path (e.g. /run/netns/node) or empty (the collector's own), got %q", c.NAT.NetNS))
	}
	return errors.Join(errs...)
}

// Profiles name the metric families a receiver emits.
const (
	ProfileOTel  = profile.OTel
	ProfileIstio = profile.Istio
	ProfileKmesh = profile.Kmesh
)

// DefaultIdlePollInterval is probe.idle_poll_interval's default.
const DefaultIdlePollInterval = time.Second

// DefaultLockFile is the node-wide lock of probe.lock_file.
const DefaultLockFile = "/run/otelcol-tcpconn.lock"

func (c *Config) probeOptions() bpf.Options {
	return bpf.Options{
		LockFile:        c.Probe.LockFile,
		NoBackup:        !c.Probe.BackupProgram,
		Mode:            bpf.AttachMode(c.Probe.AttachMode),
		RingBufferBytes: uint32(c.Probe.RingBufferSize),
		TrackedSockets:  uint32(c.Probe.TrackedSockets),
		WakeupBytes:     uint64(c.Probe.WakeupBytes),
		PollInterval:    c.Probe.PollInterval,
	}
}

// profileOptions says which profile the receiver emits, and what of it.
func (c *Config) profileOptions() profile.Options {
	return profile.Options{
		Name: c.Profile, Workload: c.Views.Workload, Service: c.Views.Service,
		Histograms: c.Histograms, Metrics: &c.MetricsBuilderConfig,
		HistogramEnabled: func(name string) bool {
			h, ok := c.HistogramMetrics.byName()[name]
			return ok && h.Enabled
		},
	}
}

func (c *Config) limits() aggregate.Limits {
	return aggregate.Limits{Series: c.SeriesLimit, Expiry: c.SeriesExpiry}
}

// oneOf lists choices as "a, b or c".
func oneOf(choices []string) string {
	if len(choices) < 2 {
		return strings.Join(choices, "")
	}
	return strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
}
